"""Synthetic CARLA-layout driving scenes: the built-in default data, since none can be downloaded.

Each frame is a street seen from a car's front camera, built from a small 3-D world (flat ground,
a pinhole camera 1.4-1.7 m up, objects standing on the ground) and rasterised at the requested size:

* the ground (road, lane markings, crosswalks, sidewalks, grass) and the sky are computed per pixel
  from world coordinates, so perspective and textures (tiles, dashes) are exact;
* everything standing on it (buildings, walls, fences, hedges, trees, poles, signs,
  traffic lights, pedestrians, vehicles) is drawn far → near with Pillow into an *id* image where
  every primitive has its own id; the picture's colour and the mask's class both come from that one
  rasterisation, so labels are pixel-exact (no anti-aliasing, no resampling);
* last, per-class texture noise, shadows, global lighting (brightness, contrast, colour cast) and
  pixel noise go on the picture only.

Classes used (14 of CARLA's 23): building, fence, pedestrian, pole, roadline, road, sidewalk,
vegetation, vehicles, wall, trafficsign, sky, trafficlight, terrain. Each keeps a distinctive look
(walls are blue-grey blockwork, fences brown boards, traffic lights dark-olive structures with lit
lamps, ...) so the seed U-Net learns them in minutes on a CPU; rarer CARLA classes (guardrail,
static, ground, bridge, water, ...) are left out on purpose, as they would only drag mIoU down.

Files: ``OUT/CameraRGB/00000.png`` (RGB) and ``OUT/CameraMask/00000.png`` (RGB, class id in red,
green = blue = 0). Frame ``i`` of seed ``s`` comes from ``np.random.default_rng([s, i])``: the same
seed gives byte-identical files whatever ``count`` is.

Modules, by what they paint: ``world`` (camera, road layout, projection), ``raster`` (id rasteriser),
``sky_ground``, ``buildings``, ``street`` (trees, poles, signs, traffic lights), ``road_users``
(pedestrians, vehicles) and ``scene`` (layout, drawing order, finish).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

from exporter.classes import CARLA_CLASSES
from exporter.data.synth.labels import N_CLASSES
from exporter.data.synth.scene import _Scene
from exporter.errors import UserError
from exporter.fileio import write_bytes_atomic

__all__ = ["render_scene", "write_synthetic_dataset"]


def render_scene(rng: np.random.Generator, height: int = 96, width: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """One road scene seen from a car: (H×W×3 uint8 image, H×W uint8 class-id mask)."""
    height, width = _check_size((height, width))
    return _Scene(rng, height, width).render()


def _check_size(size) -> tuple[int, int]:
    """(height, width) as two positive ints, or UserError."""
    try:
        height, width = (int(v) for v in size)
        ok = all(float(v) == int(v) for v in size) and not any(isinstance(v, bool) for v in size)
    except (TypeError, ValueError):
        raise UserError(f"size must be two positive integers (height, width), got {size!r}") from None
    if not ok or height < 1 or width < 1:
        raise UserError(f"size must be two positive integers (height, width), got {tuple(size)!r}")
    return height, width


def _png(array: np.ndarray) -> bytes:
    """PNG bytes of an image array (compression level 6)."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def write_synthetic_dataset(out_dir, count: int, seed: int = 0, size: tuple[int, int] = (96, 128),
                            overwrite: bool = False) -> dict:
    """Write count frames in CARLA layout; returns a summary dict
    {"count", "size", "seed", "removed", "class_pixel_fraction": {name: fraction}}.

    A folder that already holds frames is refused (UserError) unless ``overwrite``: then every earlier
    frame is replaced or removed, and ``removed`` says how many files went.
    """
    if isinstance(count, bool) or not isinstance(count, int | np.integer) or count < 1:
        raise UserError(f"count must be a whole number ≥ 1, got {count!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise UserError(f"seed must be a whole number ≥ 0, got {seed!r}")
    height, width = _check_size(size)
    out = Path(out_dir)
    image_dir, mask_dir = out / "CameraRGB", out / "CameraMask"
    counts = np.zeros(N_CLASSES, np.int64)
    removed = 0
    try:
        earlier = [p for folder in (image_dir, mask_dir) if folder.is_dir() for p in folder.iterdir() if p.is_file()]
        if earlier and not overwrite:
            frames = sum(1 for p in earlier if p.parent == image_dir)
            raise UserError(f"{out_dir}: already holds {frames} frame(s) and {len(earlier) - frames} mask(s); "
                            "choose an empty folder, or --force to replace them with the synthetic set")
        image_dir.mkdir(parents=True, exist_ok=True)
        mask_dir.mkdir(parents=True, exist_ok=True)
        if not os.access(image_dir, os.W_OK) or not os.access(mask_dir, os.W_OK):
            raise PermissionError("permission denied")
        written = set()
        for index in range(int(count)):
            image, mask = render_scene(np.random.default_rng([int(seed), index]), height, width)
            counts += np.bincount(mask.ravel(), minlength=N_CLASSES)[:N_CLASSES]
            mask_rgb = np.zeros((height, width, 3), np.uint8)
            mask_rgb[..., 0] = mask
            write_bytes_atomic(image_dir / f"{index:05d}.png", _png(image))
            write_bytes_atomic(mask_dir / f"{index:05d}.png", _png(mask_rgb))
            written.add(f"{index:05d}.png")
        for stale in earlier:  # frames of an earlier data set that this one did not rewrite
            if stale.name not in written and stale.exists():
                stale.unlink()
                removed += 1
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise UserError(f"{out_dir}: cannot write: {reason}") from exc
    total = counts.sum()
    return {
        "count": int(count),
        "size": [height, width],
        "seed": int(seed),
        "removed": removed,
        "class_pixel_fraction": {name: float(counts[i] / total) for i, name in enumerate(CARLA_CLASSES)},
    }
