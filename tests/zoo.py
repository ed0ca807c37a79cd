"""A model zoo of the kinds users bring, built in code, tiny, trained a few steps on block frames.

Used by tests/test_zoo.py (``make test`` runs a part, ``make test-zoo`` all of it) and benchmarks/zoo.py.
Each model gets its own data folder: CARLA's layout and RGB masks for the 23-class models; for the 5-class one,
palette-PNG masks (the palette index is the class, as Pascal VOC stores them) with a "don't care" border of
255, its own folder names and its own class names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IGNORE = 255
FIVE_CLASSES = ("background", "road", "car", "person", "sign")


@dataclass(frozen=True)
class ZooModel:
    name: str
    build: Callable[[], object]
    size: tuple[int, int] = (32, 32)
    n_classes: int = 23
    softmax: bool = False
    epochs: int = 8
    batch: int = 8

    @property
    def carla(self) -> bool:
        """CARLA's layout and classes; else palette masks, an ignore value, other folder names and labels."""
        return self.n_classes == 23


def _seed(size=(32, 32), n_classes=23, softmax=False):
    """The seed U-Net (n_filters 4), logits out, or a softmax after its head."""
    import keras

    from exporter.model import build_unet

    model = build_unet((*size, 3), 4, n_classes, 0.0)
    if softmax:
        model = keras.Model(model.inputs, keras.layers.Softmax(name="probabilities")(model.outputs[0]),
                            name="unet_softmax")
    return model


def _conv_bn(x, filters, kernel=3, relu6=False):
    import keras

    x = keras.layers.Conv2D(filters, kernel, padding="same", use_bias=False)(x)
    x = keras.layers.BatchNormalization(momentum=0.8)(x)  # moving statistics that settle in a few steps
    return keras.layers.ReLU(6.0 if relu6 else None)(x)


def _unet_bn(bilinear=False):
    """U-Net with BatchNorm after each conv; transposed convs, or bilinear upsampling + a conv, in the decoder."""
    import keras

    inputs = keras.Input((32, 32, 3))
    skips, x = [], inputs
    for filters in (4, 8, 16):
        x = _conv_bn(_conv_bn(x, filters), filters)
        skips.append(x)
        x = keras.layers.MaxPooling2D()(x)
    x = _conv_bn(_conv_bn(x, 32), 32)
    for filters, skip in zip((16, 8, 4), reversed(skips), strict=True):
        if bilinear:
            x = _conv_bn(keras.layers.UpSampling2D(interpolation="bilinear")(x), filters)
        else:
            x = keras.layers.Conv2DTranspose(filters, 3, strides=2, padding="same")(x)
        x = _conv_bn(_conv_bn(keras.layers.Concatenate()([x, skip]), filters), filters)
    return keras.Model(inputs, keras.layers.Conv2D(23, 1)(x), name="unet_bilinear" if bilinear else "unet_bn")


def _inverted_residual(x, filters, stride):
    """MobileNetV2's block: 1×1 expand, 3×3 depthwise, 1×1 project (linear), a residual add where shapes allow."""
    import keras

    expanded = _conv_bn(x, x.shape[-1] * 2, kernel=1, relu6=True)
    y = keras.layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False)(expanded)
    y = keras.layers.ReLU(6.0)(keras.layers.BatchNormalization(momentum=0.8)(y))
    y = keras.layers.BatchNormalization(momentum=0.8)(keras.layers.Conv2D(filters, 1, use_bias=False)(y))
    return keras.layers.Add()([x, y]) if stride == 1 and x.shape[-1] == filters else y


def _mobile():
    """A MobileNetV2-style encoder (depthwise-separable, ReLU6, residual adds) under a bilinear decoder."""
    import keras

    inputs = keras.Input((32, 32, 3))
    x, skips = _conv_bn(inputs, 8, relu6=True), []
    for filters in (8, 16, 24):
        x = _inverted_residual(_inverted_residual(x, filters, 1), filters, 1)
        skips.append(x)
        x = _inverted_residual(x, filters * 2, 2)
    for filters, skip in zip((24, 16, 8), reversed(skips), strict=True):
        x = keras.layers.Concatenate()([keras.layers.UpSampling2D(interpolation="bilinear")(x), skip])
        x = _conv_bn(x, filters, relu6=True)
    return keras.Model(inputs, keras.layers.Conv2D(23, 1)(x), name="mobile_unet")


ZOO = {z.name: z for z in (
    ZooModel("seed", _seed, epochs=16, batch=4),
    ZooModel("batchnorm", _unet_bn, epochs=12, batch=4),
    ZooModel("bilinear", lambda: _unet_bn(bilinear=True), epochs=12, batch=4),
    ZooModel("mobile", _mobile),
    ZooModel("size64_5classes", lambda: _seed((64, 64), 5), size=(64, 64), n_classes=5, epochs=6),
    ZooModel("softmax", lambda: _seed(softmax=True), softmax=True, epochs=16, batch=4),
)}


MODES = ("tflite:fp32", "tflite:fp16", "tflite:int8", "tflite:int8:head", "tflite:int8:uint8:argmax:head:b1",
         "tflite:int16x8", "onnx:fp32", "onnx:fp16", "onnx:int8", "onnx:int8:head", "onnx:int8:reduce-range",
         "onnx:int8:u8u8")


def mode_spec(mode: str):
    """'tflite:int8:uint8:argmax:head:b1' → its ExportSpec."""
    from exporter.contracts.export_spec import HEAD, ExportSpec

    fmt, quantization, *flags = mode.split(":")
    return ExportSpec(fmt, quantization, io="uint8" if "uint8" in flags else "float32", argmax="argmax" in flags,
                      float_scope=HEAD if "head" in flags else ExportSpec(fmt).float_scope,
                      static_batch=1 if "b1" in flags else None,
                      int8_scheme=next((f for f in flags if f in ("reduce-range", "u8u8")), "u8s8"))


def write_data(zm: ZooModel, folder: Path, count: int = 64, seed: int = 0) -> Path:
    """Block frames for ``zm``: CARLA's layout and RGB masks, or for the 5-class model palette masks with an
    ignore border in images/ + labels/ and a labels file (folder/labels.txt)."""
    from PIL import Image

    from conftest import block_frames, write_carla

    images, masks = block_frames(count, seed=seed, size=zm.size)
    if zm.carla:
        return write_carla(folder, images, masks)
    masks = (masks % zm.n_classes).astype(np.uint8)
    masks[:, :2, :], masks[:, -2:, :] = IGNORE, IGNORE  # top and bottom rows: "don't care"
    palette = np.zeros((256, 3), np.uint8)
    palette[: zm.n_classes] = [(0, 0, 0), (128, 64, 128), (0, 0, 142), (220, 20, 60), (220, 220, 0)]
    palette[IGNORE] = (255, 255, 255)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "labels").mkdir(parents=True, exist_ok=True)
    for i, (image, mask) in enumerate(zip(images, masks, strict=True)):
        Image.fromarray(image).save(folder / "images" / f"{i:04d}.png")
        indexed = Image.frombytes("P", (mask.shape[1], mask.shape[0]), mask.tobytes())
        indexed.putpalette(palette.ravel().tolist())
        indexed.save(folder / "labels" / f"{i:04d}.png")
    (folder / "labels.txt").write_text("\n".join(FIVE_CLASSES) + "\n")
    return folder


def train(zm: ZooModel, data: Path, out: Path) -> Path:
    """``zm`` built and fitted a few epochs on its frames (ignored pixels weigh nothing), saved to ``out``."""
    import keras

    from exporter.data.carla import DataFormat
    from exporter.data.index import load_frames

    fmt = DataFormat(zm.size, zm.n_classes) if zm.carla else \
        DataFormat(zm.size, zm.n_classes, "images", "labels", IGNORE)
    frames = load_frames(data, fmt)
    weights = (frames.masks != IGNORE).astype(np.float32)
    masks = np.where(frames.masks == IGNORE, 0, frames.masks)
    keras.utils.set_random_seed(0)
    model = zm.build()
    model.compile(optimizer=keras.optimizers.Adam(5e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=not zm.softmax))
    model.fit(frames.images, masks, sample_weight=weights, epochs=zm.epochs, batch_size=zm.batch, verbose=0)
    model.save(out)
    return out


def data_flags(zm: ZooModel, data: Path) -> list[str]:
    """The CLI flags that read ``zm``'s data folder."""
    if zm.carla:
        return ["--data", str(data)]
    return ["--data", str(data), "--images-dir", "images", "--masks-dir", "labels", "--ignore-index", str(IGNORE),
            "--labels", str(data / "labels.txt")]
