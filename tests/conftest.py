"""Shared test helpers: tiny CARLA-layout data sets and a tiny trained model, built once per session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).parent))

TINY_SIZE = (32, 32)
TINY_CLASSES = 23

# Two fp32 implementations of one model (Keras vs LiteRT, ONNX Runtime, OpenVINO) sum each conv's K products
# in different orders and vector widths (AVX-512 vs AVX2), so they differ by a few units in the last place of
# the largest values, not by a fixed absolute amount: measured 6.1e-5 on AVX-512 and 1.07e-4 on AVX2 for
# logits up to ~240, i.e. 2-4 eps of the largest logit. The bound is 64 eps relative to the largest
# reference logit: ~20x the worst seen, yet ~8x below what fp16 weights would cause (2^-11 relative).
FP32_RELATIVE_TOLERANCE = 64 * float(np.finfo(np.float32).eps)


def fp32_tolerance(reference: np.ndarray) -> float:
    """Largest |Δlogit| an fp32 artifact may show against fp32 reference logits, on any CPU."""
    return FP32_RELATIVE_TOLERANCE * max(1.0, float(np.max(np.abs(reference))))


def top2_margin(logits: np.ndarray) -> np.ndarray:
    """Gap between the largest and second-largest logit of each pixel: how far it is from an argmax tie."""
    top2 = np.sort(logits, axis=-1)[..., -2:]
    return top2[..., 1] - top2[..., 0]


def write_carla(folder: Path, images: np.ndarray, masks: np.ndarray, gb_noise: bool = False,
                seed: int = 0) -> Path:
    """Write uint8 images N×H×W×3 and class masks N×H×W as CARLA-layout PNGs."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    (folder / "CameraRGB").mkdir(parents=True, exist_ok=True)
    (folder / "CameraMask").mkdir(parents=True, exist_ok=True)
    for i, (image, mask) in enumerate(zip(images, masks, strict=True)):
        rgb_mask = np.zeros((*mask.shape, 3), np.uint8)
        rgb_mask[..., 0] = mask
        if gb_noise:
            rgb_mask[..., 1:] = rng.integers(0, 256, (*mask.shape, 2), dtype=np.uint8)
        Image.fromarray(image).save(folder / "CameraRGB" / f"{i:04d}.png")
        Image.fromarray(rgb_mask).save(folder / "CameraMask" / f"{i:04d}.png")
    return folder


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """40 synthetic driving scenes at 32×32."""
    from exporter.data.synth import write_synthetic_dataset

    out = tmp_path_factory.mktemp("synth")
    write_synthetic_dataset(out, count=40, seed=1, size=TINY_SIZE)
    return out


@pytest.fixture(scope="session")
def blocks_dir(tmp_path_factory) -> Path:
    """96 learnable 32×32 frames: 8×8 blocks of seven CARLA classes in their palette colours, with noise.

    A tiny model learns these to ~95% pixel accuracy in seconds, so quantization tests see real logit
    margins instead of near-ties (synthetic driving scenes need far more steps at this size).
    """
    from exporter.classes import CARLA_PALETTE

    rng = np.random.default_rng(0)
    ids = np.array([1, 4, 7, 8, 9, 10, 13])
    masks = ids[rng.integers(0, len(ids), (96, 4, 4))].repeat(8, 1).repeat(8, 2).astype(np.uint8)
    noise = rng.integers(-25, 26, (96, *TINY_SIZE, 3))
    images = np.clip(CARLA_PALETTE[masks].astype(int) + noise, 0, 255).astype(np.uint8)
    return write_carla(tmp_path_factory.mktemp("blocks"), images, masks, gb_noise=True)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, blocks_dir) -> Path:
    """A run folder holding a tiny U-Net (n_filters=4, 32×32, 23 classes) trained on blocks_dir."""
    from exporter.train import TrainConfig, train

    run_dir = tmp_path_factory.mktemp("run")
    config = TrainConfig(epochs=12, batch_size=4, learning_rate=5e-3, n_filters=4, input_size=TINY_SIZE,
                         n_classes=TINY_CLASSES, val_split=0.25, seed=0)
    train(blocks_dir, run_dir, config, log=None, verbose=0)
    return run_dir
