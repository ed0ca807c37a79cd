"""GPU routes: each runtime's real GPU path, and the reason it gives where it cannot run.

Two halves:

* Where no GPU is present (CI, this machine): every route must say why in one line, naming what is missing
  and how to get it — real runtimes, real files, no mocks. The Keras JAX backend also runs the same .keras
  file on the CPU in a bench worker and must match the TensorFlow reference.
* ``gpu`` tests (skipped without a GPU, with the reason): on a GPU machine every route present must run the
  pack's artifacts on the GPU and stay close to the fp32 CPU reference. They need no TensorFlow: the pack is
  ``$UNET_GPU_PACK`` (benchmarks/gpu/ sends the demo model's) or, where TensorFlow is installed, the tiny
  model's. They print one line per route, which ``benchmarks/gpu/run.sh`` keeps.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import gpu_present
from exporter.runtimes import RuntimeUnavailable, get_runtime, runtimes_for
from exporter.runtimes.base import predict_in_batches

no_gpu_here = pytest.mark.skipif(gpu_present() is None, reason="this machine has a GPU: the routes run instead")


# -- where there is no GPU: one clear line per route ------------------------------------------------------

@pytest.fixture(scope="module")
def packed(exported_run):
    """The tiny run's pack, opened: artifacts (model.keras included) and evaluation frames."""
    from exporter.contracts.pack import open_pack

    _, pack = exported_run
    return open_pack(pack, Path(pack).parent / "opened")


def _file(target, name: str) -> Path:
    return next(a.file for a in target.artifacts if a.name == name)


REFUSAL = """
import sys
from exporter.runtimes import RuntimeUnavailable, get_runtime
try:
    get_runtime(sys.argv[1]).load(sys.argv[2], device="gpu")
except RuntimeUnavailable as exc:
    print("REFUSED", exc)
else:
    print("RAN")
"""


def _gpu_refusal(runtime: str, path: Path, **env: str) -> str:
    """The one-line reason ``runtime`` gives for not loading ``path`` on the GPU, in a fresh process as the
    bench worker would (LiteRT's failed GPU start can crash the exit of a process that also holds TensorFlow;
    the worker has only the one runtime)."""
    proc = subprocess.run([sys.executable, "-c", REFUSAL, runtime, str(path)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, **env})
    said = [line for line in proc.stdout.splitlines() if line.startswith(("REFUSED ", "RAN"))]
    assert said and said[0].startswith("REFUSED "), proc.stdout[-1000:] + proc.stderr[-2000:]
    message = said[0].removeprefix("REFUSED ")
    assert message.startswith("no GPU: ") and len(message) < 400, message
    return message


@no_gpu_here
def test_litert_gpu_route_says_what_is_missing(packed, monkeypatch):
    monkeypatch.delenv("UNET_LITERT_GPU_DELEGATE", raising=False)
    message = _gpu_refusal("litert", _file(packed, "unet_fp32.tflite"))
    # without libvulkan.so.1: the loader is named with its package; with it (no driver): WebGPU found no adapter
    assert "LiteRT's GPU accelerator" in message and "Vulkan" in message, message
    assert ("libvulkan1" in message) or ("could not start" in message), message


@no_gpu_here
def test_litert_classic_delegate_is_used_when_the_user_names_one(packed, tmp_path):
    message = _gpu_refusal("litert", _file(packed, "unet_fp32.tflite"),
                           UNET_LITERT_GPU_DELEGATE=str(tmp_path / "libmy_gpu_delegate.so"))
    assert "libmy_gpu_delegate.so" in message and "UNET_LITERT_GPU_DELEGATE" in message, message


@no_gpu_here
def test_onnxruntime_gpu_route_names_the_providers_and_the_packages(packed):
    message = _gpu_refusal("onnxruntime", _file(packed, "unet_fp32.onnx"))
    assert "CPUExecutionProvider" in message and "onnxruntime-gpu" in message, message
    assert "onnxruntime-ep-webgpu" in message, message
    if _installed("onnxruntime_ep_webgpu"):
        assert "WebGPU plugin found no GPU adapter" in message, message


@no_gpu_here
def test_openvino_gpu_route_names_the_devices_it_sees(packed):
    message = _gpu_refusal("openvino", _file(packed, "unet_fp32.onnx"))
    assert "OpenVINO sees CPU" in message and "Intel GPUs" in message, message


@no_gpu_here
def test_keras_tensorflow_gpu_route_points_to_the_jax_backend(packed):
    message = _gpu_refusal("keras", _file(packed, "model.keras"))
    assert "TensorFlow" in message and "KERAS_BACKEND=jax" in message, message


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


@pytest.mark.skipif(not _installed("jax"), reason="jax is not installed (pip install jax)")
def test_keras_jax_backend_runs_the_same_file_on_the_cpu_and_says_so(packed, tmp_path):
    """The light route: KERAS_BACKEND=jax, no TensorFlow in the worker, same .keras file, same answers."""
    from exporter.bench.worker import Timing, WorkerJob
    from exporter.contracts.bench_json import BenchRow

    rows = {}
    for device in ("cpu", "gpu"):
        identity = BenchRow(artifact="model.keras", status="failed", format="keras", precision="fp32",
                            runtime="keras", device=device)
        job = WorkerJob(str(_file(packed, "model.keras")), identity, (1,), Timing(1, 2, 0.0), str(packed.eval_path))
        env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
        # the worker must not need TensorFlow at all: block it
        code = ("import sys; sys.modules['tensorflow'] = None; from exporter.bench import worker; worker.main()")
        proc = subprocess.run([sys.executable, "-c", code], input=json.dumps(job.to_dict()),
                              capture_output=True, text=True, timeout=300, env=env)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("UNET_BENCH_RESULT ")]
        assert lines, proc.stderr[-2000:]
        rows[device] = json.loads(lines[0].split(" ", 1)[1])
    cpu, gpu = rows["cpu"], rows["gpu"]
    assert cpu["status"] == "ok", cpu
    assert "jax" in cpu["runtime_version"] and cpu["providers"][0].startswith("jax cpu"), cpu
    assert cpu["accuracy"]["agreement_vs_reference"] > 0.999
    assert gpu["status"] == "skipped" and "JAX" in gpu["reason"] and "jax[cuda13]" in gpu["reason"], gpu


def test_bench_tables_say_what_ran_on_the_gpu():
    from exporter.bench.tables import device_lines, to_markdown
    from exporter.contracts.bench_json import BenchResult

    def row(artifact, runtime, **extra):
        return {"artifact": artifact, "runtime": runtime, "device": "gpu", "status": "ok", "batch_size": 1,
                "format": "onnx", **extra}

    bench = BenchResult.from_dict({"environment": {"gpus": ["NVIDIA H100 80GB HBM3"]}, "results": [
        row("a.onnx", "onnxruntime", providers=["WebGpuExecutionProvider", "CPUExecutionProvider"],
            inference_precision="as exported", fully_accelerated=False, cpu_fallback_nodes=3),
        row("a.onnx", "onnxruntime", providers=["WebGpuExecutionProvider"], cpu_fallback_nodes=3, batch_size=4),
        row("b.tflite", "litert", providers=["gpu (LiteRT CompiledModel, WebGPU)"],
            inference_precision="fp16 (LiteRT GPU default)", fully_accelerated=True),
        {**row("c.tflite", "litert"), "device": "cpu"},
    ]})
    assert device_lines(list(bench.rows)) == [
        "a.onnx on onnxruntime: WebGpuExecutionProvider, CPUExecutionProvider; precision as exported; "
        "3 nodes fell back to the CPU",
        "b.tflite on litert: gpu (LiteRT CompiledModel, WebGPU); precision fp16 (LiteRT GPU default); "
        "fully accelerated",
    ]
    text = to_markdown(bench)
    assert "## What ran on the GPU" in text and "- GPU: NVIDIA H100 80GB HBM3" in text
    again = BenchResult.from_dict(bench.to_dict())
    assert again.rows[0].cpu_fallback_nodes == 3 and again.rows[2].fully_accelerated is True


# -- on a GPU machine: every route present runs -----------------------------------------------------------

ROUTES = ("keras", "litert", "onnxruntime", "openvino")


@pytest.fixture(scope="module")
def gpu_target(tmp_path_factory, request):
    """The pack the GPU tests run: $UNET_GPU_PACK, else the tiny model's (needs TensorFlow to build)."""
    from exporter.contracts.pack import open_pack

    path = os.environ.get("UNET_GPU_PACK")
    if not path:
        if not _installed("tensorflow"):
            pytest.skip("no $UNET_GPU_PACK and no TensorFlow to build the tiny model's pack")
        _, path = request.getfixturevalue("exported_run")
    return open_pack(path, tmp_path_factory.mktemp("gpu-pack"))


@pytest.mark.gpu
@pytest.mark.parametrize("runtime", ROUTES)
def test_gpu_route_runs_the_pack_close_to_the_cpu_reference(gpu_target, runtime):
    from exporter import metrics
    from exporter.contracts.evaldata import load_eval

    missing = get_runtime(runtime).available()
    if missing:
        pytest.skip(f"{runtime}: {missing}")
    evaldata = load_eval(gpu_target.eval_path)
    artifacts = [a for a in gpu_target.artifacts if a.entry.format in get_runtime(runtime).formats
                 and runtime in runtimes_for(a.entry.format)]
    if not artifacts:
        pytest.skip(f"{runtime}: the pack has no artifact it reads")
    ran, refused = [], []
    for artifact in artifacts:
        adapter = get_runtime(runtime)
        try:
            adapter.load(artifact.file, device="gpu")
        except RuntimeUnavailable as exc:
            refused.append(f"{artifact.name}: {exc}")
            continue
        outputs = predict_in_batches(adapter.predict, evaldata.images)
        agreement = metrics.agreement(metrics.to_class_map(outputs), evaldata.reference_map)
        info = adapter.info()
        print(f"GPU ROUTE {runtime} {artifact.name}: agreement {agreement:.4%} vs the CPU reference; "
              f"providers {info['providers']}, precision {info['precision']}, "
              f"fully accelerated {info.get('fully_accelerated')}, CPU fallback nodes {info.get('cpu_fallback_nodes')}")
        assert info["device"] == "gpu" and info["providers"]
        floor = 0.98 if artifact.entry.precision in ("fp32", "fp16") else 0.90
        assert agreement >= floor, f"{artifact.name} on {runtime}/gpu: agreement {agreement:.4f} < {floor}"
        ran.append(artifact.name)
    if not ran:
        pytest.skip(f"{runtime}: {refused[0]}")
    assert len(np.unique([*ran])) == len(ran)
