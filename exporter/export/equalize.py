"""``--equalize``: cross-layer equalization and bias correction of a Keras model before int8 conversion.

Cross-layer equalization (Nagel et al., "Data-Free Quantization through Weight Equalization and Bias
Correction", ICCV 2019; what AIMET and OpenVINO's tools apply): a ReLU (or linear) convolution's output channel
*c* scaled by 1/s and every convolution reading that channel scaled by s on its input channel computes the same
function (ReLU(x/s) = ReLU(x)/s for s > 0). With s = sqrt(r1/r2) (r1: the producer's weight range of channel c,
r2: the consumers' weight range of input channel c) both ranges become sqrt(r1·r2): a channel whose range dwarfs
its neighbours' (after training, or on purpose in the tests) no longer owns the int8 step of its tensor.

The path between producer and consumers may pass through what commutes with a positive per-channel scale: ReLU,
linear activations, dropout, max-pooling, and concatenation on the channel axis (the consumer's input channels
at the producer's offset). Anything else (a batch norm, an add, a model output, relu6) leaves the pair alone,
with the reason. Pairs are swept until the scales settle; the float model's outputs are then checked on frames
(the rescale must keep them, up to float rounding), else the export stops with one line (nothing written).

Bias correction: per-channel symmetric int8 weights (what LiteRT and ONNX Runtime use) shift each output channel
by (W_q − W)·E[x]; E[x] per input channel is measured on calibration frames and the shift is taken off the bias
(convolutions with a bias; transposed convolutions are left, their kernel positions see different inputs).

Host side (Keras).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from exporter.errors import UserError

PASS_THROUGH = ("ReLU", "Dropout", "SpatialDropout2D", "MaxPooling2D", "Identity")
HOMOGENEOUS = ("relu", "linear")  # activations with f(x/s) = f(x)/s for s > 0
SWEEPS = 8
FLOAT_TOLERANCE = 1e-4  # relative RMS change of the float outputs the rescale may cause (float32 rounding)


@dataclass(frozen=True)
class Pair:
    """One producer convolution and the convolutions reading its output channels (with the channel offset at
    which each reads them)."""

    producer: str
    consumers: tuple[tuple[str, int], ...]


@dataclass
class EqualizeReport:
    """What ``equalize`` did: the pairs rescaled, those left (and why), the biases corrected, the check."""

    pairs: list[Pair] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    largest_ratio_before: float = 1.0  # the largest channel weight-range ratio producer/consumer, before
    largest_ratio_after: float = 1.0
    biases_corrected: int = 0
    float_change: float = 0.0  # relative RMS change of the float outputs by the rescale

    def to_dict(self) -> dict:
        return {"pairs": [{"producer": p.producer, "consumers": [list(c) for c in p.consumers]} for p in self.pairs],
                "skipped": dict(self.skipped), "largest_ratio_before": round(self.largest_ratio_before, 3),
                "largest_ratio_after": round(self.largest_ratio_after, 3), "biases_corrected": self.biases_corrected,
                "float_change": self.float_change}

    def line(self) -> str:
        return (f"equalized {len(self.pairs)} conv pair(s) (largest channel range ratio {self.largest_ratio_before:.3g} "
                f"→ {self.largest_ratio_after:.3g}; float outputs kept within {self.float_change:.1e}), "
                f"bias-corrected {self.biases_corrected} conv(s); {len(self.skipped)} left as they are")


def _is_conv(layer) -> bool:
    import keras

    return isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose)) and \
        not isinstance(layer, keras.layers.DepthwiseConv2D) and getattr(layer, "groups", 1) == 1


def _activation(layer) -> str:
    return getattr(getattr(layer, "activation", None), "__name__", "linear")


def _passes(layer) -> bool:
    """A layer that commutes with a positive per-channel scale of its input."""
    kind = type(layer).__name__
    if kind == "Activation":
        return _activation(layer) in HOMOGENEOUS
    if kind == "ReLU":
        return not layer.max_value and not layer.negative_slope and not layer.threshold
    return kind in PASS_THROUGH


def _consumers(model, readers: dict[str, list], layer) -> tuple[list[tuple[str, int]], str | None]:
    """The convolutions reading ``layer``'s output channels, each with its channel offset; or the reason none may
    be rescaled."""
    outputs = {tensor._keras_history.operation.name for tensor in model.outputs}
    found, todo = [], [(layer, 0)]
    while todo:
        current, offset = todo.pop()
        if current.name in outputs:
            return [], f"{current.name} is a model output"
        reading = readers.get(current.name, [])
        if not reading:
            return [], f"{current.name}'s output is not read"
        for reader in reading:
            if _is_conv(reader):
                found.append((reader.name, offset))
            elif _passes(reader):
                todo.append((reader, offset))
            elif type(reader).__name__ == "Concatenate" and reader.axis in (-1, 3):
                before = 0
                for tensor in reader.input:
                    if tensor._keras_history.operation is current:
                        break
                    before += int(tensor.shape[-1])
                todo.append((reader, offset + before))
            else:
                return [], f"{reader.name} ({type(reader).__name__}) reads it"
    return sorted(set(found)), None


def find_pairs(model) -> tuple[list[Pair], dict[str, str]]:
    """Every convolution whose output may be rescaled against its readers, and the reasons for the others."""
    from exporter.export.layers import _readers

    readers = _readers(model)
    pairs, skipped = [], {}
    for layer in model.layers:
        if not _is_conv(layer):
            continue
        if _activation(layer) not in HOMOGENEOUS:
            skipped[layer.name] = f"activation {_activation(layer)} does not commute with a scale"
            continue
        consumers, reason = _consumers(model, readers, layer)
        if reason:
            skipped[layer.name] = reason
        else:
            pairs.append(Pair(layer.name, tuple(consumers)))
    return pairs, skipped


def _out_axis(layer) -> int:
    """The kernel axis of a convolution's output channels (Keras: Conv2D H×W×in×out, transposed H×W×out×in)."""
    import keras

    return 2 if isinstance(layer, keras.layers.Conv2DTranspose) else 3


def _ranges(kernel: np.ndarray, axis: int) -> np.ndarray:
    """max |w| per index of ``axis``."""
    return np.max(np.abs(np.moveaxis(kernel, axis, 0)).reshape(kernel.shape[axis], -1), axis=1)


def _sweep(model, pairs: list[Pair]) -> float:
    """One pass of rescaling over ``pairs``; the largest producer/consumer range ratio seen before it."""
    worst = 1.0
    for pair in pairs:
        producer = model.get_layer(pair.producer)
        weights = producer.get_weights()
        out_axis = _out_axis(producer)
        channels = weights[0].shape[out_axis]
        r1 = _ranges(weights[0], out_axis)
        r2 = np.zeros(channels)
        for name, offset in pair.consumers:
            consumer = model.get_layer(name)
            in_axis = 5 - _out_axis(consumer)  # the other channel axis: 2 for Conv2D, 3 for transposed
            r2 = np.maximum(r2, _ranges(consumer.get_weights()[0], in_axis)[offset:offset + channels])
        live = (r1 > 0) & (r2 > 0)
        scale = np.ones(channels)
        scale[live] = np.sqrt(r1[live] / r2[live])
        ratio = r1[live] / r2[live]
        if ratio.size:
            worst = max(worst, float(np.max(np.maximum(ratio, 1 / ratio))))
        shape = [1, 1, 1, 1]
        shape[out_axis] = channels
        weights[0] = (weights[0] / scale.reshape(shape)).astype(weights[0].dtype)
        if len(weights) > 1:
            weights[1] = (weights[1] / scale).astype(weights[1].dtype)
        producer.set_weights(weights)
        for name, offset in pair.consumers:
            consumer = model.get_layer(name)
            cw = consumer.get_weights()
            in_axis = 5 - _out_axis(consumer)
            full = np.ones(cw[0].shape[in_axis])
            full[offset:offset + channels] = scale
            shape = [1, 1, 1, 1]
            shape[in_axis] = full.size
            cw[0] = (cw[0] * full.reshape(shape)).astype(cw[0].dtype)
            consumer.set_weights(cw)
    return worst


def _relative_rms(reference: np.ndarray, other: np.ndarray) -> float:
    rms = float(np.sqrt(np.mean(np.square(reference, dtype=np.float64))))
    return float(np.sqrt(np.mean(np.square(reference.astype(np.float64) - other)))) / max(rms, 1e-30)


def _symmetric_int8(kernel: np.ndarray, out_axis: int, levels: int = 127) -> np.ndarray:
    """The kernel as per-output-channel symmetric integer weights give it back (scale max|w|/levels: 127 for int8,
    63 for ONNX Runtime's reduce-range)."""
    shape = [1] * kernel.ndim
    shape[out_axis] = -1
    scale = (_ranges(kernel, out_axis) / levels).reshape(shape)
    scale = np.where(scale > 0, scale, 1.0)
    return np.clip(np.round(kernel / scale), -levels, levels) * scale


def correct_biases(model, images: np.ndarray, keep_float: tuple[str, ...] = (), levels: int = 127,
                   batch: int = 8) -> int:
    """Take each Conv2D's expected integer-weight error off its bias (E[x] per input channel on ``images``,
    accumulated batch by batch); convolutions in ``keep_float`` are left (they keep float weights). The number of
    biases corrected."""
    import keras

    convs = [layer for layer in model.layers if _is_conv(layer) and not isinstance(layer, keras.layers.Conv2DTranspose)
             and layer.use_bias and layer.name not in keep_float]
    if not convs or not len(images):
        return 0
    probe = keras.Model(model.inputs, [layer.input for layer in convs])
    sums = [np.zeros(int(layer.input.shape[-1])) for layer in convs]
    for start in range(0, len(images), batch):
        inputs = probe(images[start:start + batch], training=False)
        for i, x in enumerate(inputs if isinstance(inputs, (list, tuple)) else [inputs]):
            sums[i] += np.sum(np.asarray(x, np.float64), axis=(0, 1, 2))
    for layer, total in zip(convs, sums, strict=True):
        height, width = (int(v) for v in layer.input.shape[1:3])
        mean = total / (len(images) * height * width)  # per input channel
        kernel, bias = layer.get_weights()[:2]
        error = _symmetric_int8(kernel.astype(np.float64), 3, levels) - kernel  # H×W×in×out
        shift = np.einsum("hwio,i->o", error, mean)
        layer.set_weights([kernel, (bias - shift).astype(bias.dtype), *layer.get_weights()[2:]])
    return len(convs)


def equalize(model, images: np.ndarray, bias_correction: bool = True, keep_float: tuple[str, ...] = (),
             levels: int = 127) -> tuple[object, EqualizeReport]:
    """A copy of ``model`` with cross-layer equalization (and bias correction on ``images`` of every Conv2D but
    ``keep_float``, for weights of ``levels`` steps each side of zero); the original is untouched. UserError if the
    rescale changes the float outputs beyond rounding (a bug, never shipped)."""
    import keras

    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    pairs, skipped = find_pairs(clone)
    report = EqualizeReport(pairs=pairs, skipped=skipped)
    if pairs:
        report.largest_ratio_before = _sweep(clone, pairs)
        for _ in range(SWEEPS - 1):
            if _sweep(clone, pairs) < 1.01:
                break
        report.largest_ratio_after = _sweep(clone, pairs)
        probe = images[: min(len(images), 8)]
        before = np.asarray(model(probe, training=False), np.float32)
        after = np.asarray(clone(probe, training=False), np.float32)
        report.float_change = _relative_rms(before, after)
        if not report.float_change <= FLOAT_TOLERANCE:
            raise UserError(f"cross-layer equalization changed the float model's outputs by {report.float_change:.2e} "
                            f"(relative RMS > {FLOAT_TOLERANCE:g}); export without --equalize")
    if bias_correction:
        report.biases_corrected = correct_biases(clone, images, keep_float, levels)
    return clone, report
