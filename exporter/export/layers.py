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
    """One compute layer of the Keras model, in graph order."""

    index: int
    name: str
    kind: str                      # conv, transposed conv, pool, concat
    shape: tuple[int, int, int]    # output H, W, C
    flops: int                     # 2 × multiply-adds per frame (0 for pool and concat)
    stage: str                     # encoder, bottleneck, decoder, head


def keras_layers(model) -> list[KerasLayer]:
    """The compute layers of ``model`` in graph order, with their arithmetic and their place along the U."""
    import keras

    found = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2DTranspose):
            kind = "transposed conv"
            _, h, w, c_in = layer.input.shape
            kh, kw = layer.kernel_size
            flops = 2 * h * w * kh * kw * c_in * layer.filters  # each input pixel scatters one kernel
        elif isinstance(layer, keras.layers.Conv2D):
            kind = "conv"
            _, h, w, c_out = layer.output.shape
            kh, kw = layer.kernel_size
            flops = 2 * h * w * kh * kw * layer.input.shape[-1] * c_out
        elif isinstance(layer, keras.layers.MaxPooling2D):
            kind, flops = "pool", 0
        elif isinstance(layer, keras.layers.Concatenate):
            kind, flops = "concat", 0
        else:
            continue
        found.append((layer.name, kind, tuple(int(v) for v in layer.output.shape[1:]), int(flops)))
    if not found:
        raise UserError("the model has no convolution, pooling or concatenation layer to report on")
    kinds = [kind for _, kind, _, _ in found]
    first_up = kinds.index("transposed conv") if "transposed conv" in kinds else len(kinds)
    last_pool = max((i for i, k in enumerate(kinds[:first_up]) if k == "pool"), default=-1)
    head = max(i for i, k in enumerate(kinds) if k == "conv")
    layers = []
    for i, (name, kind, shape, flops) in enumerate(found):
        stage = ("head" if i == head else "encoder" if i <= last_pool else "bottleneck" if i < first_up
                 else "decoder")
        layers.append(KerasLayer(i, name, kind, shape, flops, stage))
    return layers


def keras_outputs(model, layers: list[KerasLayer], images: np.ndarray) -> list[np.ndarray]:
    """Each compute layer's float output on ``images`` (N×H×W×C per layer)."""
    import keras

    probe = keras.Model(model.inputs, [model.get_layer(layer.name).output for layer in layers])
    outputs = probe.predict(images, batch_size=8, verbose=0)
    return [np.asarray(o, np.float32) for o in (outputs if isinstance(outputs, list) else [outputs])]


def check_shapes(layers: list[KerasLayer], shapes: list[tuple[int, ...]], what: str) -> None:
    """The artifact's compute ops line up with the Keras layers, shape by shape (UserError if not)."""
    if len(shapes) != len(layers) or any(tuple(s) != layer.shape for s, layer in zip(shapes, layers, strict=False)):
        raise UserError(f"{what}: its {len(shapes)} compute ops do not line up with the Keras model's "
                        f"{len(layers)} layers (shapes {shapes[:3]}… vs {[layer.shape for layer in layers[:3]]}…)")
