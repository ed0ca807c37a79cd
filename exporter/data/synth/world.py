"""The frame's small 3-D world: a random camera and road layout, perspective projection, and the
vertical planes (with texture coordinates) that everything standing on the ground is built from.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw

from exporter.data.synth.raster import _Parts


class _World:
    """Camera and road layout of one frame (metres: X to the right of the camera, z ahead of it)."""

    def __init__(self, rng: np.random.Generator, height: int, width: int):
        """Draw the scene kind, weather, camera and road layout from ``rng`` (in this order)."""
        self.rng = rng
        self.h, self.w = height, width
        self.unit = min(height / 96.0, width / 128.0)
        self.rgb = np.zeros((height, width, 3), np.float32)
        self.cls = np.zeros((height, width), np.uint8)
        self.shadow = Image.new("L", (width, height), 0)
        self.shadow_draw = ImageDraw.Draw(self.shadow)

        r = rng
        self.kind = str(r.choice(["city", "suburb", "open"], p=[0.5, 0.33, 0.17]))
        self.weather = str(r.choice(["clear", "overcast", "dusk"], p=[0.5, 0.3, 0.2]))
        self.f = width * r.uniform(0.75, 0.95)
        self.cam_h = r.uniform(1.4, 1.7)
        self.y_h = height * r.uniform(0.36, 0.46)
        self.x_v = width * (0.5 + r.uniform(-0.1, 0.1))
        self.z_near = self.f * self.cam_h / max(height - self.y_h, 1e-3)

        # Road layout (metres, X to the right of the camera, z ahead of it).
        self.lane_w = r.uniform(3.1, 3.7)
        self.n_own = int(r.choice([1, 2], p=[0.6, 0.4]))
        self.n_opp = int(r.choice([1, 2], p=[0.7, 0.3])) if self.kind != "open" else 1
        own = int(r.integers(0, self.n_own))
        self.x_centre = -(own + 0.5) * self.lane_w + r.uniform(-0.35, 0.35)
        lanes_r = self.x_centre + self.n_own * self.lane_w
        lanes_l = self.x_centre - self.n_opp * self.lane_w
        self.parking = {s: self.kind == "city" and r.random() < 0.5 for s in (-1, 1)}
        self.road_r = lanes_r + (2.3 if self.parking[1] else 0.0)
        self.road_l = lanes_l - (2.3 if self.parking[-1] else 0.0)
        self.lanes_r, self.lanes_l = lanes_r, lanes_l
        if self.kind == "city":
            walk = {s: r.uniform(2.5, 5.0) for s in (-1, 1)}
        elif self.kind == "suburb":
            walk = {s: r.uniform(1.6, 3.0) for s in (-1, 1)}
        else:
            walk = {s: (r.uniform(1.5, 2.5) if r.random() < 0.35 else 0.0) for s in (-1, 1)}
        self.walk = walk
        self.edge = {1: self.road_r, -1: -self.road_l}  # |X| of the road edge per side
        self.out = {s: self.edge[s] + walk[s] for s in (-1, 1)}  # |X| of the sidewalk's outer edge
        self.cross = None
        p_cross = {"city": 0.5, "suburb": 0.25, "open": 0.0}[self.kind]
        if r.random() < p_cross:
            self.cross = (r.uniform(14.0, 40.0), r.uniform(9.0, 14.0))  # (near z, width)
        self.crosswalk = None
        if self.cross is not None and r.random() < 0.75:
            self.crosswalk = (self.cross[0] - r.uniform(3.5, 4.5), self.cross[0] - 0.5)
        elif self.kind == "city" and r.random() < 0.2:
            zc = r.uniform(8.0, 30.0)
            self.crosswalk = (zc, zc + r.uniform(3.0, 4.0))

    # -- helpers -----------------------------------------------------------------------------------
    def px(self, x, z):
        """Image column of world point (X, z)."""
        return self.x_v + self.f * x / z

    def py(self, v, z):
        """Image row of height v above the ground at depth z."""
        return self.y_h + self.f * (self.cam_h - v) / z

    def jitter(self, colour, amount: float = 12.0, scale: float = 0.08) -> np.ndarray:
        """Colour with a random overall brightness and small per-channel shifts."""
        base = np.asarray(colour, np.float32) * self.rng.uniform(1 - scale, 1 + scale)
        return np.clip(base + self.rng.normal(0, amount / 2.5, 3), 0, 255)

    def min_px(self, pixels: float) -> float:
        """A minimum on-screen size in pixels at 96×128, scaled to this frame (never below 1 px)."""
        return max(1.0, pixels * self.unit)

    def in_cross(self, z0: float, z1: float) -> bool:
        """Whether depths z0..z1 overlap the crossing street."""
        if self.cross is None:
            return False
        return z1 > self.cross[0] and z0 < self.cross[0] + self.cross[1]


    # -- vertical planes ---------------------------------------------------------------------------
    def plane_side(self, parts: _Parts, x: float, z0: float, z1: float, heights: tuple[float, float],
                   colour, label: int, texture: Callable | None = None) -> None:
        """A vertical rectangle parallel to the road (constant X) from depth z0 to z1, heights v0..v1."""
        v0, v1 = heights
        z0 = max(z0, 0.5)
        if z1 <= z0:
            return
        pts = [(self.px(x, z0), self.py(v0, z0)), (self.px(x, z1), self.py(v0, z1)),
               (self.px(x, z1), self.py(v1, z1)), (self.px(x, z0), self.py(v1, z0))]
        parts.polygon(pts, colour, label, texture)

    def plane_front(self, parts: _Parts, x0: float, x1: float, z: float, heights: tuple[float, float],
                    colour, label: int, texture: Callable | None = None) -> None:
        """A vertical rectangle facing the camera (constant z) from X x0 to x1, heights v0..v1."""
        v0, v1 = heights
        if z < 0.5:
            return
        pts = [(self.px(x0, z), self.py(v0, z)), (self.px(x1, z), self.py(v0, z)),
               (self.px(x1, z), self.py(v1, z)), (self.px(x0, z), self.py(v1, z))]
        parts.polygon(pts, colour, label, texture)

    def side_coords(self, x: float, z0: float, z1: float):
        """Texture coordinates on a constant-X plane: (along, height) in metres per pixel."""
        def coords(rows, cols):
            dx = cols - self.x_v
            valid = (np.sign(dx) == np.sign(x)) & (dx != 0)  # edge pixels can straddle the vanishing point
            z = np.clip(np.where(valid, self.f * x / np.where(valid, dx, 1.0), z1), z0, z1)
            v = self.cam_h - (rows - self.y_h) * z / self.f
            return z - z0, v
        return coords

    def front_coords(self, x_corner: float, z: float):
        """Texture coordinates on a constant-z plane: (distance from x_corner, height) in metres per pixel."""
        def coords(rows, cols):
            x = (cols - self.x_v) * z / self.f
            v = self.cam_h - (rows - self.y_h) * z / self.f
            return np.abs(x - x_corner), v
        return coords
