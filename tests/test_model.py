import pytest

from exporter.model import SEED_PARAMETERS, build_unet


def layer_summary(model) -> list[tuple[str, tuple, int]]:
    """(layer class, output shape, parameter count) per layer: the seed's summary, comparable."""
    rows = []
    for layer in model.layers:
        shape = layer.output.shape if hasattr(layer, "output") else None
        rows.append((type(layer).__name__, tuple(shape) if shape is not None else (), layer.count_params()))
    return rows


def _config(layer):
    """The layer's architecture-defining config (name excluded)."""
    cfg = layer.get_config()
    cfg.pop("name", None)
    for key in ("kernel_initializer", "bias_initializer"):
        if isinstance(cfg.get(key), dict):
            cfg[key] = cfg[key].get("class_name")
    return cfg


def test_defaults_match_the_seed_parameter_count_and_layer_summary():
    from seed_unet import unet_model

    ours, seed = build_unet(), unet_model()
    assert ours.count_params() == SEED_PARAMETERS == 8_640_471
    assert layer_summary(ours) == layer_summary(seed)
    assert [_config(a) for a in ours.layers] == [_config(b) for b in seed.layers]
    assert ours.output.shape[1:] == (96, 128, 23)


def test_other_sizes_match_the_seed_too():
    from seed_unet import unet_model

    assert layer_summary(build_unet((32, 64, 3), 4, 7)) == layer_summary(unet_model((32, 64, 3), 4, 7))


def test_dropout_only_in_blocks_4_and_5_and_he_normal_everywhere():
    model = build_unet()
    dropouts = [layer for layer in model.layers if type(layer).__name__ == "Dropout"]
    assert [d.rate for d in dropouts] == [0.3, 0.3]
    convs = [layer for layer in model.layers if type(layer).__name__ == "Conv2D"]
    assert all(c.get_config()["kernel_initializer"]["class_name"] == "HeNormal" for c in convs[:-1])
    assert convs[-1].get_config()["activation"] == "linear"  # logits, no softmax


@pytest.mark.parametrize("size", [(90, 128, 3), (96, 120, 3), (0, 128, 3)])
def test_sizes_not_divisible_by_16_are_rejected(size):
    with pytest.raises(ValueError, match="divisible by 16|> 0"):
        build_unet(size)
