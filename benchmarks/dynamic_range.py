"""Issue 22, item 5: why LiteRT runs the dynamic-range int8 file slower than fp32 here.

Usage: python benchmarks/dynamic_range.py RUN_DIR

Converts RUN_DIR/model.keras to fp32 and dynamic-range TFLite, each with the default dynamic batch and with the
batch fixed to 1, and times one frame in LiteRT (2 threads) with its default XNNPACK delegate and with the
builtin kernels only; prints the p50s as a Markdown table.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

import numpy as np  # noqa: E402

from exporter.bench.environment import describe  # noqa: E402
from exporter.contracts.export_spec import ExportSpec  # noqa: E402
from exporter.export.api import load_keras_model  # noqa: E402
from exporter.export.tflite_export import convert_tflite  # noqa: E402


def p50_ms(model_bytes: bytes, delegate: bool) -> float:
    """p50 ms of one frame."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = OpResolverType.AUTO if delegate else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interpreter = Interpreter(model_content=model_bytes, num_threads=2, experimental_op_resolver_type=resolver)
    inp = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(inp["index"], [1, *inp["shape"][1:]])
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], np.random.default_rng(0).random((1, *inp["shape"][1:]), np.float32))
    for _ in range(3):
        interpreter.invoke()
    samples = []
    while len(samples) < 20 or sum(samples) < 3000:
        started = time.perf_counter()
        interpreter.invoke()
        samples.append((time.perf_counter() - started) * 1000)
    return float(np.median(samples))


def main() -> None:
    model = load_keras_model(Path(sys.argv[1]) / "model.keras")
    env = describe()
    print(f"{env['cpu']}, flags {' '.join(env['cpu_flags'])}, {time.strftime('%Y-%m-%d')}")
    print("| file | batch | XNNPACK (default) p50 ms | builtin kernels only p50 ms |")
    print("|---|---|---:|---:|")
    for quantization in ("fp32", "dynamic"):
        for batch in (None, 1):
            model_bytes = convert_tflite(model, ExportSpec("tflite", quantization, static_batch=batch))
            print(f"| {quantization} | {batch or 'dynamic'} | {p50_ms(model_bytes, True):.1f} | "
                  f"{p50_ms(model_bytes, False):.1f} |")


if __name__ == "__main__":
    main()
