"""make test-arm64: the device side on emulated Arm CPUs (Cortex-A72: NEON only, like a Pi 4; Neoverse-N1: the
dot-product cores of a Pi 5 and of phones; Neoverse-V1: I8MM, BF16 and SVE), under qemu-user from the distribution,
in a Debian 12 arm64 root with the device side installed from a wheel of this checkout (benchmarks/arm/root.sh).

On each CPU: the device-side tests (no TensorFlow there) and a bench of a tiny pack holding fp32, full-int8 and
int8 class-map TFLite files and fp32 and int8 ONNX files, on LiteRT, ONNX Runtime and OpenVINO. Every row must
run, name the CPU and its int8 dot product, say it was emulated (no latency in its tables), and give the
agreement the same files give natively on this x86 machine. ~15 min on 2 cores; skipped unless UNET_ARM64=1.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOT = Path(os.environ.get("ARM64_ROOT", REPO / "artifacts/arm64/root"))
IN_ROOT = REPO / "benchmarks/arm/in_root.sh"
pytestmark = pytest.mark.skipif(not os.environ.get("UNET_ARM64"),
                                reason="make test-arm64 runs these (an arm64 root under qemu-user, ~15 min)")

CPUS = {"cortex-a72": "Cortex-A72/neon", "neoverse-n1": "Neoverse-N1/dotprod", "neoverse-v1": "Neoverse-V1/i8mm"}
DEVICE_TESTS = ["tests/test_arm_cpu.py", "tests/test_bench_report.py", "tests/test_drift.py", "tests/test_fileio.py",
                "tests/test_runtimes.py", "tests/test_bench.py", "tests/test_export_spec.py",
                "tests/test_cli_messages.py"]
BENCH = ["--threads", "2", "--warmup", "1", "--min-runs", "2", "--min-seconds", "0", "--timeout", "1800"]
# The same file, the same kernels' arithmetic: fp32 within rounding; int8 rows may differ where a runtime picks
# another kernel for the CPU (the figures go to RESULTS.md). A row this far off is a wrong answer.
MAX_AGREEMENT_GAP = 0.02


def in_root(cpu: str, *command: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    return subprocess.run([str(IN_ROOT), cpu, *command], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def arm_pack(tiny_run: Path, blocks_dir, tmp_path_factory) -> dict:
    """A tiny pack (fp32, int8 float-in, int8 uint8-in class map TFLite; fp32 and int8 ONNX) copied into the root,
    and its bench on this machine."""
    if not (ROOT / ".complete").exists():
        pytest.fail(f"no arm64 root at {ROOT}: make test-arm64 builds it (benchmarks/arm/root.sh)")
    from exporter.contracts.export_spec import ExportSpec
    from exporter.export.api import ExportContext
    from exporter.pack_builder import PackContents, build_pack

    run = tmp_path_factory.mktemp("arm") / "run"
    run.mkdir()
    for name in ("model.keras", "config.json"):
        shutil.copyfile(tiny_run / name, run / name)
    ctx = ExportContext.open(run / "model.keras", blocks_dir, validation_samples=8, log=None)
    for spec, name in ((ExportSpec("tflite"), "unet_fp32.tflite"),
                       (ExportSpec("tflite", "int8"), "unet_int8.tflite"),
                       (ExportSpec("tflite", "int8", io="uint8", argmax=True), "unet_int8_uint8io_argmax.tflite"),
                       (ExportSpec("onnx"), "unet_fp32.onnx"),
                       (ExportSpec("onnx", "int8"), "unet_int8.onnx")):
        ctx.export(spec, run / name, calibration_samples=20)
    pack = run.parent / "tiny.pack"
    build_pack(run, blocks_dir, pack, PackContents(frames=6), context=ctx)
    inside = ROOT / "tmp/arm64-test"
    shutil.rmtree(inside, ignore_errors=True)
    inside.mkdir(parents=True)
    shutil.copyfile(pack, inside / "tiny.pack")
    shutil.copytree(REPO / "tests", inside / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copyfile(REPO / "pyproject.toml", inside / "pyproject.toml")
    native = run.parent / "x86.json"
    done = subprocess.run([str(REPO / ".venv/bin/unet-bench"), "run", str(pack), "--json", str(native), *BENCH,
                           "--runtimes", "litert,onnxruntime,openvino"], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return {"inside": inside, "native": json.loads(native.read_text())}


def _agreements(bench: dict) -> dict[tuple[str, str], float]:
    return {(r["artifact"], r["runtime"]): r["accuracy"]["agreement_vs_reference"]
            for r in bench["results"] if r["status"] == "ok"}


@pytest.mark.parametrize("cpu", CPUS)
def test_device_side_tests_pass_on_an_emulated(cpu, arm_pack):
    done = in_root(cpu, "/bin/sh", "-c", "cd /tmp/arm64-test && env UNET_EXPECT_CPU=" + CPUS[cpu]
                   + " UNET_DEVICE_SIDE=1 python -m pytest -q -rA -p no:cacheprovider -m 'not slow' "
                   + " ".join(DEVICE_TESTS))
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "PASSED tests/test_arm_cpu.py::test_the_emulated_arm_cpu_is_named_as_qemu_runs_it" in done.stdout


@pytest.mark.parametrize("cpu", CPUS)
def test_bench_runs_every_row_on_an_emulated(cpu, arm_pack):
    report = f"/tmp/arm64-test/{cpu}"
    done = in_root(cpu, "unet-bench", "run", "/tmp/arm64-test/tiny.pack", "--label", cpu, "--json", report + ".json",
                   "--markdown", report + ".md", *BENCH)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    bench = json.loads((ROOT / report.lstrip("/")).with_suffix(".json").read_text())
    env = bench["environment"]
    assert f"{env['cpu']}/{env['int8_dot_product']}" == CPUS[cpu] and env["machine"] == "aarch64"
    assert env["emulated"] is True and "avx512f" not in env["cpu_flags"]
    rows = {(r["artifact"], r["runtime"]): r for r in bench["results"] if r["runtime"] != "keras"}
    assert {r["status"] for r in rows.values()} == {"ok"}, {k: r["reason"] for k, r in rows.items() if r["status"] != "ok"}
    assert {runtime for _, runtime in rows} == {"litert", "onnxruntime", "openvino"}
    native, here = _agreements(arm_pack["native"]), _agreements(bench)
    assert set(here) == set(native)
    gaps = {key: here[key] - native[key] for key in native}
    assert max(abs(g) for g in gaps.values()) <= MAX_AGREEMENT_GAP, gaps
    for (artifact, _), agreement in here.items():
        if "fp32" in artifact:
            assert agreement >= 0.999, (artifact, agreement)
    markdown = (ROOT / report.lstrip("/")).with_suffix(".md").read_text()
    assert "p50 ms" not in markdown and "- emulated: user-mode emulation" in markdown
    assert "unet_int8.onnx" in done.stdout and "p50 ms" not in done.stdout
    lines = [f"{cpu}: " + ", ".join(f"{a}/{r} {here[(a, r)]:.4%} ({gaps[(a, r)]:+.4%})" for a, r in sorted(here))]
    (REPO / "artifacts/arm64").mkdir(parents=True, exist_ok=True)
    with open(REPO / "artifacts/arm64/test-arm64.txt", "a") as fh:
        fh.write("\n".join(lines) + "\n")
