"""Data folders in CARLA's layout (DIR/CameraRGB/*.png + DIR/CameraMask/*.png) or your own.

A mask's class id is its red channel for an RGB mask (CARLA's), the value for a single-channel mask, and the
palette index for a palette PNG (as Pascal VOC stores it). ``DataFormat`` says how a folder is read: its image and
mask folder names, the model's input size and class count, and an ignore value (e.g. 255, "don't care") that
training, metrics, calibration and drift leave out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from exporter.errors import UserError
from exporter.parameters import INPUT_SIZE, MAX_CLASSES, N_CLASSES

IMAGE_DIR = "CameraRGB"
MASK_DIR = "CameraMask"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class DataFormat:
    """How a data folder is read: image and mask folders, the size frames are resized to, the classes, and the
    mask value to ignore (None: every pixel counts)."""

    size: tuple[int, int] = INPUT_SIZE
    n_classes: int = N_CLASSES
    images: str = IMAGE_DIR
    masks: str = MASK_DIR
    ignore_index: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", tuple(int(v) for v in self.size))
        if not 2 <= self.n_classes <= MAX_CLASSES:
            raise UserError(f"--n-classes: expected 2 to {MAX_CLASSES} (masks hold 8-bit class ids), got "
                            f"{self.n_classes}")
        if self.ignore_index is not None and not 0 <= self.ignore_index <= 255:
            raise UserError(f"--ignore-index: expected a mask value 0 to 255, got {self.ignore_index}")
        for option, name in (("--images-dir", self.images), ("--masks-dir", self.masks)):
            if not name or "/" in name or "\\" in name or name in (".", ".."):
                raise UserError(f"{option}: expected a folder name inside the data folder, got {name!r}")
        if self.images == self.masks:
            raise UserError(f"--images-dir and --masks-dir are both {self.images!r}")

    def check_ids(self, ids: np.ndarray, mask_path: Path) -> None:
        """A class id ≥ the class count that is not the ignore value is an error naming the mask."""
        wrong = ids >= self.n_classes
        if self.ignore_index is not None:
            wrong &= ids != self.ignore_index
        if wrong.any():
            ignore = "" if self.ignore_index is None else f", ignore value {self.ignore_index}"
            raise UserError(f"{mask_path}: class id {int(ids[wrong].max())} out of range "
                            f"(n_classes={self.n_classes}{ignore})")

    def valid(self, labels: np.ndarray) -> np.ndarray | None:
        """Which label pixels count (None: all of them)."""
        return None if self.ignore_index is None else labels != self.ignore_index

    def layout(self) -> dict:
        """What config.json keeps of it (the size and classes are the model's own)."""
        return {"images": self.images, "masks": self.masks, "ignore_index": self.ignore_index}


@dataclass
class Frames:
    """Frames resized to the model input: images float32 N×H×W×3 in [0, 1], masks uint8 N×H×W."""

    images: np.ndarray
    masks: np.ndarray
    stems: list[str]
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.stems)


CARLA = DataFormat()  # CameraRGB/ + CameraMask/, the seed model's input size and CARLA's 23 classes


def _listing(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}


def find_pairs(data_dir: str | Path, warn: Callable[[str], None] | None = None,
               fmt: DataFormat = CARLA) -> list[tuple[str, Path, Path]]:
    """(stem, image, mask) for every stem with both files; an unpaired file is an error unless ``warn``."""
    data_dir = Path(data_dir)
    image_dir, mask_dir = data_dir / fmt.images, data_dir / fmt.masks
    for folder in (data_dir, image_dir, mask_dir):
        if not folder.is_dir():
            raise UserError(f"{folder}: folder not found (expected {data_dir}/{fmt.images} and "
                            f"{data_dir}/{fmt.masks})")
    images, masks = _listing(image_dir), _listing(mask_dir)
    if not images and not masks:
        raise UserError(f"{data_dir}: no .png/.jpg frames in {fmt.images}/ or {fmt.masks}/")
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
    """Class ids of a mask image: the red channel of an RGB mask; the value of a single-channel mask; the palette
    index of a palette mask."""
    if mask.mode in ("L", "P", "I", "I;16"):
        return np.asarray(mask, dtype=np.int64)
    return np.asarray(mask.convert("RGB"), dtype=np.int64)[..., 0]


def load_frame(image_path: Path, mask_path: Path, fmt: DataFormat) -> tuple[np.ndarray, np.ndarray]:
    """One (image float32 H×W×3 in [0,1], mask uint8 H×W) pair, resized to ``fmt.size`` = (H, W)."""
    return frame_arrays(read_image(image_path), read_image(mask_path), mask_path, fmt)


def frame_arrays(image, mask, mask_path: Path, fmt: DataFormat) -> tuple[np.ndarray, np.ndarray]:
    """Decoded PIL image and mask → the checked, resized arrays of ``load_frame``."""
    from PIL import Image

    height, width = fmt.size
    if image.size != mask.size:
        raise UserError(
            f"{mask_path}: mask is {mask.size[1]}x{mask.size[0]} (HxW) but its image is {image.size[1]}x{image.size[0]}"
        )
    ids = mask_class_ids(mask)
    fmt.check_ids(ids, mask_path)
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
