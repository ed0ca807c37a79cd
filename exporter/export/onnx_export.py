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
        proto = quantize_int8(proto, calibration, spec.float_head, spec.float_layers, model, spec.int8_scheme)
    set_metadata(proto, metadata or {})
    onnx.checker.check_model(proto)
    return proto


def excluded_nodes(proto, model, float_layers: tuple[str, ...], head: bool) -> list[str]:
    """ONNX node names (each conv and its Relu) of the Keras layers kept float, matched by graph order."""
    from exporter.export import layers as L

    if not float_layers and not head:
        return []
    layers = L.keras_layers(model)
    nodes = L.onnx_nodes(proto)
    if len(nodes) != len(layers):
        raise UserError(f"float layers: the ONNX graph's {len(nodes)} compute nodes do not line up with the "
                        f"Keras model's {len(layers)} layers")
    by_name = {layer.name: layer for layer in layers}
    unknown = [name for name in float_layers if name not in by_name or by_name[name].kind != "conv"]
    if unknown:
        raise UserError(f"float layers: {', '.join(unknown)} not a convolution of the model")
    positions = {by_name[name].index for name in float_layers}
    if head:
        positions.add(max(layer.index for layer in layers if layer.kind == "conv"))
    return [name for i in sorted(positions) for name in nodes[i]["nodes"]]


def quantize_int8(proto, calibration: CalibrationSet, float_head: bool = False, float_layers: tuple[str, ...] = (),
                  model=None, scheme: str = "u8s8"):
    """ONNX Runtime static quantization: QDQ, per-channel int8 weights, uint8 activations; the head and
    ``float_layers`` (Keras layer names; ``model`` is the Keras model they are matched in) left float."""
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
            activation_type=QuantType.QUInt8, weight_type=QuantType.QUInt8 if scheme == "u8u8" else QuantType.QInt8,
            reduce_range=scheme == "reduce-range",
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=excluded_nodes(onnx.load(pre), model, float_layers, float_head) if model is not None
            else [],
        )
        return onnx.load(dst)
