"""Issue 21's table: every zoo model (tests/zoo.py) in every export mode, on every runtime present.

Usage: python benchmarks/zoo.py [OUT_DIR] [--models seed,mobile,...]
Each model is trained a few epochs on its block frames, exported in each mode (conversion time, size), validated
at export, then run in-process on LiteRT, ONNX Runtime and OpenVINO on the held-out frames: pixel agreement with
the Keras model and the mIoU drop in points, or why the runtime cannot run the file. Writes OUT_DIR/zoo.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from exporter import metrics  # noqa: E402
from exporter.bench.environment import describe  # noqa: E402
from exporter.drift import miou_drop_points  # noqa: E402
from exporter.export.api import DataOptions, ExportContext, read_labels  # noqa: E402
from exporter.runtimes import get_runtime, runtimes_for  # noqa: E402
from exporter.text_table import align  # noqa: E402
from zoo import IGNORE, MODES, ZOO, mode_spec, train, write_data  # noqa: E402


def on_runtime(name: str, path: Path, ctx: ExportContext) -> str:
    """'agreement / drop' of the file on one runtime, in-process, or why it did not run."""
    runtime = get_runtime(name)
    try:
        runtime.load(path, threads=2)
        outputs = runtime.predict(ctx.validation.images)
    except Exception as exc:  # a row that cannot run says why
        return f"✗ {str(exc).splitlines()[0][:60]}"
    ignore = ctx.fmt.ignore_index
    scores = metrics.score(ctx.validation.masks, outputs, ctx.n_classes, reference=ctx.reference_logits,
                           ignore_index=ignore)
    keras = metrics.score(ctx.validation.masks, ctx.reference_logits, ctx.n_classes, ignore_index=ignore)
    return f"{scores.agreement_vs_reference:.2%} / {miou_drop_points(scores.miou, keras.miou):+.2f}"


def one_model(name: str, out: Path) -> list[list[str]]:
    zm = ZOO[name]
    data = write_data(zm, out / f"data_{name}")
    (out / name).mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    model = train(zm, data, out / name / f"{name}.keras")
    print(f"{name}: trained in {time.perf_counter() - started:.0f}s", flush=True)
    options = DataOptions() if zm.carla else DataOptions("images", "labels", IGNORE,
                                                         tuple(read_labels(data / "labels.txt")))
    ctx = ExportContext.open(model, data, validation_samples=16, log=None, data=options)
    rows = []
    for mode in MODES:
        spec = mode_spec(mode)
        try:
            result = ctx.export(spec, calibration_samples=32)
        except Exception as exc:  # the table says which mode a model cannot take
            rows.append([name, mode, "-", "-", f"✗ {str(exc)[:80]}", "", "", ""])
            continue
        cells = {r: on_runtime(r, result.path, ctx) for r in runtimes_for(spec.format.value)}
        rows.append([name, mode, f"{result.entry.conversion_seconds:.1f}", f"{result.entry.size_bytes / 1e3:.0f}",
                     f"{result.validation.pixel_agreement:.2%} / {result.validation.miou_drop_points:+.2f}",
                     cells.get("litert", ""), cells.get("onnxruntime", ""), cells.get("openvino", "")])
        print("  ", " | ".join(rows[-1][1:]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", nargs="?", default="artifacts/zoo")
    parser.add_argument("--models", default=",".join(ZOO))
    args = parser.parse_args()
    out = Path(args.out)
    rows = [row for name in args.models.split(",") for row in one_model(name, out)]
    env = describe()
    headers = ("model", "mode", "export s", "size KB", "at export", "LiteRT", "ONNX Runtime", "OpenVINO")
    text = "\n".join([f"Machine: {env['cpu']}, {env['cores']} cores, flags {' '.join(env['cpu_flags'])}, int8 dot "
                      f"product {env['int8_dot_product']}; {env['timestamp']}; runtimes "
                      + ", ".join(f"{k} {v}" for k, v in env["runtime_versions"].items()), "",
                      "Cells: pixel agreement with the Keras model / mIoU drop in points, on 16 held-out frames.", "",
                      align(headers, rows, {"export s", "size KB"}, markdown=True)])
    (out / "zoo.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
