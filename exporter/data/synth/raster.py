"""The id rasteriser every painter draws with, plus the hash and smooth-noise helpers for textures.

One id per primitive keeps the picture's colour and the mask's class from the same rasterisation.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw


def _hash01(a: np.ndarray, b: np.ndarray, salt: int) -> np.ndarray:
    """Cheap deterministic per-cell random number in [0, 1) from two integer index arrays."""
    h = (a.astype(np.int64) * 73856093) ^ (b.astype(np.int64) * 19349663) ^ (salt * 83492791)
    return ((h & 0xFFFF) / 65536.0).astype(np.float32)


class _Parts:
    """One drawing pass: every primitive gets its own id in an int32 Pillow image.

    ``commit`` turns ids into colours and classes (or into a per-pixel texture for textured parts), so
    the picture and the label come from the same rasterisation and always agree.
    """

    def __init__(self, height: int, width: int):
        self.image = Image.new("I", (width, height), 0)
        self.draw = ImageDraw.Draw(self.image)
        self.colours: list[tuple[float, float, float]] = [(0.0, 0.0, 0.0)]
        self.labels: list[int] = [0]
        self.textures: dict[int, Callable] = {}

    def _new(self, colour, label: int, texture: Callable | None) -> int:
        self.colours.append(tuple(float(c) for c in colour))
        self.labels.append(int(label))
        part = len(self.labels) - 1
        if texture is not None:
            self.textures[part] = texture
        return part

    def polygon(self, points, colour, label: int, texture: Callable | None = None) -> None:
        """Filled polygon; points in continuous image coordinates (pixel i spans [i, i+1))."""
        part = self._new(colour, label, texture)
        self.draw.polygon([(round(x - 0.5, 3), round(y - 0.5, 3)) for x, y in points], fill=part)

    def rect(self, x0: float, y0: float, x1: float, y1: float, colour, label: int) -> None:
        """Axis-aligned box covering the pixels whose centres fall in [x0, x1) × [y0, y1), at least 1 px."""
        ix0, ix1 = _span(x0, x1)
        iy0, iy1 = _span(y0, y1)
        part = self._new(colour, label, None)
        self.draw.rectangle([ix0, iy0, ix1, iy1], fill=part)

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, colour, label: int) -> None:
        """Filled ellipse (at least one pixel)."""
        ix0, ix1 = _span(cx - rx, cx + rx)
        iy0, iy1 = _span(cy - ry, cy + ry)
        part = self._new(colour, label, None)
        self.draw.ellipse([ix0, iy0, ix1, iy1], fill=part)

    def commit(self, rgb: np.ndarray, cls: np.ndarray) -> None:
        """Paint the drawn parts onto ``rgb``/``cls`` (later parts already cover earlier ones)."""
        if len(self.labels) == 1:
            return
        ids = np.asarray(self.image)
        flat = ids > 0
        if self.textures:
            flat &= ~np.isin(ids, list(self.textures))
        colours = np.asarray(self.colours, np.float32)
        labels = np.asarray(self.labels, np.uint8)
        rgb[flat] = colours[ids[flat]]
        cls[flat] = labels[ids[flat]]
        for part, texture in self.textures.items():
            rows, cols = np.nonzero(ids == part)
            if rows.size == 0:
                continue
            colour, solid = texture(rows + 0.5, cols + 0.5)
            rgb[rows[solid], cols[solid]] = colour[solid]
            cls[rows[solid], cols[solid]] = labels[part]


def _span(a: float, b: float) -> tuple[int, int]:
    """Inclusive pixel range whose centres lie in [a, b); never empty."""
    lo, hi = int(np.ceil(a - 0.5)), int(np.ceil(b - 0.5)) - 1
    if hi < lo:
        lo = hi = int(np.floor((a + b) / 2))
    return lo, hi



def _smooth_noise(rng: np.random.Generator, height: int, width: int, cell: float) -> np.ndarray:
    """Smooth noise in [0, 1]: a coarse random grid, bilinearly upsampled (picture only, never labels)."""
    gh, gw = max(2, int(np.ceil(height / cell)) + 1), max(2, int(np.ceil(width / cell)) + 1)
    grid = rng.random((gh, gw), dtype=np.float32)
    return np.asarray(Image.fromarray(grid).resize((width, height), Image.Resampling.BILINEAR))
