"""Render 8 synthetic driving scenes and save a preview grid: each picture above its colourised mask.

Usage: python benchmarks/synth_preview.py [OUT.png [SEED]] (default docs/synth_examples.png, seed 0).
Frames are rendered at the data set's default 96×128, shown twice as large (nearest neighbour) and
stored as a 256-colour PNG so the file stays small (< 150 KB).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

from exporter.classes import colorize
from exporter.data.synth import render_scene

FRAMES = 8
COLUMNS = 4
SIZE = (96, 128)
GAP = 2
ZOOM = 2


def preview(seed: int = 0) -> np.ndarray:
    """H×W×3 grid: COLUMNS frames per row, each frame's picture stacked over its colourised mask."""
    height, width = SIZE
    rows = -(-FRAMES // COLUMNS)
    cell_h, cell_w = 2 * height + GAP, width + GAP
    grid = np.full((rows * cell_h + GAP, COLUMNS * cell_w + GAP, 3), 255, np.uint8)
    for index in range(FRAMES):
        image, mask = render_scene(np.random.default_rng([seed, index]), height, width)
        top = GAP + (index // COLUMNS) * cell_h
        left = GAP + (index % COLUMNS) * cell_w
        grid[top:top + height, left:left + width] = image
        grid[top + height:top + 2 * height, left:left + width] = colorize(mask)
    return grid


def main(argv: list[str]) -> None:
    out = Path(argv[1] if len(argv) > 1 else "docs/synth_examples.png")
    seed = int(argv[2]) if len(argv) > 2 else 0
    out.parent.mkdir(parents=True, exist_ok=True)
    grid = Image.fromarray(preview(seed))
    grid = grid.resize((grid.width * ZOOM, grid.height * ZOOM), Image.Resampling.NEAREST)
    grid = grid.quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    grid.save(out, optimize=True)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KB)")


if __name__ == "__main__":
    main(sys.argv)
