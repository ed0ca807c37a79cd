"""CARLA-layout reader: DIR/CameraRGB/*.png + DIR/CameraMask/*.png, class id in the mask's red channel."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from exporter.errors import UserError

IMAGE_DIR = "CameraRGB"
MASK_DIR = "CameraMask"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass
class Frames:
    """Frames resized to the model input: images float32 N×H×W×3 in [0, 1], masks uint8 N×H×W."""

    images: np.ndarray
    masks: np.ndarray
    stems: list[str]
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.stems)


def _listing(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}


def find_pairs(data_dir: str | Path, warn: Callable[[str], None] | None = None) -> list[tuple[str, Path, Path]]:
    """(stem, image, mask) for every stem with both files; an unpaired file is an error unless ``warn``."""
    data_dir = Path(data_dir)
    image_dir, mask_dir = data_dir / IMAGE_DIR, data_dir / MASK_DIR
    for folder in (data_dir, image_dir, mask_dir):
        if not folder.is_dir():
            raise UserError(f"{folder}: folder not found (expected {data_dir}/{IMAGE_DIR} and {data_dir}/{MASK_DIR})")
    images, masks = _listing(image_dir), _listing(mask_dir)
    if not images and not masks:
        raise UserError(f"{data_dir}: no .png/.jpg frames in {IMAGE_DIR}/ or {MASK_DIR}/")
    for stem in sorted(images.keys() - masks.keys()):
        _bad(f"{images[stem]}: image has no mask {mask_dir / (stem + '.png')}", warn)
    for stem in sorted(masks.keys() - images.keys()):
        _bad(f"{masks[stem]}: mask has no image in {image_dir}", warn)
    return [(stem, images[stem], masks[stem]) for stem in sorted(images.keys() & masks.keys())]


def _bad(message: str, warn: Callable[[str], None] | None) -> None:
    if warn is None:
        raise UserError(message)
    warn(message)


def read_image(path: Path):
    """Open an image fully (decoding errors surface here, not later)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            return img.copy()
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as exc:
        raise UserError(f"{path}: unreadable image ({exc.__class__.__name__}: {exc})") from None


def mask_class_ids(mask) -> np.ndarray:
    """Class ids of a mask image: the red channel (single-channel and palette masks: the values)."""
    if mask.mode in ("L", "P", "I", "I;16"):
        return np.asarray(mask, dtype=np.int64)
    return np.asarray(mask.convert("RGB"), dtype=np.int64)[..., 0]


def load_frame(
    image_path: Path, mask_path: Path, size: tuple[int, int], n_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """One (image float32 H×W×3 in [0,1], mask uint8 H×W) pair, resized to ``size`` = (H, W)."""
    return frame_arrays(read_image(image_path), read_image(mask_path), mask_path, size, n_classes)


def frame_arrays(image, mask, mask_path: Path, size: tuple[int, int], n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Decoded PIL image and mask → the checked, resized arrays of ``load_frame``."""
    from PIL import Image

    height, width = size
    if image.size != mask.size:
        raise UserError(
            f"{mask_path}: mask is {mask.size[1]}x{mask.size[0]} (HxW) but its image is {image.size[1]}x{image.size[0]}"
        )
    ids = mask_class_ids(mask)
    if ids.max(initial=0) >= n_classes:
        raise UserError(f"{mask_path}: class id {int(ids.max())} out of range (n_classes={n_classes})")
    rgb = image.convert("RGB")
    if rgb.size != (width, height):
        rgb = rgb.resize((width, height), Image.BILINEAR)
    ids_img = Image.fromarray(ids.astype(np.uint8))
    if ids_img.size != (width, height):
        ids_img = ids_img.resize((width, height), Image.NEAREST)
    return np.asarray(rgb, dtype=np.float32) / 255.0, np.asarray(ids_img, dtype=np.uint8)


def split_indices(n: int, val_split: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic (train, validation) index split by seed; at least one frame on each side."""
    if not 0.0 < val_split < 1.0:
        raise UserError(f"--val-split must be between 0 and 1, got {val_split}")
    if n < 2:
        raise UserError(f"need at least 2 frames to split into train and validation, got {n}")
    order = np.random.default_rng(seed).permutation(n)
    n_val = min(max(1, round(n * val_split)), n - 1)
    return np.sort(order[n_val:]), np.sort(order[:n_val])
