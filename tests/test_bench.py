"""unet-bench: harness statistics, packs (round trip and hostile ones), runs per runtime, device-light mode."""

import hashlib
import json
import os
import struct
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from exporter.bench.harness import time_calls
from exporter.cli.bench import cli as bench_cli
from exporter.cli.main import cli as main_cli
from exporter.contracts.bench_json import Latency
from exporter.contracts.pack import open_pack
from exporter.errors import UserError

FAST = ["--min-runs", "3", "--min-seconds", "0", "--warmup", "1"]


def test_latency_statistics_from_raw_samples():
    lat = Latency.from_values([4.0, 1.0, 3.0, 2.0, 100.0])
    assert (lat.p50, lat.min, lat.max, lat.n) == (3.0, 1.0, 100.0, 5)
    assert lat.mean == pytest.approx(22.0) and lat.p90 == pytest.approx(61.6)
    with pytest.raises(ValueError):
        Latency.from_values([])


def test_time_calls_honours_both_floors_and_times_only_the_call():
    now = [0.0]

    def clock():
        return now[0]

    def call():
        now[0] += 0.010  # each call takes 10 ms of fake time

    samples = time_calls(call, warmup=2, min_runs=5, min_seconds=0.2, clock=clock)
    assert len(samples) == 20 and all(s == pytest.approx(10.0) for s in samples)  # seconds floor wins
    assert len(time_calls(call, warmup=0, min_runs=50, min_seconds=0.0, clock=clock)) == 50  # runs floor wins


def test_pack_round_trip(exported_run, tmp_path):
    run_dir, pack = exported_run
    target = open_pack(pack, tmp_path / "x")
    names = sorted(a.name for a in target.artifacts)
    assert "model.keras" in names and "unet_fp32.onnx" in names and "unet_int8_uint8io_argmax.tflite" in names
    for artifact in target.artifacts:
        if artifact.name != "model.keras":
            assert artifact.file.read_bytes() == (run_dir / artifact.name).read_bytes()
    # model.keras travels without optimizer state: same weights, fewer bytes, its own sha256 in the entry
    import keras

    packed = next(a for a in target.artifacts if a.name == "model.keras")
    original = keras.saving.load_model(run_dir / "model.keras", compile=False)
    copy = keras.saving.load_model(packed.file, compile=False)
    assert all(np.array_equal(a, b) for a, b in zip(original.get_weights(), copy.get_weights(), strict=True))
    assert packed.file.stat().st_size < (run_dir / "model.keras").stat().st_size
    assert packed.entry.size_bytes == packed.file.stat().st_size
    from exporter.contracts.evaldata import load_eval

    evaldata = load_eval(target.eval_path)
    assert evaldata.images.shape == (6, 32, 32, 3) and evaldata.n_classes == 23
    assert len(target.labels) == 23


def test_pack_carries_only_the_artifacts_named(exported_run, tmp_path):
    run_dir, _ = exported_run
    result = CliRunner().invoke(main_cli, ["pack", str(run_dir), "--frames", "2", "--out", str(tmp_path / "one.pack"),
                                           "--with-keras", "--artifacts", "unet_fp32.onnx,model.keras"])
    assert result.exit_code == 0, result.output
    names = sorted(a.name for a in open_pack(tmp_path / "one.pack", tmp_path / "one").artifacts)
    assert names == ["model.keras", "unet_fp32.onnx"]
    result = CliRunner().invoke(main_cli, ["pack", str(run_dir), "--out", str(tmp_path / "bad.pack"),
                                           "--artifacts", "unet_fp33.onnx"])
    assert result.exit_code == 2 and "no artifact unet_fp33.onnx to pack (known: " in result.output
    assert result.output.count("\n") == 1 and not (tmp_path / "bad.pack").exists()


def _rewrite(pack, out, mutate):
    with zipfile.ZipFile(pack) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = mutate(info.filename, src.read(info))
            if data is not None:
                dst.writestr(info.filename, data)
    return out


def test_hostile_or_broken_packs_are_refused(exported_run, tmp_path):
    _, pack = exported_run
    truncated = tmp_path / "trunc.pack"
    truncated.write_bytes(pack.read_bytes()[: pack.stat().st_size // 2])
    tampered = _rewrite(pack, tmp_path / "tampered.pack",
                        lambda n, d: d[:-1] + bytes([d[-1] ^ 1]) if n.endswith(".onnx") else d)
    escape = tmp_path / "escape.pack"
    _rewrite(pack, escape, lambda n, d: d)
    with zipfile.ZipFile(escape, "a") as z:
        z.writestr("../evil.txt", "x")
    pickled = _rewrite(pack, tmp_path / "pickle.pack", lambda n, d: d)
    with zipfile.ZipFile(pickled, "a") as z:
        z.writestr("artifacts/payload.pkl", b"\x80\x04K\x01.")
    overwritten = tmp_path / "overwritten.pack"  # 16 bytes of a member overwritten: zlib.error, not a traceback
    data = bytearray(pack.read_bytes())
    with zipfile.ZipFile(pack) as z:
        info = z.getinfo("pack.json")  # a small deflated member: the damage breaks the stream itself
    name_length, extra_length = struct.unpack_from("<HH", data, info.header_offset + 26)
    start = info.header_offset + 30 + name_length + extra_length
    # 0xff where the stream begins: its first block header says block type 3, which does not exist (damage in the
    # middle of the stream fails the same way or as a bad CRC, depending on what the member holds)
    data[start:start + 16] = b"\xff" * 16
    overwritten.write_bytes(bytes(data))
    cases = {truncated: "truncated or corrupt", tampered: "does not match its sha256",
             escape: r"not allowed \(path escape", pickled: "disagree with pack.json",
             overwritten: r"corrupt pack \(error: Error -3 while decompressing"}
    for bad, problem in cases.items():
        with pytest.raises(UserError, match=problem):
            open_pack(bad, tmp_path / f"out-{bad.stem}")
        assert not (tmp_path / "evil.txt").exists()
        result = CliRunner().invoke(bench_cli, ["run", str(bad), *FAST])
        assert result.exit_code == 2 and str(bad) in result.output and result.output.count("\n") == 1


def _doctor_meta(pack, out, change):
    def mutate(name, data):
        if name != "pack.json":
            return data
        meta = json.loads(data)
        return json.dumps(change(meta))
    return _rewrite(pack, out, mutate)


def _escaping_artifact(meta):
    meta["artifacts"][0]["path"] = "/etc/passwd"
    return meta


def test_doctored_pack_json_or_eval_file_is_refused(exported_run, tmp_path):
    """A pack whose pack.json is edited by hand, or whose eval.npz is broken, never reaches a runtime."""
    import io

    _, pack = exported_run
    broken_eval = io.BytesIO()
    np.savez(broken_eval, images=np.zeros((2, 4, 4, 3), np.float32), labels=np.zeros((2, 4), np.uint8),
             reference_logits=np.zeros((2, 4, 4, 5), np.float16), reference_map=np.zeros((2, 4), np.uint8),
             stems=np.array(["a", "b"]))

    def with_eval(meta):
        digest = hashlib.sha256(broken_eval.getvalue()).hexdigest()
        meta["files"]["eval.npz"] = {"sha256": digest, "size_bytes": len(broken_eval.getvalue())}
        return meta

    cases = {
        _doctor_meta(pack, tmp_path / "list.pack", lambda meta: []): "not a unet-export pack",
        _doctor_meta(pack, tmp_path / "files.pack", lambda meta: {**meta, "files": ["x"]}): "no valid 'files'",
        _doctor_meta(pack, tmp_path / "abs.pack", _escaping_artifact): "not one of its members",
        _rewrite(pack, tmp_path / "eval.pack", lambda n, d: broken_eval.getvalue() if n == "eval.npz" else (
            json.dumps(with_eval(json.loads(d))).encode() if n == "pack.json" else d)): "eval.npz is not usable",
    }
    for bad, problem in cases.items():
        with pytest.raises(UserError, match=problem):
            open_pack(bad, tmp_path / f"out-{bad.stem}")
        result = CliRunner().invoke(bench_cli, ["run", str(bad), *FAST])
        assert result.exit_code == 2 and str(bad) in result.output and result.output.count("\n") == 1


def test_bench_run_covers_every_runtime_and_skips_gpu(exported_run, tmp_path):
    _, pack = exported_run
    out = tmp_path / "r.json"
    result = CliRunner().invoke(bench_cli, ["run", str(pack), "--devices", "cpu,gpu", "--batch-sizes", "1,2",
                                            "--threads", "1", "--json", str(out), "--csv", str(tmp_path / "r.csv"),
                                            "--markdown", str(tmp_path / "r.md"), "--plots", str(tmp_path / "p"),
                                            *FAST])
    assert result.exit_code == 0, result.output
    bench = json.loads(out.read_text())
    rows = bench["results"]
    ok = {(r["artifact"], r["runtime"]) for r in rows if r["status"] == "ok" and r["device"] == "cpu"}
    assert {("model.keras", "keras"), ("unet_fp32.tflite", "litert"), ("unet_fp32.tflite", "openvino"),
            ("unet_fp32.onnx", "onnxruntime"), ("unet_fp32.onnx", "openvino"),
            ("unet_int8_uint8io_argmax.tflite", "litert")} <= ok
    gpu = [r for r in rows if r["device"] == "gpu"]
    assert gpu and all(r["status"] == "skipped" and r["reason"] for r in gpu)
    for r in rows:
        if r["status"] != "ok":
            continue
        assert set(r["latency_ms"]) == {"p50", "p90", "p99", "mean", "std", "min", "max", "n"}
        assert r["latency_ms"]["n"] >= 3 and r["throughput_fps"] > 0 and r["peak_rss_mb"] > 10
        assert r["cold_start_ms"] > 0 and len(r["accuracy"]["per_class_iou"]) == 23
        if r["precision"] == "fp32":  # every fp32 runtime reproduces the Keras reference
            assert r["accuracy"]["agreement_vs_reference"] > 0.999, r
        if r["runtime"] == "openvino" and r["precision"] == "fp32":
            assert r["inference_precision"] in ("f32", "FP32", "float32")
    assert {r["batch_size"] for r in rows} == {1, 2}
    assert bench["environment"]["cores"] == os.cpu_count() and "runtime_versions" in bench["environment"]
    assert len((tmp_path / "r.csv").read_text().splitlines()) == len(rows) + 1
    assert sorted(p.suffix for p in (tmp_path / "p").iterdir()) == [".png"] * 3


def test_broken_artifact_is_a_failed_row_and_the_run_goes_on(exported_run, tmp_path):
    run_dir, _ = exported_run
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    data = (copy / "unet_fp32.tflite").read_bytes()
    (copy / "unet_fp32.tflite").write_bytes(data[: len(data) // 3])
    out = tmp_path / "r.json"
    result = CliRunner().invoke(bench_cli, ["run", str(copy), "--runtimes", "litert,onnxruntime", "--json",
                                            str(out), *FAST])
    assert result.exit_code == 0, result.output
    rows = {(r["artifact"], r["runtime"]): r for r in json.loads(out.read_text())["results"]}
    assert rows[("unet_fp32.tflite", "litert")]["status"] == "failed"
    assert rows[("unet_fp32.tflite", "litert")]["reason"]
    assert rows[("unet_fp32.onnx", "onnxruntime")]["status"] == "ok"


BLOCKER = textwrap.dedent("""
    import sys
    class _Block:
        blocked = {"tensorflow", "keras", "onnxruntime", "openvino", "PIL", "matplotlib", "tf2onnx", "onnx"}
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in self.blocked:
                raise ImportError(f"{name} is blocked (device-light test)")
            return None
    sys.meta_path.insert(0, _Block())
""")


def test_device_light_mode_runs_a_pack_with_only_numpy_click_and_litert(exported_run, tmp_path):
    _, pack = exported_run
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(BLOCKER)
    env = dict(os.environ, PYTHONPATH=f"{tmp_path / 'site'}{os.pathsep}{Path(__file__).parents[1]}")
    out = tmp_path / "light.json"
    code = "from exporter.cli.bench import cli; cli()"
    proc = subprocess.run([sys.executable, "-c", code, "run", str(pack), "--json", str(out), *FAST],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())["results"]
    status = {(r["artifact"], r["runtime"]): r["status"] for r in rows}
    assert status[("unet_fp32.tflite", "litert")] == "ok"
    assert status[("unet_int8_uint8io_argmax.tflite", "litert")] == "ok"
    # the blocked runtimes are skipped with a reason, not crashed
    assert status[("model.keras", "keras")] == "skipped" and status[("unet_fp32.onnx", "onnxruntime")] == "skipped"


DEVICE_SIDE = ("exporter.cli.bench", "exporter.bench", "exporter.runtimes", "exporter.contracts", "exporter.metrics",
               "exporter.drift", "exporter.fleet", "exporter.parameters", "exporter.stdio", "exporter.errors", "exporter.fileio", "exporter.classes", "exporter.text_table",
               "exporter.figures", "exporter.tflite_io")


def test_device_side_modules_do_not_import_frameworks_at_module_level():
    """Every module of the device side (docs/architecture.md), found by walking its packages, imports without
    TensorFlow or Keras and loads no runtime, image or plotting library."""
    code = textwrap.dedent(f"""
        import importlib, pkgutil, sys
        sys.modules['tensorflow'] = None
        sys.modules['keras'] = None
        names = []
        for name in {DEVICE_SIDE!r}:
            module = importlib.import_module(name)
            names.append(name)
            for info in pkgutil.walk_packages(getattr(module, '__path__', []), name + '.'):
                importlib.import_module(info.name)
                names.append(info.name)
        heavy = {{'onnxruntime', 'openvino', 'ai_edge_litert', 'PIL', 'matplotlib', 'tf2onnx', 'onnx'}} & set(sys.modules)
        print(len(names), sorted(heavy))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).parents[1])
    assert proc.returncode == 0, proc.stderr[-2000:]
    count, heavy = proc.stdout.strip().split(" ", 1)
    assert int(count) >= 25 and heavy == "[]"


def test_run_dir_without_eval_frames_says_what_to_do(tmp_path):
    result = CliRunner().invoke(bench_cli, ["run", str(tmp_path)])
    assert result.exit_code == 2 and "unet-export pack" in result.output


def test_compare_cli(tmp_path):
    def bench(label, p50):
        return {"environment": {"label": label}, "results": [{
            "artifact": "unet_fp32.tflite", "format": "tflite", "precision": "fp32", "runtime": "litert",
            "runtime_version": "2.3.0", "device": "cpu", "threads": 2, "batch_size": 1, "status": "ok",
            "reason": None, "size_bytes": 1000, "cold_start_ms": 1.0,
            "latency_ms": {"p50": p50, "p90": p50, "p99": p50, "mean": p50, "std": 0.0, "min": p50, "max": p50,
                           "n": 10}, "throughput_fps": 1000 / p50, "peak_rss_mb": 50.0,
            "accuracy": {"pixel_accuracy": 0.9, "miou": 0.6, "per_class_iou": [0.5], "agreement_vs_reference": 1.0,
                         "max_abs_logit_error": 0.0}}]}

    (tmp_path / "laptop.json").write_text(json.dumps(bench("laptop", 10.0)))
    (tmp_path / "pi4.json").write_text(json.dumps(bench("pi4", 40.0)))
    result = CliRunner().invoke(bench_cli, ["compare", str(tmp_path / "laptop.json"), str(tmp_path / "pi4.json")])
    assert result.exit_code == 0, result.output
    assert "laptop" in result.output and "pi4" in result.output and "4.00" in result.output
    bad = CliRunner().invoke(bench_cli, ["compare", str(tmp_path / "nope.json")])
    assert bad.exit_code == 2 and "nope.json" in bad.output


def test_eval_file_refuses_pickles(tmp_path):
    from exporter.contracts.evaldata import load_eval

    path = tmp_path / "eval.npz"
    np.savez(path, images=np.array([object()], dtype=object), labels=np.zeros(1), reference_logits=np.zeros(1),
             reference_map=np.zeros(1), stems=np.zeros(1))
    with pytest.raises(UserError, match="not a valid evaluation file"):
        load_eval(path)


def test_peak_rss_is_the_workers_own_not_its_parents():
    """A worker started by a big process (the pipeline holds GBs) must report its own memory."""
    code = textwrap.dedent("""
        import subprocess, sys
        import numpy as np
        ballast = np.ones(100_000_000)  # 800 MB resident in the parent
        ballast += 1
        child = "from exporter.bench.worker import peak_rss_mb; print(peak_rss_mb())"
        print(subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, check=True).stdout)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert 5 < float(out) < 400


def test_int8_dot_product_follows_cpuid_not_an_emulators_cpuinfo(monkeypatch):
    """The label the int8 bounds and bench environments rely on, for each CPU kind (CPUID faked: one machine)."""
    from exporter.bench import environment

    def cpu(features: dict, cpuinfo_flags: list[str]) -> str:
        monkeypatch.setattr(environment, "is_arm", lambda: False)  # CPUID's rules (Arm's: test_arm_cpu.py)
        monkeypatch.setattr(environment, "cpu_features", lambda: features)
        monkeypatch.setattr(environment, "_cpuinfo", lambda every_flag=False: ("cpu", cpuinfo_flags))
        return environment.int8_dot_product()

    zen4 = {"SSSE3": True, "AVX2": True, "AVX512F": True, "AVX512VNNI": True}
    zen3 = {"SSSE3": True, "AVX2": True}
    assert cpu(zen4, ["avx2", "avx512f", "avx512_vnni"]) == "vnni"
    assert cpu(zen3, ["avx2", "fma"]) == "vpmaddubsw"
    assert cpu(zen3, ["avx2", "avx512f", "avx_vnni"]) == "vpmaddubsw"  # qemu -cpu EPYC-Milan on a Zen 4 host
    assert cpu(zen3, ["avx2", "avx_vnni"]) == "vnni"  # AVX-VNNI without AVX-512 (numpy has no key for it)
    assert cpu({"ASIMD": True, "ASIMDDP": True}, ["asimd", "asimddp"]) == "dotprod"
    assert cpu({}, []) == "unknown"
    monkeypatch.undo()
    assert environment.describe()["int8_dot_product"] in ("vnni", "vpmaddubsw", "i8mm", "dotprod", "neon", "unknown")


def test_gate_exits_1_naming_the_rows_outside_the_budget(exported_run, tmp_path):
    _, pack = exported_run
    out = tmp_path / "gate.json"
    strict = CliRunner().invoke(bench_cli, ["run", str(pack), "--runtimes", "litert", "--min-agreement", "0.99999",
                                            "--max-miou-drop", "0", "--json", str(out), *FAST])
    assert strict.exit_code == 1, strict.output
    last = strict.output.strip().splitlines()[-1]
    assert last.startswith("check failed: ") and "rows outside the budget" in last
    assert "unet_int8_uint8io_argmax.tflite on litert/cpu" in last
    table = strict.output.split("check failed")[0]
    assert " budget " in table.splitlines()[[i for i, line in enumerate(table.splitlines())
                                             if line.startswith("artifact")][0]] + " "
    assert "OVER" in table
    assert json.loads(out.read_text())["results"]  # the reports are written before the gate fails
    loose = CliRunner().invoke(bench_cli, ["run", str(pack), "--runtimes", "litert", "--min-agreement", "0",
                                           "--max-miou-drop", "100", *FAST])
    assert loose.exit_code == 0, loose.output
    assert "every measured row is within the budget (mIoU drop ≤ 100 points, pixel agreement ≥ 0%" in loose.output


def test_plots_without_matplotlib_fail_before_measuring(exported_run, tmp_path, monkeypatch):
    _, pack = exported_run
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = CliRunner().invoke(bench_cli, ["run", str(pack), "--plots", str(tmp_path / "p"), *FAST])
    assert result.exit_code == 2 and "unet-export[plots]" in result.output
    assert "[1/" not in result.output and result.output.count("\n") == 1  # nothing measured, one line


def test_one_line_per_missing_runtime(exported_run, tmp_path):
    """A device with LiteRT only: one progress line per runtime not installed, none per artifact."""
    _, pack = exported_run
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(BLOCKER)
    env = dict(os.environ, PYTHONPATH=f"{tmp_path / 'site'}{os.pathsep}{Path(__file__).parents[1]}")
    code = "from exporter.cli.bench import cli; cli()"
    proc = subprocess.run([sys.executable, "-c", code, "run", str(pack), "--batch-sizes", "1,2", *FAST],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    for runtime, rows in (("keras", 2), ("onnxruntime", 2), ("openvino", 2 * 3)):
        said = [line for line in lines if line.startswith(f"{runtime}:") or line.startswith(f"skipped {runtime}/")]
        assert len(said) == 2, (runtime, said)  # the progress line and the table's line
        assert f"skipping its {rows} rows (pip install 'unet-export[" in said[0]
        assert said[1].startswith(f"skipped {runtime}/cpu ({rows} rows): ")
    assert not any("skipped" in line and line.startswith("[") for line in lines)
