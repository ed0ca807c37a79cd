"""The device side installs where targets are: a wheel, a fresh venv of another Python, one runtime, a pack.

Jetson (JetPack 6) runs CPython 3.10, Raspberry Pi OS 3.11 on aarch64, Ubuntu 24.04 3.12. The test builds
the wheel, installs ``unet-export[litert]`` into a fresh venv of 3.10 and of 3.12 (from pyenv, when this
machine has them) with nothing else, and benches a pack there; another asks pip to resolve every device
extra for aarch64 without installing anything. Both need the package index (CI has it).
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # builds a wheel and fills venvs from the index
ROOT = Path(__file__).parents[1]
AARCH64_TAGS = ["manylinux_2_35_aarch64", "manylinux_2_28_aarch64", "manylinux_2_27_aarch64",
                "manylinux_2_17_aarch64", "manylinux2014_aarch64"]  # glibc 2.35: JetPack 6; Pi OS: 2.36


def find_python(version: str) -> str | None:
    """An interpreter of ``version`` (e.g. "3.10") that really runs: on PATH, or under pyenv."""
    candidates = [f"python{version}", *sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{version}.*/bin/"
                                                                           f"python{version}")))]
    for candidate in candidates:
        try:
            done = subprocess.run([candidate, "-c", "import sys, venv; print(sys.version_info[:2])"],
                                  capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0 and done.stdout.strip() == str(tuple(int(v) for v in version.split("."))):
            return candidate
    return None


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    from exporter.fleet import build_wheel

    out = tmp_path_factory.mktemp("wheel")
    built = build_wheel(out)
    again = build_wheel(tmp_path_factory.mktemp("again"))
    assert built.read_bytes() == again.read_bytes()  # the same files, the same wheel: devices reuse their venv
    return built


@pytest.mark.parametrize("version", ["3.10", "3.12"])
def test_device_side_installs_and_benches_on_another_python(wheel, exported_run, tmp_path, version):
    python = find_python(version)
    if python is None:
        pytest.skip(f"no CPython {version} on this machine (pyenv install {version} to run this check)")
    _, pack = exported_run
    venv = tmp_path / "venv"
    subprocess.run([python, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    done = subprocess.run([*pip, f"{wheel}[litert]"], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    listed = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "list", "--format", "json"],
                            capture_output=True, text=True, check=True)
    installed = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert not installed & {"tensorflow", "keras", "onnxruntime", "openvino", "matplotlib", "pillow"}
    out = tmp_path / "device.json"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    bench = subprocess.run([str(venv / "bin" / "unet-bench"), "run", str(pack), "--json", str(out), "--min-runs",
                            "2", "--min-seconds", "0", "--warmup", "1"], capture_output=True, text=True, env=env,
                           cwd=tmp_path, timeout=600)
    assert bench.returncode == 0, bench.stdout[-2000:] + bench.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["environment"]["python"].startswith(version + ".")
    rows = {(r["artifact"], r["runtime"]): r for r in result["results"]}
    assert rows[("unet_fp32.tflite", "litert")]["status"] == "ok"
    assert rows[("unet_fp32.tflite", "litert")]["accuracy"]["agreement_vs_reference"] > 0.999
    assert rows[("model.keras", "keras")]["status"] == "skipped"  # no TensorFlow on the device


@pytest.mark.parametrize("extra", ["litert", "onnxruntime", "openvino", "webgpu"])
def test_every_device_extra_resolves_for_aarch64(wheel, tmp_path, extra):
    """pip resolves the device side with each runtime for a 64-bit Arm board (wheels only, nothing installed)."""
    platforms = [arg for tag in AARCH64_TAGS for arg in ("--platform", tag)]
    report = tmp_path / "report.json"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed",
                           "--only-binary=:all:", "--python-version", "3.11", *platforms, "--target",
                           str(tmp_path / "target"), "--report", str(report), f"{wheel}[{extra}]"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    names = {item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]}
    assert {"numpy", "click", {"litert": "ai-edge-litert", "webgpu": "onnxruntime-ep-webgpu"}.get(extra, extra)} <= names
    assert "tensorflow" not in names
