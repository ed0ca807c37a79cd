"""Issue #3's table: every export mode of a trained full-size model, with size, conversion time, drift.

Usage: python benchmarks/export_table.py RUN_DIR/model.keras DATA_DIR [OUT_DIR]
Each artifact is converted, written, validated in its runtime on held-out frames, and recorded.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from exporter.contracts.export_spec import HEAD, ExportSpec  # noqa: E402
from exporter.export.api import ExportContext  # noqa: E402

MODES = [
    ExportSpec("tflite", "fp32"), ExportSpec("tflite", "fp16"), ExportSpec("tflite", "dynamic"),
    ExportSpec("tflite", "int8"), ExportSpec("tflite", "int8", io="int8"), ExportSpec("tflite", "int8", io="uint8"),
    ExportSpec("tflite", "int8", float_scope=HEAD), ExportSpec("tflite", "int8", io="uint8", float_scope=HEAD),
    ExportSpec("tflite", "int16x8"), ExportSpec("tflite", "fp32", argmax=True),
    ExportSpec("tflite", "int8", io="uint8", argmax=True), ExportSpec("tflite", "int8", io="uint8", argmax=True, float_scope=HEAD),
    ExportSpec("onnx", "fp32"), ExportSpec("onnx", "fp16"), ExportSpec("onnx", "int8"),
    ExportSpec("onnx", "int8", float_scope=HEAD),
]


def main() -> None:
    model, data = sys.argv[1], sys.argv[2]
    out_dir = Path(sys.argv[3]) if len(sys.argv) > 3 else Path(model).parent / "export_table"
    out_dir.mkdir(parents=True, exist_ok=True)
    # Work on a copy of the run (model + config), so this table's artifacts land in out_dir's own manifest.
    for name in ("model.keras", "config.json"):
        if (Path(model).parent / name).exists():
            shutil.copyfile(Path(model).parent / name, out_dir / name)
    model = out_dir / "model.keras"
    ctx = ExportContext.open(model, data, validation_samples=60, log=None)
    print("| artifact | size MB | convert s | validate s | agreement | mIoU | Keras mIoU | drop pt | max abs Δlogit |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for spec in MODES:
        started = time.perf_counter()
        name = spec.file_name
        result = ctx.export(spec, out_dir / name)
        total = time.perf_counter() - started
        v = result.validation
        err = "-" if v.max_abs_error is None else f"{v.max_abs_error:.3f}"
        print(f"| {name} | {result.entry.size_bytes / 1e6:.2f} | {result.entry.conversion_seconds:.1f} | "
              f"{total - result.entry.conversion_seconds:.1f} | {v.pixel_agreement:.4f} | {v.miou:.4f} | "
              f"{v.miou_reference:.4f} | {v.miou_drop_points:+.2f} | {err} |", flush=True)


if __name__ == "__main__":
    main()
