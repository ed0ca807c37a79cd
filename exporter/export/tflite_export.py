"""Keras → TFLite in every mode (fp32, fp16, dynamic, full int8, int16x8), optional in-graph argmax."""

from __future__ import annotations

import warnings

from exporter.contracts.export_spec import ExportSpec, FloatScope
from exporter.errors import UserError
from exporter.export.calibration import CalibrationSet
from exporter.parameters import IOType, Quantization
from exporter.stdio import silenced_python_output

DYNAMIC_NOTE = ("dynamic-range int8 with a dynamic batch: LiteRT's XNNPACK delegate cannot take its hybrid ops when "
                "shapes are computed at run time, and the builtin kernels run ~7x slower than fp32 (a fixed batch, "
                "--static-batch 1, runs ~3.4x faster than fp32: benchmarks/RESULTS.md)")
DYNAMIC_OLD_RUNTIMES = "dynamic-range int8 does not load in tflite-runtime 2.14 (TRANSPOSE_CONV weights)"
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
    # the same structure as the model's own input: a tensor, or a list of one (keras.Model(model.inputs, ...))
    clone = keras.models.clone_model(model, input_tensors=[inputs] if isinstance(model.input, list) else inputs)
    clone.set_weights(model.get_weights())
    return clone


def convert_tflite(model, spec: ExportSpec | None = None, calibration: CalibrationSet | None = None) -> bytes:
    """Convert with ``TFLiteConverter.from_keras_model`` (weights frozen); returns the flatbuffer (no metadata).

    ``spec.float_scope`` (int8 only): the layers it names, and the classifier head, compute in float.
    """
    import tensorflow as tf

    spec = spec or ExportSpec("tflite")
    quantization, io = spec.quantization, spec.io
    if quantization.needs_calibration and calibration is None and not spec.qat:
        raise UserError(f"{quantization.value} quantization needs calibration frames (--data)")
    source = with_static_batch(model, spec.static_batch) if spec.static_batch else model
    source = with_argmax(source) if spec.argmax else source
    if spec.float_scope:
        return _convert_int8_selective(source, io, calibration, spec.float_scope)
    if spec.int16_layers:
        return _convert_int8_islands(source, io, calibration, spec.int16_layers)
    converter = tf.lite.TFLiteConverter.from_keras_model(source)
    if quantization is not Quantization.FP32:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization is Quantization.FP16:
        converter.target_spec.supported_types = [tf.float16]
    elif quantization is Quantization.INT8:
        if not spec.qat:  # a QAT model's FakeQuant ops carry the ranges it learned (integer-only checks the file)
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
    with silenced_python_output(), warnings.catch_warnings():
        # TensorFlow warns when an integer input type is set, although the representative data set gives
        # the statistics it asks for; the warning only confuses.
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected")
        return converter.convert()


def _convert_int8_selective(source, io: IOType, calibration: CalibrationSet, scope: FloatScope) -> bytes:
    """Int8 everywhere but the float scope (the classifier head, named layers), via TensorFlow's selective
    quantization (denylisted nodes of ``QuantizationDebugger``).

    The head's int8 output is what costs accuracy most often: it holds all 23 logits of a pixel on one int8
    scale spanning their whole range (about -80..96 for the demo model, a step of 0.7), so close logits flip
    the argmax. The head is 0.4% of the model's arithmetic (18 of 5,020 MFLOP per 96×128 frame), so float
    costs little. ``--auto-fallback`` picks further layers from the quantization report.
    """
    import tensorflow as tf
    from tensorflow.lite.python import util as tflite_util

    from exporter.export import float_scope, tflite_graph
    from exporter.export.layers import keras_layers

    layers = keras_layers(source)
    named = float_scope.named_positions(layers, scope)
    with silenced_python_output(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the debugger runs tf.lite.Interpreter internally
        float_model = tf.lite.TFLiteConverter.from_keras_model(source).convert()
        denylist = tflite_graph.float_tensors(layers, float_model, named, scope.head)
        converter = tf.lite.TFLiteConverter.from_keras_model(source)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = calibration.tflite_representative_dataset()
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # lets chosen layers stay float
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=calibration.tflite_representative_dataset(),
            debug_options=tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=denylist))
        model_bytes = debugger.get_nondebug_quantized_model()
        tflite_graph.check_float_positions(layers, model_bytes, named, scope.head)  # a name that matched nothing
        if io is not IOType.FLOAT32:  # the same rewrite the converter applies for inference_input_type
            model_bytes = bytes(tflite_util.modify_model_io_type(
                model_bytes, tf.uint8 if io is IOType.UINT8 else tf.int8, tf.float32))
    return model_bytes


def _convert_int8_islands(source, io: IOType, calibration: CalibrationSet, int16_layers: tuple[str, ...]) -> bytes:
    """Int8 with the named layers' output tensors in int16 (A16W8), through ai-edge-quantizer's recipes
    (``tflite_islands``); checked to be what it says: every island op computes in int16."""
    import tensorflow as tf

    from exporter.export import float_scope, tflite_graph, tflite_islands
    from exporter.export.layers import keras_layers

    layers = keras_layers(source)
    named = float_scope.named_positions(layers, FloatScope(int16_layers), what="int16 layers")
    with silenced_python_output(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        float_model = tf.lite.TFLiteConverter.from_keras_model(source).convert()
    matched = tflite_graph.match(layers, float_model, "the float conversion (for int16 islands)")
    island = tflite_islands.island_tensors(float_model, [matched[i].out.name for i in sorted(named)])
    with silenced_python_output():
        model_bytes = tflite_islands.quantize(float_model, calibration, island, io)
    wide = {op.out.name for op in tflite_graph.ops(model_bytes) if op.out.dtype == "int16"}
    missing = [name for name in island if name not in wide]
    if missing:
        raise UserError(f"int16 islands: {len(missing)} op(s) of the island did not come out in int16 "
                        f"({missing[0][:80]}…)")
    return model_bytes
