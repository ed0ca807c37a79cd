"""Does unet-bench add overhead? Its p50 (harness loop around the runtime adapter's ``predict``) vs a plain
loop around the bare runtime call (LiteRT set_tensor/invoke/get_tensor, ORT session.run), same process.

The difference is everything unet-bench puts around the runtime: its timing loop and the adapter's input
checks, quantization and output decoding. Usage: python benchmarks/harness_overhead.py [MODEL.tflite MODEL.onnx]
(default: converts the full-size seed U-Net, untrained: latency does not depend on the weights). Rounds are
interleaved so drift on a shared machine hits both sides alike. Prints a Markdown table.
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

from exporter.bench.harness import time_calls  # noqa: E402
from exporter.contracts.bench_json import Latency  # noqa: E402
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


def bare_call(runtime_name: str, path, frame: np.ndarray, threads: int):
    """The runtime's own call, nothing around it."""
    if runtime_name == "litert":
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=str(path), num_threads=threads)
        interpreter.allocate_tensors()
        if interpreter.get_input_details()[0]["dtype"] != np.float32:
            raise SystemExit(f"{path}: give a float-input model (the bare call feeds float frames)")
        inp, out = interpreter.get_input_details()[0]["index"], interpreter.get_output_details()[0]["index"]

        def call():
            interpreter.set_tensor(inp, frame)
            interpreter.invoke()
            return interpreter.get_tensor(out)

        return call
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda: session.run(None, {name: frame})


def main() -> None:
    folder = Path(tempfile.mkdtemp())
    paths = sys.argv[1:3] if len(sys.argv) >= 3 else convert_defaults(folder)
    frame = np.random.default_rng(0).random((1, 96, 128, 3), dtype=np.float32)
    threads = os.cpu_count()
    print(f"machine: {platform.processor() or platform.machine()}, {threads} cores; {RUNS} runs x {ROUNDS} "
          "interleaved rounds each\n")
    print("| runtime | bare runtime call p50 ms | unet-bench harness + adapter p50 ms | harness / bare |")
    print("|---|---:|---:|---:|")
    for runtime_name, path in (("litert", paths[0]), ("onnxruntime", paths[1])):
        runtime = get_runtime(runtime_name)
        runtime.load(path, threads=threads)
        adapter_call = lambda runtime=runtime: runtime.predict(frame)  # noqa: E731
        bare = bare_call(runtime_name, path, frame, threads)
        assert np.allclose(np.asarray(bare()[0] if runtime_name == "onnxruntime" else bare()), adapter_call(),
                           atol=1e-4)
        for _ in range(5):
            bare()
            adapter_call()
        plain, harness = [], []
        for _ in range(ROUNDS):
            plain += plain_loop(bare, RUNS)
            harness += time_calls(adapter_call, warmup=0, min_runs=RUNS, min_seconds=0.0)
        p_plain, p_harness = Latency.from_values(plain).p50, Latency.from_values(harness).p50
        print(f"| {runtime_name} | {p_plain:.2f} | {p_harness:.2f} | {p_harness / p_plain:.3f} |")


if __name__ == "__main__":
    main()
