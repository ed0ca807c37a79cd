"""Issue #3's table: every export mode of a trained full-size model, with size, conversion time, drift.

Usage: python benchmarks/export_table.py RUN_DIR/model.keras DATA_DIR [OUT_DIR]
Each artifact is converted, written, validated in its runtime on held-out frames, and recorded.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from exporter.export.api import ExportContext, export_onnx, export_tflite  # noqa: E402

MODES = [
    ("tflite", "fp32", "float32", False), ("tflite", "fp16", "float32", False),
    ("tflite", "dynamic", "float32", False), ("tflite", "int8", "float32", False),
    ("tflite", "int8", "int8", False), ("tflite", "int8", "uint8", False),
    ("tflite", "int16x8", "float32", False), ("tflite", "fp32", "float32", True),
    ("tflite", "int8", "uint8", True),
    ("onnx", "fp32", None, False), ("onnx", "fp16", None, False), ("onnx", "int8", None, False),
]


def main() -> None:
    model, data = sys.argv[1], sys.argv[2]
    out_dir = Path(sys.argv[3]) if len(sys.argv) > 3 else Path(model).parent / "export_table"
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx = ExportContext(model, data, validation_samples=48, log=None)
    print("| artifact | size MB | convert s | validate s | agreement | mIoU | Keras mIoU | drop pt | max abs Δlogit |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for fmt, quantization, io, argmax in MODES:
        started = time.perf_counter()
        if fmt == "tflite":
            from exporter.export.api import tflite_name
            from exporter.export.modes import IOType, Quantization

            name = tflite_name(Quantization(quantization), IOType(io), argmax)
            result = export_tflite(model, out=out_dir / name, quantization=quantization, io=io, argmax=argmax,
                                   context=ctx)
        else:
            name = f"unet_{quantization}.onnx"
            result = export_onnx(model, out=out_dir / name, quantization=quantization, context=ctx)
        total = time.perf_counter() - started
        v = result.validation
        err = "-" if v.max_abs_error is None else f"{v.max_abs_error:.3f}"
        print(f"| {name} | {result.size_bytes / 1e6:.2f} | {result.conversion_seconds:.1f} | "
              f"{total - result.conversion_seconds:.1f} | {v.pixel_agreement:.4f} | {v.miou:.4f} | "
              f"{v.miou_reference:.4f} | {v.miou_drop_points:+.2f} | {err} |", flush=True)


if __name__ == "__main__":
    main()
