"""What lines the street: buildings with windowed facades (and houses with roofs), walls, fences, hedges,
and the distant skyline, all drawn as textured vertical planes.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from exporter.data.synth.labels import BUILDING, FENCE, VEGETATION, WALL
from exporter.data.synth.raster import _hash01, _Parts
from exporter.data.synth.world import _World

_FACADE_COLOURS = (
    (175, 165, 148), (190, 175, 145), (150, 78, 58), (115, 62, 50), (205, 200, 190), (132, 108, 88),
    (205, 188, 135), (175, 130, 95), (185, 150, 130), (160, 145, 125),
)


class _Buildings(_World):
    """Paints buildings, walls, fences, hedges and the skyline."""

    def facade_colour(self, amount: float = 12.0, scale: float = 0.08) -> np.ndarray:
        """A jittered facade colour from the palette."""
        return self.jitter(_FACADE_COLOURS[int(self.rng.integers(len(_FACADE_COLOURS)))], amount, scale)

    def facade_texture(self, coords, colour, shade: float, storeys: dict) -> Callable:
        """Facade with rows of windows (and a shop front at street level)."""
        colour = np.asarray(colour, np.float32) * shade
        glass = storeys["glass"] * shade
        lit = storeys["lit"]

        def texture(rows, cols):
            u, v = coords(rows, cols)
            ground = storeys["ground"]
            floor = storeys["floor"]
            su = u - storeys["offset"]
            col_i = np.floor(su / storeys["spacing"])
            in_col = (su - col_i * storeys["spacing"]) < storeys["win_w"]
            vf = v - ground
            row_i = np.floor(vf / floor)
            in_row = ((vf - row_i * floor) > storeys["sill"]) & ((vf - row_i * floor) < storeys["sill"] + storeys["win_h"])
            windows = in_col & in_row & (vf > 0) & (v < storeys["height"] - 0.6)
            if storeys["shop"]:
                shop_u = (u % storeys["shop_spacing"]) > 0.35
                windows |= shop_u & (v > 0.35) & (v < ground - 0.7)
            out = np.empty((rows.size, 3), np.float32)
            out[:] = colour
            bands = (np.abs(vf - np.round(vf / floor) * floor) < 0.12) & (vf > -0.2)
            out[bands] *= 0.88
            if windows.any():
                pick = _hash01(col_i[windows], row_i[windows], storeys["salt"])
                win = glass[None, :] * (0.8 + 0.4 * pick[:, None])
                if lit > 0:
                    on = pick < lit
                    win[on] = np.asarray((235, 200, 120), np.float32) * (0.85 + 0.3 * pick[on, None])
                out[windows] = win
            return out, np.ones(rows.size, bool)
        return texture

    def building(self, parts: _Parts, side: int, z0: float, z1: float, setback: float,
                 size: tuple[float, float], colour, roof: bool = False) -> None:
        """A block (height, depth in metres) set back from the sidewalk; a pitched roof for houses."""
        height, depth = size
        x_near = side * (self.out[side] + setback)
        x_far = x_near + side * depth
        r = self.rng
        glass = self.jitter(r.choice([(45, 55, 75), (70, 85, 105), (130, 160, 190), (30, 35, 40)]), 10)
        storeys = {
            "glass": glass, "floor": r.uniform(2.9, 3.6), "ground": r.uniform(3.2, 4.5),
            "sill": r.uniform(0.7, 1.0), "win_h": r.uniform(1.2, 1.7), "spacing": r.uniform(2.2, 3.6),
            "offset": r.uniform(0.3, 1.2), "height": height,
            "shop": self.kind == "city" and r.random() < 0.6, "shop_spacing": r.uniform(2.5, 5.0),
            "lit": r.uniform(0.1, 0.5) if self.weather == "dusk" else 0.0,
            "salt": int(r.integers(0, 1 << 16)),
        }
        storeys["win_w"] = storeys["spacing"] * r.uniform(0.4, 0.7)
        if self.kind == "suburb":
            storeys["ground"] = 0.0
        side_shade, front_shade = (1.0, r.uniform(0.7, 0.85)) if r.random() < 0.5 else (r.uniform(0.75, 0.9), 1.0)
        if z0 > 1.0:
            tex = self.facade_texture(self.front_coords(x_near, z0), colour, front_shade, storeys)
            self.plane_front(parts, x_near, x_far, z0, (0.0, height), colour, BUILDING, tex)
            if roof:
                peak = height + depth / 2 * r.uniform(0.5, 0.9)
                mid = (x_near + x_far) / 2
                pts = [(self.px(x_near, z0), self.py(height, z0)), (self.px(x_far, z0), self.py(height, z0)),
                       (self.px(mid, z0), self.py(peak, z0))]
                parts.polygon(pts, np.asarray(colour) * front_shade * 0.95, BUILDING)
        if roof:
            roof_col = self.jitter(r.choice([(120, 50, 40), (70, 65, 65), (95, 70, 55), (60, 60, 75)]), 10)
            peak = height + depth / 2 * r.uniform(0.5, 0.9)
            mid = x_near + side * depth / 2
            za, zb = max(z0, 0.5), z1
            pts = [(self.px(x_near, za), self.py(height, za)), (self.px(x_near, zb), self.py(height, zb)),
                   (self.px(mid, zb), self.py(peak, zb)), (self.px(mid, za), self.py(peak, za))]
            parts.polygon(pts, roof_col, BUILDING)
        tex = self.facade_texture(self.side_coords(x_near, max(z0, 0.5), z1), colour, side_shade, storeys)
        self.plane_side(parts, x_near, z0, z1, (0.0, height), colour, BUILDING, tex)

    def wall(self, parts: _Parts, side: int, z0: float, z1: float, height: float, offset: float = 0.0) -> None:
        """A blue-grey blockwork wall along the sidewalk's outer edge."""
        r = self.rng
        x = side * (self.out[side] + offset)
        colour = self.jitter(r.choice([(118, 120, 150), (100, 104, 135), (132, 134, 160)]), 8)
        block_h, block_w = r.uniform(0.3, 0.6), r.uniform(0.6, 1.4)
        coords = self.side_coords(x, max(z0, 0.5), z1)

        def texture(rows, cols):
            u, v = coords(rows, cols)
            course = np.floor(v / block_h)
            shift = (course % 2) * block_w / 2
            joint = ((v % block_h) < 0.05) | (((u + shift) % block_w) < 0.06)
            out = np.empty((rows.size, 3), np.float32)
            out[:] = colour
            out[joint] *= 0.72
            out[v > height - 0.15] *= 1.15
            return out, np.ones(rows.size, bool)
        self.plane_side(parts, x, z0, z1, (0.0, height), colour, WALL, texture)

    def fence(self, parts: _Parts, side: int, z0: float, z1: float, height: float, offset: float = 0.1) -> None:
        """A brown board fence with rails and posts along the sidewalk's outer edge."""
        r = self.rng
        x = side * (self.out[side] + offset)
        colour = self.jitter(r.choice([(125, 80, 50), (145, 100, 60), (100, 62, 42)]), 10)
        board = r.uniform(0.1, 0.2)
        coords = self.side_coords(x, max(z0, 0.5), z1)

        def texture(rows, cols):
            u, v = coords(rows, cols)
            out = np.empty((rows.size, 3), np.float32)
            out[:] = colour
            out[(u % board) < 0.035] *= 0.55
            rails = (np.abs(v - height * 0.25) < 0.06) | (np.abs(v - height * 0.8) < 0.06)
            out[rails] *= 0.8
            post = (u % 2.5) < 0.12
            out[post] *= 0.7
            return out, np.ones(rows.size, bool)
        self.plane_side(parts, x, z0, z1, (0.0, height), colour, FENCE, texture)

    def hedge(self, parts: _Parts, side: int, z0: float, z1: float, height: float, offset: float = 0.3) -> None:
        """A flat green hedge (leaf texture comes later with the class textures)."""
        x = side * (self.out[side] + offset)
        colour = self.jitter((50, 95, 40), 10, 0.15)
        self.plane_side(parts, x, z0, z1, (0.0, height), colour, VEGETATION)

    def building_front_block(self, parts: _Parts, z: float, colour) -> None:
        """A wide block facing the camera at depth z, closing the street far away."""
        r = self.rng
        glass = self.jitter((60, 70, 90), 10)
        storeys = {"glass": glass, "floor": 3.2, "ground": 4.0, "sill": 0.8, "win_h": 1.5,
                   "spacing": r.uniform(2.5, 3.5), "offset": 0.5, "height": 60.0, "shop": False,
                   "shop_spacing": 3.0, "lit": 0.3 if self.weather == "dusk" else 0.0,
                   "salt": int(r.integers(0, 1 << 16))}
        storeys["win_w"] = storeys["spacing"] * 0.5
        tex = self.facade_texture(self.front_coords(-60.0, z), colour, 0.95, storeys)
        self.plane_front(parts, -60.0, 60.0, z, (0.0, r.uniform(12.0, 45.0)), colour, BUILDING, tex)

    def skyline(self, parts: _Parts) -> None:
        """Distant buildings (city) or a tree line (elsewhere) standing on the horizon."""
        r, w = self.rng, self.w
        bottom = self.y_h + 1.0
        if self.kind == "city":
            haze = np.asarray((150, 155, 165), np.float32)
            x = r.uniform(-0.1, 0.0) * w
            while x < w:
                bw = r.uniform(0.04, 0.14) * w
                bh = r.uniform(0.03, 0.2) * self.h
                colour = haze * r.uniform(0.7, 1.05) + r.normal(0, 6, 3)
                parts.rect(x, bottom - bh - 1.0, x + bw, bottom, colour, BUILDING)
                x += bw * r.uniform(0.6, 1.1)
        else:
            green = self.jitter((60, 90, 60), 10)
            x = r.uniform(-0.05, 0.0) * w
            while x < w:
                rad = r.uniform(0.015, 0.05) * w
                rh = r.uniform(0.5, 1.4) * rad
                parts.ellipse(x, bottom - rh * 0.3, rad, rh, green * r.uniform(0.85, 1.1), VEGETATION)
                x += rad * r.uniform(0.8, 1.6)
            parts.rect(-1.0, bottom - 1.5, w + 1.0, bottom, green, VEGETATION)
