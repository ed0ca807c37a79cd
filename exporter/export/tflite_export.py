"""Keras → TFLite in every mode (fp32, fp16, dynamic, full int8, int16x8), optional in-graph argmax."""

from __future__ import annotations

import warnings

from exporter.errors import UserError
from exporter.export.calibration import CalibrationSet
from exporter.export.modes import ExportSpec, IOType, Quantization
from exporter.fileio import quiet

DYNAMIC_NOTE = ("dynamic-range int8 keeps float activations: on CPU it runs several times slower than fp32 in "
                "LiteRT, and it does not load in tflite-runtime 2.14 (TRANSPOSE_CONV weights); prefer full int8")
INT16X8_NOTE = "int16x8 has no optimised CPU kernels (far slower than fp32 in LiteRT); use it for accuracy"


def with_argmax(model):
    """A new model: ``model`` followed by an in-graph argmax to an N×H×W uint8 class map (input untouched).

    ``tf.math.argmax`` in a layer lowers to the builtin ARG_MAX; ``keras.ops.argmax`` would add a
    BitwiseAnd Flex op that LiteRT cannot run.
    """
    import keras
    import tensorflow as tf

    class ClassMap(keras.layers.Layer):
        def call(self, logits):
            return tf.cast(tf.math.argmax(logits, axis=-1, output_type=tf.int32), tf.uint8)

        def compute_output_shape(self, input_shape):
            return input_shape[:-1]

    return keras.Model(model.inputs, ClassMap(name="class_map")(model.outputs[0]), name=f"{model.name}_argmax")


def with_static_batch(model, batch: int):
    """The same model (same layers, names and weights) whose input has a fixed batch, so that every tensor of
    the converted graph has a static shape (what GPU delegates need; see ``ExportSpec.static_batch``)."""
    import keras

    inputs = keras.Input(batch_shape=(batch, *model.input_shape[1:]), dtype=model.inputs[0].dtype)
    clone = keras.models.clone_model(model, input_tensors=inputs)
    clone.set_weights(model.get_weights())
    return clone


def convert_tflite(model, spec: ExportSpec | None = None, calibration: CalibrationSet | None = None) -> bytes:
    """Convert with ``TFLiteConverter.from_keras_model`` (weights frozen); returns the flatbuffer (no metadata).

    ``spec.float_head`` (int8 only): every layer int8 except the final 1×1 classifier conv, which runs in float;
    ``spec.float_layers``: named Keras convolutions kept float as well.
    """
    import tensorflow as tf

    spec = spec or ExportSpec("tflite")
    quantization, io = spec.quantization, spec.io
    if quantization.needs_calibration and calibration is None:
        raise UserError(f"{quantization.value} quantization needs calibration frames (--data)")
    source = with_static_batch(model, spec.static_batch) if spec.static_batch else model
    source = with_argmax(source) if spec.argmax else source
    if spec.selective:
        return _convert_int8_selective(source, io, calibration, spec.float_layers, spec.float_head)
    converter = tf.lite.TFLiteConverter.from_keras_model(source)
    if quantization is not Quantization.FP32:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization is Quantization.FP16:
        converter.target_spec.supported_types = [tf.float16]
    elif quantization is Quantization.INT8:
        converter.representative_dataset = calibration.tflite_representative_dataset()
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if io is not IOType.FLOAT32:
            converter.inference_input_type = tf.uint8 if io is IOType.UINT8 else tf.int8
            if not spec.argmax:  # a class map is already an integer output
                converter.inference_output_type = converter.inference_input_type
    elif quantization is Quantization.INT16X8:
        converter.representative_dataset = calibration.tflite_representative_dataset()
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    with quiet(), warnings.catch_warnings():
        # TensorFlow warns when an integer input type is set, although the representative data set gives
        # the statistics it asks for; the warning only confuses.
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected")
        return converter.convert()


def _op_outputs(model_bytes: bytes) -> list[tuple[str, list[tuple[str, str]]]]:
    """(op name, [(output tensor name, dtype name), …]) for each op of a .tflite, in execution order."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model_bytes)
    tensor = interpreter._get_tensor_details
    return [(op["op_name"], [(tensor(t, 0)["name"], tensor(t, 0)["dtype"].__name__) for t in op["outputs"]])
            for op in interpreter._get_ops_details()]


def _float_tensors(source, model_bytes: bytes, float_layers: tuple[str, ...], head: bool) -> tuple[list[str], set[int]]:
    """Output tensors (of the float .tflite) to keep float, and the compute-op positions they belong to.

    ``float_layers`` are Keras layer names, matched to ops by graph order (``exporter.export.layers``); the
    head (the last convolution) takes every op after it along (an argmax)."""
    from exporter.export import layers as L

    layers = L.keras_layers(source)
    by_name = {layer.name: layer for layer in layers}
    unknown = [name for name in float_layers if name not in by_name or by_name[name].kind != "conv"]
    if unknown:
        convs = [layer.name for layer in layers if layer.kind == "conv"]
        raise UserError(f"float layers: {', '.join(unknown)} not a convolution of the model "
                        f"(one of {', '.join(convs[:6])}, ...)")
    ops = L.match_tflite(layers, model_bytes, "the float conversion")
    positions = {by_name[name].index for name in float_layers}
    if head:
        positions.add(max(layer.index for layer in layers if layer.kind == "conv"))
    if not positions:
        raise UserError("--float-head: the model has no convolution to keep in float")
    tensors = [ops[i]["tensor"] for i in sorted(positions)]
    last = max(layer.index for layer in layers if layer.kind == "conv")
    if last in positions:  # ops after the head (an in-graph argmax) stay with it
        all_ops = _op_outputs(model_bytes)
        head_at = [i for i, (_, outputs) in enumerate(all_ops) if outputs and outputs[0][0] == ops[last]["tensor"]]
        if head_at:
            tensors += [t for _, outputs in all_ops[head_at[0] + 1:] for t, _ in outputs]
    return tensors, positions


def _check_selective(source, model_bytes: bytes, positions: set[int]) -> None:
    """The chosen convolutions must compute in float and every other one in int8, or the file is not what it says."""
    from exporter.export import layers as L

    layers = L.keras_layers(source)
    ops = L.match_tflite(layers, model_bytes, "the selectively quantized model")
    wrong = [layer.name for layer, op in zip(layers, ops, strict=True) if layer.kind in ("conv", "transposed conv")
             and (op["dtype"] == "float32") != (layer.index in positions)]
    if wrong:
        raise UserError(f"selective quantization did not keep exactly the chosen layers float (wrong: "
                        f"{', '.join(wrong[:4])})")


def _convert_int8_selective(source, io: IOType, calibration: CalibrationSet, float_layers: tuple[str, ...],
                            head: bool) -> bytes:
    """Int8 everywhere but the chosen layers (the classifier head, named layers), via TensorFlow's selective
    quantization (denylisted nodes of ``QuantizationDebugger``).

    The head's int8 output is what costs accuracy most often: it holds all 23 logits of a pixel on one int8
    scale spanning their whole range (about -80..96 for the demo model, a step of 0.7), so close logits flip
    the argmax. The head is 0.4% of the model's arithmetic (18 of 5,020 MFLOP per 96×128 frame), so float
    costs little. ``--auto-fallback`` picks further layers from the quantization report.
    """
    import tensorflow as tf
    from tensorflow.lite.python import util as tflite_util

    with quiet(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the debugger runs tf.lite.Interpreter internally
        denylist, positions = _float_tensors(source, tf.lite.TFLiteConverter.from_keras_model(source).convert(),
                                             float_layers, head)
        converter = tf.lite.TFLiteConverter.from_keras_model(source)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = calibration.tflite_representative_dataset()
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # lets chosen layers stay float
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=calibration.tflite_representative_dataset(),
            debug_options=tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=denylist))
        model_bytes = debugger.get_nondebug_quantized_model()
        _check_selective(source, model_bytes, positions)  # a denylisted name that matched nothing would pass
        if io is not IOType.FLOAT32:  # the same rewrite the converter applies for inference_input_type
            model_bytes = bytes(tflite_util.modify_model_io_type(
                model_bytes, tf.uint8 if io is IOType.UINT8 else tf.int8, tf.float32))
    return model_bytes


def tflite_io(model_bytes: bytes) -> tuple[str, str, dict]:
    """(input dtype, output kind "logits"/"class_map", input quantization) read from the flatbuffer."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model_bytes)
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    scale, zero_point = inp["quantization"]
    output = "class_map" if len(out["shape"]) == 3 or out["shape"][-1] == 1 else "logits"
    return inp["dtype"].__name__, output, {"scale": float(scale), "zero_point": int(zero_point)}
