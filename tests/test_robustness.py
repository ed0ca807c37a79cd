"""Many writers and real kills: the manifest under concurrent updates, and commands killed with SIGKILL.

A process killed with SIGKILL runs no handler, no ``finally``, no atexit: whatever it leaves is what a
power cut or the OOM killer leaves. Afterwards the final name must hold nothing or a complete file, the
manifest must parse, and the next run of the same command must succeed and clean up the dead run's temp files.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from exporter.contracts.manifest import ArtifactEntry, Manifest
from exporter.contracts.pack import open_pack
from exporter.contracts.rundir import RunDir
from exporter.fileio import sha256_file

pytestmark = pytest.mark.slow  # starts TensorFlow in subprocesses
CLI = "from exporter.cli.main import cli; cli()"
BENCH = "from exporter.cli.bench import cli; cli()"
ENV = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(Path(__file__).parents[1]))


def _copy_run(tiny_run: Path, folder: Path) -> Path:
    run = folder / "run"
    run.mkdir(parents=True)
    for name in ("model.keras", "config.json"):
        shutil.copyfile(tiny_run / name, run / name)
    return run


def _record_many(run_dir: str, worker: int, count: int) -> None:
    run = RunDir(run_dir)
    for i in range(count):
        run.record(ArtifactEntry(path=f"w{worker}_{i}.tflite", format="tflite", precision="fp32", size_bytes=i,
                                 sha256=f"{worker:032x}{i:032x}"))


def test_manifest_updates_from_many_processes_lose_nothing(tmp_path):
    """Read-change-write from four processes at once: every entry ends up in the manifest."""
    context = multiprocessing.get_context("spawn")  # no TensorFlow state copied into the children
    workers = [context.Process(target=_record_many, args=(str(tmp_path), w, 40)) for w in range(4)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(120)
        assert p.exitcode == 0
    paths = {a.path for a in Manifest.load(tmp_path / "manifest.json").artifacts}
    assert paths == {f"w{w}_{i}.tflite" for w in range(4) for i in range(40)}


def test_exports_running_at_once_into_one_folder_are_all_recorded(tiny_run, blocks_dir, tmp_path):
    run = _copy_run(tiny_run, tmp_path)
    procs = [subprocess.Popen([sys.executable, "-c", CLI, "tflite", "--model", str(run / "model.keras"), "--data",
                               str(blocks_dir), "--out", str(run / f"a{i}.tflite"), "--validation-samples", "4"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV) for i in range(3)]
    for proc in procs:
        assert proc.wait(300) == 0, proc.stderr.read()[-2000:]
    entries = {a.path: a for a in RunDir(run).manifest().artifacts}
    assert set(entries) == {"a0.tflite", "a1.tflite", "a2.tflite"}
    assert all(sha256_file(run / name) == entry.sha256 for name, entry in entries.items())


def _kill_when(args: list[str], cwd: Path, line: str | None, delay: float) -> int:
    """Start a command in its own session; SIGKILL the whole session once ``line`` appeared, plus ``delay``."""
    proc = subprocess.Popen([sys.executable, "-c", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=ENV, cwd=cwd, start_new_session=True)
    try:
        if line is not None:
            for text in proc.stdout:
                if line in text:
                    break
        time.sleep(delay)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(60)
    return proc.pid


def _temp_files_of(folder: Path, name: str, pid: int) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.startswith(f".{name}.{pid}.")]


@pytest.mark.parametrize("line,delay", [("calibration:", 0.5), ("validated", 0.0), ("validated", 0.05)])
def test_int8_export_killed_leaves_nothing_or_a_recorded_artifact(tiny_run, blocks_dir, tmp_path, line, delay):
    run = _copy_run(tiny_run, tmp_path)
    out = run / "unet_int8.tflite"
    export = [CLI, "tflite", "--model", str(run / "model.keras"), "--data", str(blocks_dir), "--quantize",
              "--calibration-samples", "20", "--validation-samples", "4"]
    pid = _kill_when(export, tmp_path, line, delay)
    manifest = RunDir(run).manifest()  # parses (a UserError would fail the test)
    if out.exists():  # killed after the rename: a whole file, already recorded
        assert any(a.path == out.name and a.sha256 == sha256_file(out) for a in manifest.artifacts)
    left = _temp_files_of(run, out.name, pid)
    rerun = subprocess.run([sys.executable, "-c", *export], capture_output=True, text=True, env=ENV, timeout=300)
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]
    assert not any(p.exists() for p in left) and not _temp_files_of(run, out.name, pid)
    entry = next(a for a in RunDir(run).manifest().artifacts if a.path == out.name)
    assert entry.sha256 == sha256_file(out)


def test_pack_killed_mid_write_leaves_nothing_or_a_whole_pack(exported_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(exported_run[0], run_dir)  # pack rewrites RUN/eval.npz: not the shared run's
    out = tmp_path / "killed.pack"
    pack = [CLI, "pack", str(run_dir), "--out", str(out), "--frames", "4"]
    pids = [_kill_when(pack, tmp_path, None, delay) for delay in (3.0, 4.5)]
    if out.exists():
        open_pack(out, tmp_path / "check")  # whole and verified, or refused with a UserError
    rerun = subprocess.run([sys.executable, "-c", *pack], capture_output=True, text=True, env=ENV, timeout=300)
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]
    assert zipfile.is_zipfile(out) and not any(_temp_files_of(tmp_path, out.name, pid) for pid in pids)


def test_bench_json_killed_mid_run_leaves_nothing_or_a_whole_file(exported_run, tmp_path):
    _, pack = exported_run
    out = tmp_path / "bench.json"
    bench = [BENCH, "run", str(pack), "--json", str(out), "--runtimes", "litert", "--warmup", "0", "--min-runs", "1",
             "--min-seconds", "0"]
    _kill_when(bench, tmp_path, "[1/", 0.2)
    assert not out.exists()  # the JSON is written only when every row is measured
    rerun = subprocess.run([sys.executable, "-c", *bench], capture_output=True, text=True, env=ENV, timeout=300)
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]
    assert json.loads(out.read_text())["results"] and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
