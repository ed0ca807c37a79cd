"""Issue 22's table: integer-only int8 recipes for one trained run, side by side.

Usage: python benchmarks/int8_recipes.py RUN_DIR [--out FILE.md] [--rows ptq,eq,int16,eq+int16,qat,floathead]

Every row is a TFLite file with uint8 camera bytes in and a class map out (in-graph argmax), batch 1:
- ptq: TensorFlow's full-integer int8 (today's --quantize --io uint8 --argmax), integer-only;
- eq: the same after cross-layer equalization and bias correction (--equalize);
- int16: --integer-only --auto-fallback with the budget below: int16 islands chosen tensor by tensor;
- eq+int16: both;
- qat: unet-export qat (2 epochs of quantization-aware fine-tuning, the file from the learned ranges);
- floathead: today's mobile file (float classifier head: not integer-only), for reference.
Each: time to make (conversion, validation and any search), size, mIoU drop and agreement against Keras on the
run's held-out frames, float ops in the file, p50 of one frame on LiteRT and OpenVINO (2 threads, in-process,
one after the other). Writes the Markdown table and the machine to FILE.md (default RUN_DIR/int8_recipes.md).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from exporter.bench.environment import describe  # noqa: E402
from exporter.bench.harness import time_calls  # noqa: E402
from exporter.contracts.bench_json import Latency  # noqa: E402
from exporter.contracts.export_spec import HEAD, ExportSpec  # noqa: E402
from exporter.drift import Budget  # noqa: E402
from exporter.export import tflite_graph  # noqa: E402
from exporter.export.api import ExportContext  # noqa: E402
from exporter.export.fallback import FallbackOptions, export_with_fallback  # noqa: E402
from exporter.export.qat import QATOptions, fine_tune  # noqa: E402
from exporter.runtimes import get_runtime  # noqa: E402
from exporter.text_table import align  # noqa: E402

BUDGET = Budget(0.3, 0.99)  # the goal: within 0.3 mIoU points and 99% agreement
MOBILE = ExportSpec("tflite", "int8", io="uint8", argmax=True, static_batch=1)
ROWS = {
    "ptq": replace(MOBILE, integer_only=True),
    "eq": replace(MOBILE, integer_only=True, equalize=True),
    "int16": replace(MOBILE, integer_only=True),
    "eq+int16": replace(MOBILE, integer_only=True, equalize=True),
    "qat": replace(MOBILE, integer_only=True, qat=True),
    "floathead": replace(MOBILE, float_scope=HEAD),
}


def p50_ms(runtime_name: str, path: Path, ctx: ExportContext) -> str:
    runtime = get_runtime(runtime_name)
    try:
        runtime.load(path, "cpu", 2)
        frame = ctx.validation.images[:1]
        return f"{Latency.from_values(time_calls(lambda: runtime.predict(frame), warmup=5, min_runs=50, min_seconds=3)).p50:.2f}"
    except Exception as exc:  # a runtime that cannot take the file says why
        return f"✗ {str(exc).splitlines()[0][:50]}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run", type=Path)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--max-layers", type=int, default=4)
    parser.add_argument("--qat-epochs", type=int, default=2)
    args = parser.parse_args()
    ctx = ExportContext.open(args.run / "model.keras", log=print)
    out_dir = args.run / "int8_recipes"
    out_dir.mkdir(exist_ok=True)
    rows = []
    for name in args.rows.split(","):
        spec = ROWS[name]
        path = out_dir / f"{name}.tflite"
        started = time.perf_counter()
        try:
            if name == "qat":
                ctx.qat_model = fine_tune(ctx, QATOptions(epochs=args.qat_epochs))
                result = ctx.export(spec, path)
            elif name.endswith("int16"):
                result = export_with_fallback(ctx, spec, path, BUDGET,
                                              options=FallbackOptions(max_float_layers=args.max_layers))
            else:
                result = ctx.export(spec, path)
        except Exception as exc:  # the row says why (a search that gave up is a finding)
            rows.append([name, "✗", "", "", "", "", "", "", str(exc).splitlines()[0][:120]])
            print(name, "failed:", exc)
            continue
        made = time.perf_counter() - started
        entry = result.entry
        floats = tflite_graph.float_ops(path.read_bytes())
        islands = ", ".join(entry.spec.int16_layers) or "-"
        rows.append([name, f"{made:.0f}", f"{entry.size_bytes / 1e6:.2f}", f"{entry.validation.miou_drop_points:.2f}",
                     f"{entry.validation.pixel_agreement:.4f}", str(len(floats)), p50_ms("litert", path, ctx),
                     p50_ms("openvino", path, ctx), islands])
        print(rows[-1])
    env = describe()
    table = align(("row", "made s", "MB", "mIoU drop pt", "agreement", "float ops", "LiteRT p50 ms",
                   "OpenVINO p50 ms", "int16 islands / note"), rows,
                  {"made s", "MB", "mIoU drop pt", "agreement", "float ops", "LiteRT p50 ms", "OpenVINO p50 ms"},
                  markdown=True)
    text = (f"# Integer-only int8 recipes: {args.run}\n\n{ctx.validation.images.shape[0]} held-out frames; budget "
            f"{BUDGET.describe()}; {time.strftime('%Y-%m-%d')}; {env['cpu']}, {env['cores']} cores, flags "
            f"{' '.join(env['cpu_flags'])}, int8 dot product {env['int8_dot_product']}\n\n{table}\n")
    target = args.out or args.run / "int8_recipes.md"
    target.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
