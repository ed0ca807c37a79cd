"""Does unet-bench's timing loop add overhead? Its p50 vs a plain loop of the same call, same process.

Usage: python benchmarks/harness_overhead.py [MODEL.tflite MODEL.onnx]   (default: converts the full-size
seed U-Net, untrained: latency does not depend on the weights). Rounds are interleaved so drift on a
shared machine hits both sides alike. Prints a Markdown table.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from exporter.bench.harness import Latency, time_calls  # noqa: E402
from exporter.runtimes import get_runtime  # noqa: E402

RUNS, ROUNDS = 40, 5


def convert_defaults(folder: Path) -> tuple[Path, Path]:
    from exporter.export.onnx_export import convert_onnx
    from exporter.export.tflite_export import convert_tflite
    from exporter.model import build_unet

    model = build_unet()
    tflite, onnx_path = folder / "unet_fp32.tflite", folder / "unet_fp32.onnx"
    tflite.write_bytes(convert_tflite(model))
    import onnx

    onnx.save(convert_onnx(model), onnx_path)
    return tflite, onnx_path


def plain_loop(call, runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        call()
        samples.append((time.perf_counter() - t0) * 1000)
    return samples


def main() -> None:
    folder = Path(tempfile.mkdtemp())
    paths = sys.argv[1:3] if len(sys.argv) >= 3 else convert_defaults(folder)
    frame = np.random.default_rng(0).random((1, 96, 128, 3), dtype=np.float32)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; {RUNS} runs x {ROUNDS} "
          "interleaved rounds each\n")
    print("| runtime | plain loop p50 ms | harness p50 ms | harness / plain |")
    print("|---|---:|---:|---:|")
    for runtime_name, path in (("litert", paths[0]), ("onnxruntime", paths[1])):
        runtime = get_runtime(runtime_name)
        runtime.load(path, threads=os.cpu_count())
        call = lambda runtime=runtime: runtime.predict(frame)  # noqa: E731
        for _ in range(5):
            call()
        plain, harness = [], []
        for _ in range(ROUNDS):
            plain += plain_loop(call, RUNS)
            harness += time_calls(call, warmup=0, min_runs=RUNS, min_seconds=0.0)
        p_plain, p_harness = Latency.from_values(plain).p50, Latency.from_values(harness).p50
        print(f"| {runtime_name} | {p_plain:.2f} | {p_harness:.2f} | {p_harness / p_plain:.3f} |")


if __name__ == "__main__":
    main()
