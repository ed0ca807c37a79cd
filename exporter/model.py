"""The seed's U-Net (docs/architecture.md, "The model"): conv_block, upsampling_block, unet_model — logits out."""

from __future__ import annotations

from typing import TYPE_CHECKING

from exporter.parameters import INPUT_SIZE, N_CLASSES

if TYPE_CHECKING:  # pragma: no cover
    import keras

SEED_PARAMETERS = 8_640_471


def conv_block(inputs, n_filters: int = 32, dropout_prob: float = 0.0, max_pooling: bool = True):
    """Two 3×3 ReLU convs, optional dropout, optional 2×2 max-pool; returns (next, skip)."""
    import keras

    conv = keras.layers.Conv2D(n_filters, 3, activation="relu", padding="same",
                               kernel_initializer="he_normal")(inputs)
    conv = keras.layers.Conv2D(n_filters, 3, activation="relu", padding="same",
                               kernel_initializer="he_normal")(conv)
    if dropout_prob > 0:
        conv = keras.layers.Dropout(dropout_prob)(conv)
    next_layer = keras.layers.MaxPool2D((2, 2))(conv) if max_pooling else conv
    return next_layer, conv


def upsampling_block(expansive_input, contractive_input, n_filters: int = 32):
    """3×3 stride-2 transposed conv, concat with the skip (channel axis), two 3×3 ReLU convs."""
    import keras

    up = keras.layers.Conv2DTranspose(n_filters, 3, strides=2, padding="same")(expansive_input)
    merge = keras.layers.concatenate([up, contractive_input], axis=3)
    conv = keras.layers.Conv2D(n_filters, 3, activation="relu", padding="same",
                               kernel_initializer="he_normal")(merge)
    conv = keras.layers.Conv2D(n_filters, 3, activation="relu", padding="same",
                               kernel_initializer="he_normal")(conv)
    return conv


def check_input_size(input_size: tuple[int, int, int]) -> tuple[int, int, int]:
    """Validate (H, W, C): four 2×2 poolings need H and W divisible by 16."""
    if len(input_size) != 3 or any(int(v) <= 0 for v in input_size):
        raise ValueError(f"input_size must be (height, width, channels) > 0, got {input_size!r}")
    height, width, channels = (int(v) for v in input_size)
    if height % 16 or width % 16:
        raise ValueError(
            f"input_size {height}x{width}: height and width must be divisible by 16 "
            "(the U-Net pools four times by 2)"
        )
    return height, width, channels


def build_unet(
    input_size: tuple[int, int, int] = (*INPUT_SIZE, 3),
    n_filters: int = 32,
    n_classes: int = N_CLASSES,
    dropout: float = 0.3,
) -> keras.Model:
    """The seed's ``unet_model``: same layers, order, kernels and initialisers; logits, no softmax."""
    import keras

    input_size = check_input_size(tuple(input_size))
    inputs = keras.Input(input_size)
    cblock1 = conv_block(inputs, n_filters)
    cblock2 = conv_block(cblock1[0], n_filters * 2)
    cblock3 = conv_block(cblock2[0], n_filters * 4)
    cblock4 = conv_block(cblock3[0], n_filters * 8, dropout_prob=dropout)
    cblock5 = conv_block(cblock4[0], n_filters * 16, dropout_prob=dropout, max_pooling=False)

    ublock6 = upsampling_block(cblock5[0], cblock4[1], n_filters * 8)
    ublock7 = upsampling_block(ublock6, cblock3[1], n_filters * 4)
    ublock8 = upsampling_block(ublock7, cblock2[1], n_filters * 2)
    ublock9 = upsampling_block(ublock8, cblock1[1], n_filters)

    conv9 = keras.layers.Conv2D(n_filters, 3, activation="relu", padding="same",
                                kernel_initializer="he_normal")(ublock9)
    # The classifier stays float32 under a mixed-precision policy: logits and the loss in float32.
    conv10 = keras.layers.Conv2D(n_classes, 1, padding="same", dtype="float32")(conv9)
    return keras.Model(inputs=inputs, outputs=conv10, name="unet")


def as_float32(model):
    """``model`` itself if every layer computes in float32; else the same graph and weights with float32
    layers (a model trained under a mixed-precision policy keeps float32 variables, so nothing is lost):
    exports and their reference are always float32."""
    import keras

    if all(getattr(layer.dtype_policy, "name", "float32") == "float32" for layer in model.layers):
        return model
    config = model.get_config()
    for layer in config["layers"]:
        if "dtype" in layer.get("config", {}):
            layer["config"]["dtype"] = "float32"
    clone = keras.Model.from_config(config)
    clone.set_weights(model.get_weights())
    return clone
