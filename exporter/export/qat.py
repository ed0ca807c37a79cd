"""``unet-export qat``: quantization-aware fine-tuning in Keras 3, then a full-integer TFLite from the learned ranges.

TensorFlow's QAT toolkit (tensorflow-model-optimization) does not take Keras 3 models. This is the same scheme
in a few Keras 3 layers on the TensorFlow backend: every convolution's weights pass through a per-output-channel
symmetric 8-bit fake quantizer (``tf.quantization.fake_quant_with_min_max_vars_per_channel``, the range is the
weights' own, as tfmot's LastValueQuantizer), and every convolution, transposed convolution and concatenation
output (and the model input, pinned to [0, 1]) through an asymmetric 8-bit one whose range is a moving average of
the batches' min/max while training (tfmot's MovingAverageQuantizer); gradients pass straight through.
TensorFlow's converter reads those FakeQuant ops as the quantization parameters: the int8 file is made from the
ranges the fine-tuning learned, with no calibration. ONNX Runtime's quantizer has no FakeQuant: the ONNX file is the
fine-tuned float weights (``learned``) quantized with each layer's learned range as its calibration range
(``TensorQuantOverrides`` rmin/rmax); the tensors without one (pooling outputs, the input) are calibrated.

Host side (Keras on the TensorFlow backend).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from exporter.errors import UserError

PACKAGE = "unet_export_qat"


@functools.cache
def _layers():
    """The QAT layer classes (defined on first use: Keras and TensorFlow are imported only then)."""
    import keras
    import tensorflow as tf
    from keras import ops

    @keras.saving.register_keras_serializable(PACKAGE)
    class FakeQuant(keras.layers.Layer):
        """Asymmetric 8-bit fake quantization of a tensor; the range follows the batches' min/max (a moving
        average) while training, or stays ``fixed``."""

        def __init__(self, momentum: float = 0.99, fixed: tuple[float, float] | None = None, **kwargs):
            super().__init__(**kwargs)
            self.momentum, self.fixed = momentum, tuple(fixed) if fixed else None

        def build(self, shape):
            low, high = self.fixed or (0.0, 0.0)
            self.low = self.add_weight(shape=(), initializer=keras.initializers.Constant(low), trainable=False,
                                       name="min")
            self.high = self.add_weight(shape=(), initializer=keras.initializers.Constant(high), trainable=False,
                                        name="max")

        def call(self, x, training=False):
            if training and not self.fixed:
                low, high = ops.minimum(ops.min(x), 0.0), ops.maximum(ops.max(x), 0.0)
                fresh = ops.equal(self.high - self.low, 0.0)
                self.low.assign(ops.where(fresh, low, self.momentum * self.low + (1 - self.momentum) * low))
                self.high.assign(ops.where(fresh, high, self.momentum * self.high + (1 - self.momentum) * high))
            return tf.quantization.fake_quant_with_min_max_vars(x, self.low, self.high, num_bits=8)

        def get_config(self):
            return {**super().get_config(), "momentum": self.momentum, "fixed": self.fixed}

    @keras.saving.register_keras_serializable(PACKAGE)
    class QATConv2D(keras.layers.Conv2D):
        """Conv2D with per-channel 8-bit weights and an 8-bit output (and input, reading the model input)."""

        def __init__(self, quantize_input: bool = False, **kwargs):
            super().__init__(**kwargs)
            self.quantize_input = quantize_input
            self.output_quantizer = FakeQuant(name="output_quantizer")
            self.input_quantizer = FakeQuant(fixed=(0.0, 1.0), name="input_quantizer") if quantize_input else None

        def build(self, input_shape):  # the quantizers' ranges exist before the first call (clones, loading)
            super().build(input_shape)
            for quantizer in (self.output_quantizer, self.input_quantizer):
                if quantizer is not None:
                    quantizer.build(())

        def convolution_op(self, inputs, kernel):
            scale = ops.maximum(ops.max(ops.abs(kernel), axis=(0, 1, 2)), 1e-8)  # an all-zero channel: no 0..0
            kernel = tf.quantization.fake_quant_with_min_max_vars_per_channel(kernel, -scale, scale, num_bits=8,
                                                                              narrow_range=True)
            return super().convolution_op(inputs, kernel)

        def call(self, inputs, training=False):
            if self.input_quantizer is not None:
                inputs = self.input_quantizer(inputs, training=training)
            return self.output_quantizer(super().call(inputs), training=training)

        def get_config(self):
            return {**super().get_config(), "quantize_input": self.quantize_input}

    class OutputQuantized:
        """A layer whose output is 8-bit: the mixin of the transposed convolution and the concatenation."""

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.output_quantizer = FakeQuant(name="output_quantizer")

        def build(self, input_shape):
            super().build(input_shape)
            self.output_quantizer.build(())

        def call(self, inputs, training=False):
            return self.output_quantizer(super().call(inputs), training=training)

    @keras.saving.register_keras_serializable(PACKAGE)
    class QATConv2DTranspose(OutputQuantized, keras.layers.Conv2DTranspose):
        """Conv2DTranspose with an 8-bit output (the converter quantizes its weights per channel)."""

    @keras.saving.register_keras_serializable(PACKAGE)
    class QATConcatenate(OutputQuantized, keras.layers.Concatenate):
        """Concatenate with an 8-bit output (one scale for the joined tensor, as int8 kernels need)."""

        def compute_output_spec(self, inputs, training=False):
            return super().compute_output_spec(inputs)

    return {keras.layers.Conv2D: QATConv2D, keras.layers.Conv2DTranspose: QATConv2DTranspose,
            keras.layers.Concatenate: QATConcatenate}


def to_qat(model):
    """A copy of ``model`` with fake quantization (same layer names and weights); UserError for a model whose
    layers this scheme does not cover (depthwise convolutions, batch norms not folded...)."""
    import keras

    classes = _layers()
    inputs = {t.name for t in model.inputs}
    reads_input = {layer.name for layer in model.layers for node in layer._inbound_nodes
                   for tensor in node.input_tensors if tensor.name in inputs}
    unsupported = sorted({type(layer).__name__ for layer in model.layers
                          if type(layer).__name__ in ("DepthwiseConv2D", "SeparableConv2D", "BatchNormalization",
                                                      "Add", "Multiply", "UpSampling2D")})
    if unsupported:
        raise UserError(f"qat: {', '.join(unsupported)} layers are not covered by unet-export's fake quantization "
                        "(Conv2D, Conv2DTranspose, Concatenate, pooling, dropout, activations are)")

    def clone(layer):
        config = layer.get_config()
        cls = classes.get(type(layer))
        if cls is None:
            return layer.__class__.from_config(config)
        if cls.__name__ == "QATConv2D":
            return cls(quantize_input=layer.name in reads_input, **config)
        return cls(**config)

    qat = keras.models.clone_model(model, clone_function=clone)
    for layer in model.layers:
        weights = layer.get_weights()
        if weights:
            target = qat.get_layer(layer.name)
            target.set_weights(weights + target.get_weights()[len(weights):])
    return qat


def learned(qat) -> tuple[object, dict[str, tuple[float, float]]]:
    """The fine-tuned weights in Keras' own layers (a float copy, no fake quantization), and the learned output
    range of each layer that has one (Keras layer name → (min, max)): what an exporter without FakeQuant ops
    (ONNX Runtime's quantizer) takes as its ranges."""
    import keras

    def plain(layer):  # the Keras class a QAT class extends, from the same config
        base = next(cls for cls in type(layer).__mro__ if cls.__module__.startswith("keras."))
        return base.from_config({k: v for k, v in layer.get_config().items() if k != "quantize_input"})

    twin = keras.models.clone_model(qat, clone_function=plain)
    ranges = {}
    for layer in twin.layers:
        trained = qat.get_layer(layer.name)
        count = len(layer.weights)
        if count:
            layer.set_weights(trained.get_weights()[:count])
        quantizer = getattr(trained, "output_quantizer", None)
        if quantizer is not None:
            ranges[layer.name] = (float(quantizer.low.numpy()), float(quantizer.high.numpy()))
    return twin, ranges


@dataclass(frozen=True)
class QATOptions:
    epochs: int = 2
    batch_size: int = 8
    learning_rate: float = 1e-5  # a fine-tuning step: the float weights are already trained


def fine_tune(ctx, options: QATOptions = QATOptions(), log: Callable[[str], None] = print):
    """The context's model with fake quantization, fine-tuned on the training side of its data; the QAT model."""
    import time

    import keras

    frames = ctx.calibration_pool.index.load(list(ctx.calibration_pool.positions))
    masks = frames.masks.astype(np.int32)
    ignore = ctx.fmt.ignore_index
    keras.utils.set_random_seed(ctx.seed)  # the same fine-tuning on a re-run (shuffling, dropout)
    qat = to_qat(ctx.model)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=ctx.output_activation == "logits",
                                                      ignore_class=ignore)
    qat.compile(keras.optimizers.Adam(options.learning_rate), loss)
    started = time.perf_counter()
    history = qat.fit(frames.images, masks, batch_size=options.batch_size, epochs=options.epochs, shuffle=True,
                      verbose=0)
    losses = ", ".join(f"{value:.4f}" for value in history.history["loss"])
    log(f"qat: {options.epochs} epoch(s) on {len(masks)} frames in {time.perf_counter() - started:.0f}s "
        f"(loss {losses})")
    return qat
