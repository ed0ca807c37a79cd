"""Side by side with the anchor: NNCF's quantize_with_accuracy_control against our --auto-fallback.

    pip install nncf   # benchmark-only: not a dependency of unet-export
    python benchmarks/nncf_compare.py RUN_DIR [--data DIR] [--max-drop 0.3]

NNCF quantizes the run's fp32 ONNX (unet_fp32.onnx) with the same calibration frames as our exporter and
the same held-out frames and metric (mIoU, our ``metrics.score``) for its accuracy control, with an absolute
drop budget in mIoU points. Then both results are scored the same way (ONNX Runtime and OpenVINO: mIoU drop,
pixel agreement with Keras, OpenVINO p50 latency) beside our `--auto-fallback` ONNX file when the run has one
(unet_int8_autofallback.onnx). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--data", default=None)
    parser.add_argument("--max-drop", type=float, default=0.3, help="mIoU points")
    parser.add_argument("--calibration-samples", type=int, default=256)
    args = parser.parse_args()
    try:
        import nncf
    except ImportError:
        sys.exit("error: this benchmark needs NNCF: pip install nncf")
    import numpy as np
    import onnx
    import onnxruntime as ort

    from exporter import metrics
    from exporter.bench.harness import time_calls
    from exporter.contracts.bench_json import Latency
    from exporter.export.api import ExportContext

    run = Path(args.run_dir)
    ctx = ExportContext.open(run / "model.keras", args.data, 48, log=print)
    val, reference = ctx.validation, ctx.reference_logits
    n_classes = ctx.n_classes
    calibration = ctx.calibration(args.calibration_samples)
    fp32 = onnx.load(run / "unet_fp32.onnx")
    input_name = fp32.graph.input[0].name

    def predict(model: onnx.ModelProto, images: np.ndarray) -> np.ndarray:
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return np.concatenate([session.run(None, {input_name: images[i:i + 8]})[0] for i in range(0, len(images), 8)])

    def validate(model: onnx.ModelProto, data) -> float:  # NNCF's validation_fn: higher is better
        images = np.concatenate(list(data))
        return metrics.score(val.masks, np.argmax(predict(model, images), -1), n_classes).miou

    reverted: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            message = record.getMessage()
            if "reverted" in message.lower() or "removed" in message.lower() or "quantizer" in message.lower():
                reverted.append(message)

    logging.getLogger("nncf").addHandler(Collect())
    started = time.perf_counter()
    quantized = nncf.quantize_with_accuracy_control(
        fp32, nncf.Dataset([frame[None] for frame in calibration.frames], lambda x: {input_name: x}),
        nncf.Dataset([val.images[i:i + 8] for i in range(0, len(val.images), 8)], lambda x: {input_name: x}),
        validation_fn=validate, max_drop=args.max_drop / 100, drop_type=nncf.DropType.ABSOLUTE,
        subset_size=args.calibration_samples)
    seconds = time.perf_counter() - started
    onnx.save(quantized, run / "unet_int8_nncf_ac.onnx")

    keras_miou = metrics.score(val.masks, np.argmax(reference, -1), n_classes).miou
    rows = []
    for name in ("unet_int8_nncf_ac.onnx", "unet_int8_autofallback.onnx", "unet_int8.onnx"):
        path = run / name
        if not path.is_file():
            continue
        model = onnx.load(path)
        out = np.argmax(predict(model, val.images), -1)
        import openvino as ov

        compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": os.cpu_count() or 1})
        ov_out = np.argmax(np.concatenate([compiled(val.images[i:i + 8])[0] for i in range(0, len(val.images), 8)]), -1)
        p50 = Latency.from_values(time_calls(lambda c=compiled: c(val.images[:1]), warmup=5, min_runs=50,
                                             min_seconds=2)).p50
        qdq = sum(1 for node in model.graph.node if node.op_type == "QuantizeLinear")
        rows.append([name, str(qdq),
                     f"{100 * (keras_miou - metrics.score(val.masks, out, n_classes).miou):.2f}",
                     f"{metrics.agreement(out, np.argmax(reference, -1)):.2%}",
                     f"{100 * (keras_miou - metrics.score(val.masks, ov_out, n_classes).miou):.2f}",
                     f"{metrics.agreement(ov_out, np.argmax(reference, -1)):.2%}", f"{p50:.2f}"])
    print(f"NNCF quantize_with_accuracy_control: {seconds:.0f} s, max drop {args.max_drop} mIoU points")
    for message in reverted[-8:]:
        print(f"  nncf: {message}")
    print("| file | QuantizeLinear nodes | ORT drop pt | ORT agreement | OpenVINO drop pt | OpenVINO agreement | "
          "OpenVINO p50 ms |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
