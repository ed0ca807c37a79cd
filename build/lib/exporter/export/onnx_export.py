"""Keras → ONNX: fp32 via tf2onnx (dynamic batch, named I/O, metadata), fp16, int8 QDQ static."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from exporter.errors import UserError
from exporter.export.calibration import CalibrationSet
from exporter.export.modes import ExportSpec, Quantization
from exporter.fileio import quiet

DEFAULT_OPSET = 18
INPUT_NAME = "image"
OUTPUT_NAME = "logits"


def _rename_output(model, new_name: str) -> None:
    """Rename the graph's single output tensor everywhere it appears."""
    old = model.graph.output[0].name
    if old == new_name:
        return
    for node in model.graph.node:
        node.output[:] = [new_name if o == old else o for o in node.output]
        node.input[:] = [new_name if i == old else i for i in node.input]
    model.graph.output[0].name = new_name


def set_metadata(model, metadata: dict[str, str]) -> None:
    """Replace ``metadata_props`` with ``metadata`` (string values)."""
    del model.metadata_props[:]
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def onnx_metadata(labels: list[str], description: str) -> dict[str, str]:
    """Labels, input normalisation and layout, as ``metadata_props`` strings."""
    return {
        "labels": json.dumps(labels),
        "normalization": json.dumps({"mean": [0.0, 0.0, 0.0], "std": [255.0, 255.0, 255.0]}),
        "input_layout": "NHWC, RGB, float32 = byte / 255",
        "output": "NHWC logits, argmax over the last axis gives the class id",
        "description": description,
        "producer": "unet-export",
    }


def convert_onnx(model, spec: ExportSpec | None = None, calibration: CalibrationSet | None = None,
                 metadata: dict[str, str] | None = None):
    """Convert to an ``onnx.ModelProto`` in the requested precision; checked by ``onnx.checker``.

    ``spec.float_head`` (int8 only): the final 1×1 classifier conv is left out of quantization and runs in float.
    """
    import onnx
    import tensorflow as tf
    import tf2onnx

    spec = spec or ExportSpec("onnx")
    quantization, opset = spec.quantization, spec.opset or DEFAULT_OPSET
    if quantization is Quantization.INT8 and calibration is None:
        raise UserError("int8 ONNX quantization needs calibration frames (--data)")
    height, width, channels = model.input_shape[1:]
    signature = [tf.TensorSpec((None, height, width, channels), tf.float32, name=INPUT_NAME)]
    with quiet():
        proto, _ = tf2onnx.convert.from_keras(model, input_signature=signature, opset=opset)
    _rename_output(proto, OUTPUT_NAME)
    if quantization is Quantization.FP16:
        from onnxconverter_common import float16

        proto = float16.convert_float_to_float16(proto, keep_io_types=True)
    elif quantization is Quantization.INT8:
        proto = quantize_int8(proto, calibration, spec.float_head)
    set_metadata(proto, metadata or {})
    onnx.checker.check_model(proto)
    return proto


def head_conv(proto) -> str:
    """Name of the graph's last Conv node: the 1×1 classifier head (tf2onnx keeps nodes in topological order)."""
    convs = [node.name for node in proto.graph.node if node.op_type == "Conv"]
    if not convs:
        raise UserError("--float-head: the model has no convolution to keep in float")
    return convs[-1]


def quantize_int8(proto, calibration: CalibrationSet, float_head: bool = False):
    """ONNX Runtime static quantization: QDQ, per-channel int8 weights, uint8 activations."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="unet-export-onnx-") as tmp:
        src, pre, dst = Path(tmp, "fp32.onnx"), Path(tmp, "pre.onnx"), Path(tmp, "int8.onnx")
        onnx.save(proto, src)
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=False)
        quantize_static(
            str(pre), str(dst), calibration.onnx_reader(INPUT_NAME),
            quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=[head_conv(onnx.load(pre))] if float_head else [],
        )
        return onnx.load(dst)
