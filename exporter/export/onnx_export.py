"""Keras → ONNX: fp32 via tf2onnx (dynamic batch, named I/O, metadata), fp16, int8 QDQ static."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from exporter.contracts.export_spec import ExportSpec, FloatScope
from exporter.errors import UserError
from exporter.export.calibration import CalibrationSet
from exporter.parameters import Int8Scheme, Quantization
from exporter.stdio import silenced_python_output

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


def onnx_metadata(labels: list[str], description: str, scores: str = "logits") -> dict[str, str]:
    """Labels, input normalisation and layout, what the output holds, as ``metadata_props`` strings."""
    return {
        "labels": json.dumps(labels),
        "normalization": json.dumps({"mean": [0.0, 0.0, 0.0], "std": [255.0, 255.0, 255.0]}),
        "input_layout": "NHWC, RGB, float32 = byte / 255",
        "output": f"NHWC {'softmax probabilities' if scores == 'softmax' else 'logits'}, argmax over the last "
                  "axis gives the class id",
        "description": description,
        "producer": "unet-export",
    }


def convert_onnx(model, spec: ExportSpec | None = None, calibration: CalibrationSet | None = None,
                 metadata: dict[str, str] | None = None):
    """Convert to an ``onnx.ModelProto`` in the requested precision; checked by ``onnx.checker``.

    ``spec.float_scope`` (int8 only): the layers it names, and the classifier head, are left out of
    quantization and run in float.
    """
    import onnx
    import tensorflow as tf
    import tf2onnx

    spec = spec or ExportSpec("onnx")
    if spec.quantization is Quantization.INT8 and calibration is None:
        raise UserError("int8 ONNX quantization needs calibration frames (--data)")
    ranges: dict[str, tuple[float, float]] = {}
    if spec.qat:  # the fine-tuned float weights, quantized with the ranges the fine-tuning learned
        from exporter.export.qat import learned

        model, ranges = learned(model)
    height, width, channels = model.input_shape[1:]
    signature = [tf.TensorSpec((None, height, width, channels), tf.float32, name=INPUT_NAME)]
    with silenced_python_output():
        proto, _ = tf2onnx.convert.from_keras(model, input_signature=signature, opset=spec.onnx_opset)
    _rename_output(proto, OUTPUT_NAME)
    if spec.quantization is Quantization.FP16:
        from onnxconverter_common import float16

        proto = float16.convert_float_to_float16(proto, keep_io_types=True)
    elif spec.quantization is Quantization.INT8:
        proto = quantize_int8(proto, calibration, model, spec, ranges)
    set_metadata(proto, metadata or {})
    onnx.checker.check_model(proto)
    return proto


@contextlib.contextmanager
def working_dir(path: str | Path) -> Iterator[None]:
    """The process works in ``path`` while inside: ONNX Runtime's pre-processing writes its scratch files
    (sym_shape_infer_temp.onnx, external data) to the current folder, which must not be the user's."""
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def quantize_int8(proto, calibration: CalibrationSet, model, spec: ExportSpec,
                  ranges: dict[str, tuple[float, float]] | None = None):
    """ONNX Runtime static quantization: QDQ, per-channel weights, uint8 activations, the types of
    ``spec.int8_scheme``; the float scope (Keras layers of ``model``, matched by graph order) left float, and the
    int16 islands' tensors in uint16 (A16W8 QDQ, as Qualcomm's HTP takes it); ``ranges`` (Keras layer name →
    (min, max), a QAT model's learned ones) replace the calibrated range of those layers' output tensors."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from exporter.export import float_scope, onnx_graph
    from exporter.export.layers import keras_layers

    with tempfile.TemporaryDirectory(prefix="unet-export-onnx-") as tmp, working_dir(tmp):
        src, pre, dst = Path(tmp, "fp32.onnx"), Path(tmp, "pre.onnx"), Path(tmp, "int8.onnx")
        onnx.save(proto, src)
        try:
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=False)
        except Exception:  # ORT's symbolic shape inference gives up on some graphs (e.g. a Resize of a dynamic
            # batch: "Incomplete symbolic shape inference"); ONNX's own shape inference is enough for QDQ
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        excluded, overrides = [], {}
        if spec.float_scope or spec.int16_layers or ranges:
            layers, graph = keras_layers(model), onnx.load(pre)
        if spec.float_scope:
            excluded = onnx_graph.float_nodes(layers, graph, float_scope.named_positions(layers, spec.float_scope),
                                              spec.float_scope.head)
        if spec.int16_layers:  # 16-bit activations on the islands' tensors (ORT moves the file to opset 21)
            named = float_scope.named_positions(layers, FloatScope(spec.int16_layers), what="int16 layers")
            overrides = {tensor: [{"quant_type": QuantType.QUInt16}]
                         for tensor in onnx_graph.island_tensors(layers, graph, named)}
        if ranges:
            for layer, node in zip(layers, onnx_graph.aligned_nodes(layers, graph, "QAT ranges"), strict=True):
                if layer.name in ranges:
                    low, high = ranges[layer.name]
                    overrides[node["tensor"]] = [{"rmin": np.float32(low), "rmax": np.float32(high)}]
        quantize_static(
            str(pre), str(dst), calibration.onnx_reader(INPUT_NAME),
            quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
            weight_type=QuantType.QUInt8 if spec.int8_scheme is Int8Scheme.U8U8 else QuantType.QInt8,
            reduce_range=spec.int8_scheme is Int8Scheme.REDUCE_RANGE, calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=excluded, extra_options={"TensorQuantOverrides": overrides} if overrides else None,
        )
        return onnx.load(dst)
