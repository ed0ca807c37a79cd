"""The Keras model's compute layers in graph order: what an artifact's ops are matched to.

Converters rename tensors (``unet_1/conv2d_3_1/Relu;…`` in TFLite, tf2onnx's scopes in ONNX) but keep the
layers' topological order, and the seed U-Net is one chain with skips: the n-th convolution, transposed
convolution, pooling or concatenation of a file is the n-th such layer of the Keras model. Each format's graph
reader (``tflite_graph``, ``onnx_graph``) checks the match by the output shape (H×W×C, ``check_shapes``), so a
graph that does not line up is an error, not a silent mismatch.

Host side (Keras).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from exporter.errors import UserError


@dataclass(frozen=True)
class KerasLayer:
    """One compute unit of the Keras model, in graph order: a compute layer and the batch norm and activation
    layers right after it that converters fuse into it (its ``output`` is the last of them)."""

    index: int
    name: str
    kind: str                      # conv, depthwise conv, transposed conv, pool, concat
    shape: tuple[int, int, int]    # output H, W, C
    flops: int                     # 2 × multiply-adds per frame (0 for pool and concat)
    stage: str                     # encoder, bottleneck, decoder, head
    output: str = ""               # the layer whose output is the unit's (default: the layer itself)
    folded: bool = False           # a batch norm follows: converters fold it into the weights


FUSED = ("BatchNormalization", "ReLU", "Activation")  # what converters fold into the layer before them
FOLDED_ACTIVATIONS = ("relu", "relu6", "linear")  # of the Activation layers, the ones they fold


def _kind(layer) -> tuple[str, int] | None:
    """(kind, FLOPs per frame) of a compute layer; None for any other layer."""
    import keras

    if isinstance(layer, keras.layers.Conv2DTranspose):
        _, h, w, c_in = layer.input.shape
        kh, kw = layer.kernel_size
        return "transposed conv", 2 * h * w * kh * kw * c_in * layer.filters  # each input pixel scatters a kernel
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        _, h, w, c_out = layer.output.shape
        kh, kw = layer.kernel_size
        return "depthwise conv", 2 * h * w * kh * kw * c_out
    if isinstance(layer, keras.layers.Conv2D):
        _, h, w, c_out = layer.output.shape
        kh, kw = layer.kernel_size
        return "conv", 2 * h * w * kh * kw * layer.input.shape[-1] * c_out
    if isinstance(layer, keras.layers.MaxPooling2D):
        return "pool", 0
    if isinstance(layer, keras.layers.Concatenate):
        return "concat", 0
    return None


def _readers(model) -> dict[str, list]:
    """Layer name → the layers that read its output (Keras' graph nodes; one model, one walk)."""
    readers: dict[str, list] = {}
    for other in model.layers:
        for node in other._inbound_nodes:
            for tensor in node.input_tensors:
                readers.setdefault(tensor._keras_history.operation.name, []).append(other)
    return readers


def _fuses(layer) -> bool:
    """A batch norm, a ReLU, or an Activation that converters fold (relu, relu6, linear; a softmax is an op of its
    own, and its probabilities are not the conv's scores)."""
    kind = type(layer).__name__
    if kind == "Activation":
        return getattr(layer.activation, "__name__", "") in FOLDED_ACTIVATIONS
    return kind in FUSED


def _fused_chain(readers: dict[str, list], layer) -> list:
    """The batch norm and activation layers that follow ``layer`` one to one (each the only reader of the last)."""
    chain, last = [], layer
    while len(readers.get(last.name, [])) == 1 and _fuses(readers[last.name][0]):
        last = readers[last.name][0]
        chain.append(last)
    return chain


def _stages(shapes: list[tuple[int, int, int]], head: int) -> list[str]:
    """Encoder up to the last layer that shrinks the frame before it first grows again, bottleneck until it
    grows, decoder after, the head last."""
    areas = [h * w for h, w, _ in shapes]
    grows = next((i for i in range(1, len(areas)) if areas[i] > areas[i - 1]), len(areas))
    shrinks = max((i for i in range(1, grows) if areas[i] < areas[i - 1]), default=-1)
    return ["head" if i == head else "encoder" if i <= shrinks else "bottleneck" if i < grows else "decoder"
            for i in range(len(shapes))]


def keras_layers(model) -> list[KerasLayer]:
    """The compute units of ``model`` in graph order, with their arithmetic and their place along the U."""
    found, readers = [], _readers(model)
    for layer in model.layers:
        kind = _kind(layer)
        if kind is None:
            continue
        chain = _fused_chain(readers, layer) if kind[0].endswith("conv") else []
        output = chain[-1] if chain else layer
        found.append((layer.name, *kind, tuple(int(v) for v in output.output.shape[1:]), output.name,
                      any(type(c).__name__ == "BatchNormalization" for c in chain)))
    if not found:
        raise UserError("the model has no convolution, pooling or concatenation layer to report on")
    convs = [i for i, item in enumerate(found) if item[1] == "conv"]
    stages = _stages([item[3] for item in found], convs[-1] if convs else -1)
    return [KerasLayer(i, name, kind, shape, int(flops), stage, output, folded)
            for i, ((name, kind, flops, shape, output, folded), stage) in enumerate(zip(found, stages, strict=True))]


def keras_outputs(model, layers: list[KerasLayer], images: np.ndarray) -> list[np.ndarray]:
    """Each compute unit's float output on ``images`` (N×H×W×C per unit)."""
    import keras

    probe = keras.Model(model.inputs, [model.get_layer(layer.output or layer.name).output for layer in layers])
    outputs = probe.predict(images, batch_size=8, verbose=0)
    return [np.asarray(o, np.float32) for o in (outputs if isinstance(outputs, list) else [outputs])]


def check_shapes(layers: list[KerasLayer], shapes: list[tuple[int, ...]], what: str) -> None:
    """The artifact's compute ops line up with the Keras layers, shape by shape (UserError if not)."""
    if len(shapes) != len(layers) or any(tuple(s) != layer.shape for s, layer in zip(shapes, layers, strict=False)):
        raise UserError(f"{what}: its {len(shapes)} compute ops do not line up with the Keras model's "
                        f"{len(layers)} layers (shapes {shapes[:3]}… vs {[layer.shape for layer in layers[:3]]}…)")


VANISHING = ("Dropout", "SpatialDropout2D", "GaussianNoise", "Identity")  # no op in an exported graph


def conv_readers(model, name: str) -> list[str]:
    """The Conv2D layers that compute on layer ``name``'s output (after its fused batch norm and activation)
    directly, or through layers that vanish in export (dropout): what must stay float with it for the tensor to
    reach them in float (each reader quantizes its input again otherwise). A tensor read through a pooling or a
    concatenation is not followed: those int8 ops would quantize it again anyway (int16 islands span them:
    ``tflite_islands``)."""
    import keras

    readers = _readers(model)
    start = model.get_layer(name)
    chain = _fused_chain(readers, start) if _kind(start) and _kind(start)[0].endswith("conv") else []
    found, todo, seen = [], [chain[-1] if chain else start], set()
    while todo:
        layer = todo.pop()
        for reader in readers.get(layer.name, []):
            if reader.name in seen:
                continue
            seen.add(reader.name)
            if type(reader) is keras.layers.Conv2D:
                found.append(reader.name)
            elif type(reader).__name__ in VANISHING or _fuses(reader):
                todo.append(reader)
    return sorted(found, key=[layer.name for layer in model.layers].index)
