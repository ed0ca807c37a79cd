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
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from exporter.classes import CARLA_CLASSES, CLASS_ID
from exporter.errors import UserError
from exporter.fileio import write_bytes_atomic

__all__ = ["render_scene", "write_synthetic_dataset"]

SKY = CLASS_ID["sky"]
BUILDING = CLASS_ID["building"]
FENCE = CLASS_ID["fence"]
PEDESTRIAN = CLASS_ID["pedestrian"]
POLE = CLASS_ID["pole"]
ROADLINE = CLASS_ID["roadline"]
ROAD = CLASS_ID["road"]
SIDEWALK = CLASS_ID["sidewalk"]
VEGETATION = CLASS_ID["vegetation"]
VEHICLES = CLASS_ID["vehicles"]
WALL = CLASS_ID["wall"]
TRAFFICSIGN = CLASS_ID["trafficsign"]
TRAFFICLIGHT = CLASS_ID["trafficlight"]
TERRAIN = CLASS_ID["terrain"]

N_CLASSES = len(CARLA_CLASSES)

# Per-class multiplicative texture noise (fine: per pixel, coarse: blotches, leaf: 2-px clumps).
_FINE = np.zeros(N_CLASSES, np.float32)
_COARSE = np.zeros(N_CLASSES, np.float32)
_LEAF = np.zeros(N_CLASSES, np.float32)
for _cls, _fine, _coarse, _leaf in (
    (SKY, 0.008, 0.02, 0.0), (BUILDING, 0.03, 0.05, 0.0), (ROAD, 0.05, 0.07, 0.0),
    (ROADLINE, 0.04, 0.04, 0.0), (SIDEWALK, 0.035, 0.05, 0.0), (VEGETATION, 0.12, 0.14, 0.20),
    (TERRAIN, 0.07, 0.12, 0.05), (VEHICLES, 0.02, 0.02, 0.0), (PEDESTRIAN, 0.03, 0.0, 0.0),
    (POLE, 0.02, 0.0, 0.0), (TRAFFICSIGN, 0.02, 0.0, 0.0), (TRAFFICLIGHT, 0.02, 0.0, 0.0),
    (FENCE, 0.04, 0.04, 0.0), (WALL, 0.04, 0.06, 0.0),
):
    _FINE[_cls], _COARSE[_cls], _LEAF[_cls] = _fine, _coarse, _leaf
_GROUND = np.zeros(N_CLASSES, bool)
_GROUND[[ROAD, ROADLINE, SIDEWALK, TERRAIN]] = True

_CAR_COLOURS = (
    (225, 225, 222), (235, 235, 235), (28, 28, 30), (45, 45, 50), (165, 168, 172), (120, 122, 128),
    (170, 25, 25), (120, 15, 20), (25, 55, 140), (20, 35, 80), (30, 80, 45), (215, 175, 30),
    (200, 90, 20), (95, 70, 50), (90, 140, 190),
)
_FACADE_COLOURS = (
    (175, 165, 148), (190, 175, 145), (150, 78, 58), (115, 62, 50), (205, 200, 190), (132, 108, 88),
    (205, 188, 135), (175, 130, 95), (185, 150, 130), (160, 145, 125),
)
_SHIRT_COLOURS = (
    (200, 30, 30), (30, 60, 160), (240, 240, 235), (25, 25, 28), (40, 120, 60), (230, 200, 40),
    (120, 40, 120), (230, 110, 30), (110, 110, 115), (60, 160, 200), (150, 90, 60),
)
_TROUSER_COLOURS = ((30, 35, 60), (25, 25, 28), (70, 70, 75), (160, 140, 100), (40, 55, 95), (90, 60, 40))
_SKIN_COLOURS = ((235, 195, 160), (200, 150, 110), (150, 100, 70), (95, 65, 45))


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


class _Scene:
    """One frame: camera, road layout, objects; ``render`` returns (image, mask)."""

    def __init__(self, rng: np.random.Generator, height: int, width: int):
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
        return self.x_v + self.f * x / z

    def py(self, v, z):
        return self.y_h + self.f * (self.cam_h - v) / z

    def jitter(self, colour, amount: float = 12.0, scale: float = 0.08) -> np.ndarray:
        """Colour with a random overall brightness and small per-channel shifts."""
        base = np.asarray(colour, np.float32) * self.rng.uniform(1 - scale, 1 + scale)
        return np.clip(base + self.rng.normal(0, amount / 2.5, 3), 0, 255)

    def min_px(self, pixels: float) -> float:
        """A minimum on-screen size in pixels at 96×128, scaled to this frame (never below 1 px)."""
        return max(1.0, pixels * self.unit)

    def in_cross(self, z0: float, z1: float) -> bool:
        if self.cross is None:
            return False
        return z1 > self.cross[0] and z0 < self.cross[0] + self.cross[1]

    # -- sky and ground ----------------------------------------------------------------------------
    def paint_sky(self) -> None:
        r, h, w = self.rng, self.h, self.w
        if self.weather == "clear":
            top = self.jitter((55, 105, 200), 20)
            low = self.jitter((175, 205, 240), 12)
        elif self.weather == "overcast":
            g = r.uniform(140, 185)
            top = self.jitter((g, g + 3, g + 10), 8)
            low = self.jitter((g + 35, g + 37, g + 40), 6)
        else:
            top = self.jitter((80, 85, 150), 15)
            low = self.jitter((245, 150, 90), 15)
        t = np.clip((np.arange(h, dtype=np.float32) + 0.5) / max(self.y_h, 1.0), 0, 1) ** r.uniform(1.2, 2.2)
        self.rgb[:] = (top[None, :] * (1 - t[:, None]) + low[None, :] * t[:, None])[:, None, :]
        if self.weather != "dusk" and r.random() < 0.7:  # clouds: soft blotches, lighter
            clouds = _smooth_noise(r, h, w, cell=max(3.0, w / 10))
            amount = np.clip(clouds - r.uniform(0.0, 0.8), 0, None)[..., None] * r.uniform(0.3, 0.6)
            self.rgb[:] = self.rgb * (1 - np.minimum(amount, 0.8)) + 235 * np.minimum(amount, 0.8)
        self.cls[:] = SKY

    def paint_ground(self) -> None:
        r, h, w = self.rng, self.h, self.w
        rows = np.arange(h, dtype=np.float32) + 0.5
        first = int(np.searchsorted(rows, self.y_h, side="right"))
        if first >= h:
            return
        z = (self.f * self.cam_h / (rows[first:] - self.y_h))[:, None]
        x = (np.arange(w, dtype=np.float32) + 0.5 - self.x_v)[None, :] * z / self.f
        shape = (h - first, w)
        cls = np.full(shape, TERRAIN, np.uint8)

        road_col = self.jitter((78, 78, 82), 10, 0.18)
        line_white = self.jitter((228, 228, 222), 8, 0.06)
        line_yellow = self.jitter((225, 185, 45), 10, 0.06)
        walk_col = self.jitter(r.choice([(165, 162, 158), (180, 170, 160), (172, 140, 130)]), 10, 0.1)
        curb_col = np.clip(walk_col * 1.12, 0, 255)
        grass = self.jitter(r.choice([(100, 128, 55), (120, 135, 65), (90, 120, 60)]), 12, 0.1)

        in_cross = np.zeros(shape, bool)
        if self.cross is not None:
            zc, wc = self.cross
            in_cross = np.broadcast_to((z >= zc) & (z <= zc + wc), shape)
        road = (x >= self.road_l) & (x <= self.road_r)
        walk_r = (x > self.road_r) & (x <= self.out[1]) & ~in_cross
        walk_l = (x < self.road_l) & (x >= -self.out[-1]) & ~in_cross
        cls[walk_r | walk_l] = SIDEWALK
        cls[road | (in_cross & ~walk_r & ~walk_l)] = ROAD
        rgb = np.empty((*shape, 3), np.float32)
        rgb[:] = grass
        rgb[cls == ROAD] = road_col
        sidewalk = cls == SIDEWALK
        if sidewalk.any():
            tile = r.uniform(0.5, 1.0)
            across = np.where(x > 0, x - self.road_r, -self.road_l - x)
            joint = ((np.broadcast_to(z, shape) % tile) < 0.06) | ((across % tile) < 0.06)
            curb = across < 0.3
            col = np.where(joint[..., None], walk_col * 0.82, walk_col)
            col = np.where(curb[..., None], curb_col, col)
            rgb[sidewalk] = col[sidewalk]

        # Lane markings, in world coordinates so dashes shrink with distance.
        marks = np.zeros(shape, bool)
        yellow = np.zeros(shape, bool)
        lw = r.uniform(0.14, 0.22)
        zz = np.broadcast_to(z, shape)
        phase = r.uniform(0, 9)
        dash = ((zz + phase) % r.uniform(7.0, 10.0)) < r.uniform(2.5, 3.5)
        centre = self.x_centre
        if self.kind == "open" or r.random() < 0.5:  # double solid yellow centre line
            yellow |= (np.abs(x - centre - 0.14) < lw / 2) | (np.abs(x - centre + 0.14) < lw / 2)
        elif r.random() < 0.5:
            marks |= (np.abs(x - centre) < lw / 2) & dash
        else:
            yellow |= (np.abs(x - centre) < lw / 2) & dash
        for j in range(1, self.n_own):
            marks |= (np.abs(x - centre - j * self.lane_w) < lw / 2) & dash
        for j in range(1, self.n_opp):
            marks |= (np.abs(x - centre + j * self.lane_w) < lw / 2) & dash
        if self.kind == "open" or r.random() < 0.6:  # solid edge lines
            marks |= np.abs(x - (self.lanes_r - 0.25)) < lw / 2
            marks |= np.abs(x - (self.lanes_l + 0.25)) < lw / 2
        if self.crosswalk is not None:
            z0, z1 = self.crosswalk
            stripe = ((x - self.road_l) % 1.0) < 0.5
            marks |= (zz >= z0) & (zz <= z1) & stripe
            yellow &= ~((zz >= z0) & (zz <= z1))
            if self.cross is not None:  # stop line across our lanes
                marks |= (zz >= z0 - 1.0) & (zz <= z0 - 0.6) & (x > centre) & (x < self.lanes_r)
        if self.cross is not None:
            marks &= ~in_cross
            yellow &= ~in_cross
        on_road = cls == ROAD
        marks &= on_road
        yellow &= on_road & ~marks
        cls[marks | yellow] = ROADLINE
        rgb[marks] = line_white
        rgb[yellow] = line_yellow

        # Slightly darker tyre tracks in every lane (blotches come later, with the class textures).
        lane_pos = (x - centre) % self.lane_w
        tracks = (np.abs(lane_pos - self.lane_w / 2) > 0.55) & (np.abs(lane_pos - self.lane_w / 2) < 1.05)
        rgb[on_road & ~tracks] *= r.uniform(1.0, 1.06)

        # A building's shadow across part of the street.
        if self.weather == "clear" and self.kind != "open" and r.random() < 0.45:
            side = 1 if r.random() < 0.5 else -1
            edge = r.uniform(-2.0, 5.0) + r.uniform(-0.15, 0.15) * zz
            shade = (side * x) > edge
            rgb[shade] *= r.uniform(0.55, 0.75)
        self.rgb[first:] = rgb
        self.cls[first:] = cls

    # -- things standing on the ground -------------------------------------------------------------
    def plane_side(self, parts: _Parts, x: float, z0: float, z1: float, v0: float, v1: float, colour,
                   label: int, texture: Callable | None = None) -> None:
        """A vertical rectangle parallel to the road (constant X) from depth z0 to z1, heights v0..v1."""
        z0 = max(z0, 0.5)
        if z1 <= z0:
            return
        pts = [(self.px(x, z0), self.py(v0, z0)), (self.px(x, z1), self.py(v0, z1)),
               (self.px(x, z1), self.py(v1, z1)), (self.px(x, z0), self.py(v1, z0))]
        parts.polygon(pts, colour, label, texture)

    def plane_front(self, parts: _Parts, x0: float, x1: float, z: float, v0: float, v1: float, colour,
                    label: int, texture: Callable | None = None) -> None:
        """A vertical rectangle facing the camera (constant z) from X x0 to x1, heights v0..v1."""
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
        def coords(rows, cols):
            x = (cols - self.x_v) * z / self.f
            v = self.cam_h - (rows - self.y_h) * z / self.f
            return np.abs(x - x_corner), v
        return coords

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

    def building(self, parts: _Parts, side: int, z0: float, z1: float, setback: float, height: float,
                 depth: float, colour, roof: bool = False) -> None:
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
            self.plane_front(parts, x_near, x_far, z0, 0.0, height, colour, BUILDING, tex)
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
        self.plane_side(parts, x_near, z0, z1, 0.0, height, colour, BUILDING, tex)

    def wall(self, parts: _Parts, side: int, z0: float, z1: float, height: float, offset: float = 0.0) -> None:
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
        self.plane_side(parts, x, z0, z1, 0.0, height, colour, WALL, texture)

    def fence(self, parts: _Parts, side: int, z0: float, z1: float, height: float, offset: float = 0.1) -> None:
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
        self.plane_side(parts, x, z0, z1, 0.0, height, colour, FENCE, texture)

    def hedge(self, parts: _Parts, side: int, z0: float, z1: float, height: float, offset: float = 0.3) -> None:
        x = side * (self.out[side] + offset)
        colour = self.jitter((50, 95, 40), 10, 0.15)
        self.plane_side(parts, x, z0, z1, 0.0, height, colour, VEGETATION)

    def tree(self, parts: _Parts, x: float, z: float, size: float = 1.0) -> None:
        r = self.rng
        if z < 0.8:
            return
        s = self.f / z
        trunk_h = r.uniform(2.0, 3.0) * size
        trunk_w = max(0.3 * size * s, self.min_px(2))
        cx, base = self.px(x, z), self.py(0.0, z)
        trunk = self.jitter((85, 62, 42), 8)
        parts.rect(cx - trunk_w / 2, base - trunk_h * s, cx + trunk_w / 2, base, trunk, VEGETATION)
        radius = r.uniform(1.5, 2.6) * size
        centre_v = trunk_h + radius * 0.8
        green = self.jitter(r.choice([(45, 90, 35), (60, 105, 40), (35, 75, 40), (70, 100, 35)]), 10, 0.12)
        for _ in range(int(r.integers(3, 7))):
            dx, dv = r.uniform(-0.6, 0.6) * radius, r.uniform(-0.5, 0.5) * radius
            rr = radius * r.uniform(0.55, 0.9)
            parts.ellipse(cx + dx * s, self.py(centre_v + dv, z), max(rr * s, 1.5 * self.unit),
                          max(rr * s * r.uniform(0.8, 1.1), 1.5 * self.unit), green * r.uniform(0.8, 1.15),
                          VEGETATION)

    def bush(self, parts: _Parts, x: float, z: float) -> None:
        if z < 0.8:
            return
        r = self.rng
        s = self.f / z
        green = self.jitter((55, 100, 40), 10, 0.15)
        for _ in range(int(r.integers(2, 4))):
            rr = r.uniform(0.5, 1.0)
            cx = self.px(x + r.uniform(-0.7, 0.7), z)
            parts.ellipse(cx, self.py(rr * 0.7, z), rr * s, rr * s * 0.7, green * r.uniform(0.85, 1.15),
                          VEGETATION)

    def streetlight(self, parts: _Parts, side: int, x: float, z: float, wooden: bool = False) -> None:
        r = self.rng
        if z < 1.0:
            return
        s = self.f / z
        height = r.uniform(6.5, 9.0)
        width = max(0.25 * s, self.min_px(2))
        colour = self.jitter((95, 70, 50), 8) if wooden else self.jitter(
            r.choice([(160, 162, 168), (140, 142, 148), (175, 176, 180)]), 8)
        cx, base, top = self.px(x, z), self.py(0.0, z), self.py(height, z)
        parts.rect(cx - width / 2, top, cx + width / 2, base, colour, POLE)
        thick = max(0.15 * s, self.min_px(2))
        if wooden:  # cross-arm
            arm = 1.0 * s
            parts.rect(cx - arm, top + 0.4 * s, cx + arm, top + 0.4 * s + thick, colour, POLE)
            return
        reach = r.uniform(1.2, 2.4)
        tip = self.px(x - side * reach, z)
        lo, hi = min(cx, tip), max(cx, tip)
        parts.rect(lo, top, hi, top + thick, colour, POLE)
        lamp_w = max(0.7 * s, self.min_px(3))
        parts.rect(tip - lamp_w / 2, top, tip + lamp_w / 2, top + max(0.3 * s, self.min_px(2)),
                   colour * 0.8, POLE)

    def sign(self, parts: _Parts, x: float, z: float) -> None:
        r = self.rng
        if z < 2.0:
            return
        s = self.f / z
        size = max(r.uniform(0.75, 1.1) * s, self.min_px(6))
        plate_v = r.uniform(2.2, 2.8)
        cx, base = self.px(x, z), self.py(0.0, z)
        cy = self.py(plate_v, z) - size / 2
        pole_w = max(0.08 * s, self.min_px(2))
        parts.rect(cx - pole_w / 2, cy, cx + pole_w / 2, base, self.jitter((140, 140, 145), 10), POLE)
        kind = r.choice(["round_red", "round_blue", "triangle", "square", "octagon", "diamond", "direction"])
        half = size / 2
        white = self.jitter((240, 240, 238), 6)
        if kind == "direction":  # wide blue/green board with a white border and text lines
            board = self.jitter((30, 70, 170) if r.random() < 0.5 else (20, 110, 60), 10)
            hw = half * 1.6
            parts.rect(cx - hw, cy - half, cx + hw, cy + half, white, TRAFFICSIGN)
            parts.rect(cx - hw * 0.9, cy - half * 0.8, cx + hw * 0.9, cy + half * 0.8, board, TRAFFICSIGN)
            if size > 8:
                for k in (-0.35, 0.25):
                    parts.rect(cx - hw * 0.6, cy + half * k, cx + hw * 0.5, cy + half * (k + 0.15), white,
                               TRAFFICSIGN)
        elif kind == "round_red":
            parts.ellipse(cx, cy, half, half, self.jitter((205, 25, 30), 10), TRAFFICSIGN)
            parts.ellipse(cx, cy, half * 0.7, half * 0.7, white, TRAFFICSIGN)
        elif kind == "round_blue":
            parts.ellipse(cx, cy, half, half, self.jitter((30, 80, 185), 10), TRAFFICSIGN)
            parts.rect(cx - half * 0.15, cy - half * 0.5, cx + half * 0.15, cy + half * 0.5, white, TRAFFICSIGN)
        elif kind == "triangle":
            pts = [(cx, cy - half * 1.1), (cx + half * 1.1, cy + half * 0.8), (cx - half * 1.1, cy + half * 0.8)]
            parts.polygon(pts, self.jitter((210, 30, 30), 10), TRAFFICSIGN)
            pts = [(cx, cy - half * 0.5), (cx + half * 0.6, cy + half * 0.5), (cx - half * 0.6, cy + half * 0.5)]
            parts.polygon(pts, white, TRAFFICSIGN)
        elif kind == "square":
            parts.rect(cx - half, cy - half, cx + half, cy + half, self.jitter((35, 90, 190), 10), TRAFFICSIGN)
            parts.rect(cx - half * 0.5, cy - half * 0.5, cx + half * 0.5, cy + half * 0.5, white, TRAFFICSIGN)
        elif kind == "octagon":
            ang = np.pi / 8 + np.arange(8) * np.pi / 4
            pts = [(cx + half * np.cos(a), cy + half * np.sin(a)) for a in ang]
            parts.polygon(pts, self.jitter((200, 20, 25), 10), TRAFFICSIGN)
            parts.rect(cx - half * 0.6, cy - half * 0.15, cx + half * 0.6, cy + half * 0.15, white, TRAFFICSIGN)
        else:
            pts = [(cx, cy - half), (cx + half, cy), (cx, cy + half), (cx - half, cy)]
            parts.polygon(pts, white, TRAFFICSIGN)
            pts = [(cx, cy - half * 0.6), (cx + half * 0.6, cy), (cx, cy + half * 0.6), (cx - half * 0.6, cy)]
            parts.polygon(pts, self.jitter((235, 190, 30), 10), TRAFFICSIGN)

    def light_box(self, parts: _Parts, cx: float, top: float, s: float) -> None:
        """A traffic light head: dark box with three lamps, one lit."""
        r = self.rng
        bw = max(0.45 * s, self.min_px(5))
        bh = bw * 2.6
        plate = self.jitter((190, 150, 35), 10)
        body = self.jitter((35, 35, 30), 6)
        parts.rect(cx - bw / 2 - max(bw * 0.15, 1), top - bw * 0.1, cx + bw / 2 + max(bw * 0.15, 1), top + bh + bw * 0.1,
                   plate, TRAFFICLIGHT)
        parts.rect(cx - bw / 2, top, cx + bw / 2, top + bh, body, TRAFFICLIGHT)
        on = int(r.integers(0, 3))
        lit = [(255, 50, 40), (255, 185, 30), (60, 255, 140)][on]
        for k in range(3):
            colour = lit if k == on else (70, 60, 55)
            cy = top + bh * (0.2 + 0.3 * k)
            parts.ellipse(cx, cy, bw * 0.3, bw * 0.3, colour, TRAFFICLIGHT)

    def traffic_light(self, parts: _Parts, side: int, x: float, z: float, overhead: bool) -> None:
        r = self.rng
        if z < 2.0:
            return
        s = self.f / z
        # CARLA labels the whole traffic-light actor (post, arm, heads) as trafficlight.
        colour = self.jitter(r.choice([(62, 62, 42), (48, 50, 40), (75, 70, 40)]), 6)
        width = max(0.22 * s, self.min_px(2))
        cx, base = self.px(x, z), self.py(0.0, z)
        if overhead:
            height = r.uniform(5.5, 6.5)
            top = self.py(height, z)
            parts.rect(cx - width / 2, top, cx + width / 2, base, colour, TRAFFICLIGHT)
            reach = abs(x) + r.uniform(-1.0, 2.0)
            tip = self.px(x - side * reach, z)
            thick = max(0.18 * s, self.min_px(1))
            parts.rect(min(cx, tip), top, max(cx, tip), top + thick, colour, TRAFFICLIGHT)
            heads = [tip + side * 0.6 * s]
            if r.random() < 0.6:
                heads.append(self.px(x - side * reach * 0.45, z))
            for hx in heads:
                self.light_box(parts, hx, top + thick, s)
        else:
            height = r.uniform(2.4, 3.2)
            top = self.py(height, z)
            parts.rect(cx - width / 2, top, cx + width / 2, base, colour, TRAFFICLIGHT)
            self.light_box(parts, cx, top - max(0.45 * s, self.min_px(5)) * 2.6, s)

    def pedestrian(self, parts: _Parts, x: float, z: float) -> None:
        r = self.rng
        s = self.f / z
        height = r.uniform(1.55, 1.9) * s
        width = max(r.uniform(0.5, 0.65) * s, self.min_px(5))
        height = max(height, width * 2.4)
        cx, base = self.px(x, z), self.py(0.0, z)
        top = base - height
        shirt = self.jitter(_SHIRT_COLOURS[int(r.integers(len(_SHIRT_COLOURS)))], 10)
        trousers = self.jitter(_TROUSER_COLOURS[int(r.integers(len(_TROUSER_COLOURS)))], 8)
        skin = self.jitter(_SKIN_COLOURS[int(r.integers(len(_SKIN_COLOURS)))], 6)
        hair = self.jitter(r.choice([(30, 25, 20), (80, 55, 30), (170, 140, 90), (120, 120, 120)]), 6)
        hip = top + 0.52 * height
        stride = r.uniform(0.0, 0.28) * height
        leg = width * 0.22
        parts.polygon([(cx - leg * 1.9, hip), (cx - 0.05 * width, hip), (cx - stride / 2 + leg, base),
                       (cx - stride / 2 - leg, base)], trousers, PEDESTRIAN)
        parts.polygon([(cx + 0.05 * width, hip), (cx + leg * 1.9, hip), (cx + stride / 2 + leg, base),
                       (cx + stride / 2 - leg, base)], trousers * 0.9, PEDESTRIAN)
        parts.rect(cx - width * 0.4, top + 0.15 * height, cx + width * 0.4, hip + 0.03 * height, shirt, PEDESTRIAN)
        arm = shirt * 0.85 if r.random() < 0.6 else skin
        parts.rect(cx - width * 0.5, top + 0.17 * height, cx - width * 0.36, top + 0.5 * height, arm, PEDESTRIAN)
        parts.rect(cx + width * 0.36, top + 0.17 * height, cx + width * 0.5, top + 0.5 * height, arm, PEDESTRIAN)
        head = max(width * 0.23, 0.6)
        parts.ellipse(cx, top + 0.075 * height, head, 0.075 * height, skin, PEDESTRIAN)
        parts.rect(cx - head, top, cx + head, top + 0.035 * height, hair, PEDESTRIAN)
        if r.random() < 0.3:  # bag
            parts.rect(cx + width * 0.3, hip - 0.1 * height, cx + width * 0.55, hip + 0.1 * height,
                       self.jitter((60, 45, 35), 10), PEDESTRIAN)

    def vehicle(self, parts: _Parts, x: float, z: float, kind: str, facing_away: bool) -> None:
        """A car/van/truck/bus as a box: near face at depth z, the visible side face, wheels, windows."""
        r = self.rng
        if kind == "car":
            w, h, length = r.uniform(1.7, 1.95), r.uniform(1.35, 1.6), r.uniform(4.0, 4.9)
        elif kind == "van":
            w, h, length = r.uniform(1.9, 2.1), r.uniform(1.9, 2.4), r.uniform(4.8, 5.6)
        elif kind == "truck":
            w, h, length = r.uniform(2.3, 2.5), r.uniform(2.8, 3.4), r.uniform(7.0, 10.0)
        else:  # bus
            w, h, length = 2.5, r.uniform(3.0, 3.3), r.uniform(11.0, 12.5)
        body = self.jitter(_CAR_COLOURS[int(r.integers(len(_CAR_COLOURS)))], 10, 0.06)
        if kind == "bus":
            body = self.jitter(r.choice([(200, 40, 35), (230, 190, 40), (40, 90, 170), (230, 230, 225)]), 10)
        glass = self.jitter((40, 48, 58), 8)
        tyre = (22.0, 22.0, 24.0)
        z_far = z + length
        xl, xr = x - w / 2, x + w / 2
        # shadow on the ground beneath
        ground = [(xl - 0.15, z - 0.3), (xr + 0.15, z - 0.3), (xr + 0.15, z_far), (xl - 0.15, z_far)]
        pts = [(self.px(gx, max(gz, 0.5)) - 0.5, self.py(0.0, max(gz, 0.5)) - 0.5) for gx, gz in ground]
        self.shadow_draw.polygon(pts, fill=1)

        belt = 0.58 if kind == "car" else 0.62
        # side face, when it faces the camera
        if xl > 0.05 or xr < -0.05:
            sx = xl if xl > 0 else xr
            side_body = body * 0.82
            wheel_d = min(0.7, h * 0.45)
            za = z
            self.plane_side(parts, sx, za, z_far, 0.18, belt * h if kind == "car" else h, side_body, VEHICLES)
            if kind == "car":
                cz0, cz1 = z + length * 0.22, z + length * 0.82
                self.plane_side(parts, sx, za + length * 0.12, z_far - length * 0.05, belt * h, 0.96 * h,
                                side_body, VEHICLES)
                self.plane_side(parts, sx, cz0, cz1, belt * h + 0.05, 0.92 * h, glass, VEHICLES)
            elif kind == "bus":
                self.plane_side(parts, sx, za + 0.3, z_far - 0.3, 0.55 * h, 0.85 * h, glass, VEHICLES)
            elif kind == "van":  # cab windows at the front end
                wz = z_far - 1.6 if facing_away else z + 0.2
                self.plane_side(parts, sx, wz, wz + 1.4, 0.55 * h, 0.85 * h, glass, VEHICLES)
            for wz in (z + length * 0.14, z_far - length * 0.14 - wheel_d):
                self.plane_side(parts, sx, wz, wz + wheel_d, 0.0, wheel_d, tyre, VEHICLES)
        if z < 0.8:
            return
        x0, x1 = self.px(xl, z), self.px(xr, z)
        wpx = x1 - x0
        yv = lambda v: self.py(v, z)  # noqa: E731
        # wheels below the body, at the outer corners
        tw = max(wpx * 0.16, 1.0)
        parts.rect(x0, yv(0.3), x0 + tw, yv(0.0), tyre, VEHICLES)
        parts.rect(x1 - tw, yv(0.3), x1, yv(0.0), tyre, VEHICLES)
        parts.rect(x0, yv(belt * h if kind == "car" else h), x1, yv(0.2), body, VEHICLES)
        parts.rect(x0, yv(0.38), x1, yv(0.2), body * 0.55, VEHICLES)  # bumper
        if kind == "car":
            inset_lo, inset_hi = wpx * 0.05, wpx * 0.17
            parts.polygon([(x0 + inset_lo, yv(belt * h)), (x1 - inset_lo, yv(belt * h)),
                           (x1 - inset_hi, yv(h)), (x0 + inset_hi, yv(h))], body, VEHICLES)
            g_lo, g_hi = wpx * 0.1, wpx * 0.2
            parts.polygon([(x0 + g_lo, yv(belt * h + 0.06)), (x1 - g_lo, yv(belt * h + 0.06)),
                           (x1 - g_hi, yv(h * 0.94)), (x0 + g_hi, yv(h * 0.94))], glass, VEHICLES)
        elif kind == "bus" or (kind == "van" and not facing_away):
            parts.rect(x0 + wpx * 0.08, yv(0.9 * h), x1 - wpx * 0.08, yv(0.6 * h), glass, VEHICLES)
        elif kind == "truck":
            parts.rect(x0 + wpx * 0.49, yv(0.95 * h), x0 + wpx * 0.51, yv(0.3), body * 0.6, VEHICLES)
        else:
            parts.rect(x0 + wpx * 0.12, yv(0.9 * h), x1 - wpx * 0.12, yv(0.65 * h), glass, VEHICLES)
        lamp = (210.0, 25.0, 25.0) if facing_away else (245.0, 240.0, 200.0)
        lw_ = max(wpx * 0.15, 1.0)
        lamp_lo, lamp_hi = (0.42, 0.52) if kind == "car" else (0.45, 0.6)
        lamp_lo, lamp_hi = lamp_lo * min(h, 1.6), lamp_hi * min(h, 1.6)
        parts.rect(x0 + wpx * 0.03, yv(lamp_hi), x0 + wpx * 0.03 + lw_, yv(lamp_lo), lamp, VEHICLES)
        parts.rect(x1 - wpx * 0.03 - lw_, yv(lamp_hi), x1 - wpx * 0.03, yv(lamp_lo), lamp, VEHICLES)
        if wpx > 8:
            plate = (230.0, 230.0, 225.0) if r.random() < 0.7 else (235.0, 200.0, 40.0)
            parts.rect(x0 + wpx * 0.4, yv(0.42), x1 - wpx * 0.4, yv(0.3), plate, VEHICLES)
        if not facing_away and kind == "car":  # grille
            parts.rect(x0 + wpx * 0.3, yv(0.52 * h), x1 - wpx * 0.3, yv(0.4 * h), body * 0.4, VEHICLES)

    # -- scene layout ------------------------------------------------------------------------------
    def layout_backdrop(self, back: _Parts, edge: _Parts, lawn: list) -> None:
        """Buildings, walls, fences and hedges along both sides, far to near."""
        r = self.rng
        if self.kind == "city" and r.random() < 0.5:  # a block closing the street far away
            zc = r.uniform(70.0, 140.0)
            colour = self.jitter(_FACADE_COLOURS[int(r.integers(len(_FACADE_COLOURS)))], 10)
            self.building_front_block(back, zc, colour)
        for side in (-1, 1):
            segments = []
            z = r.uniform(-4.0, 1.0)
            end = r.uniform(80.0, 140.0)
            while z < end:
                if self.cross is not None and self.cross[0] <= z < self.cross[0] + self.cross[1]:
                    z = self.cross[0] + self.cross[1]
                    continue
                if self.kind == "city":
                    length = r.uniform(6.0, 22.0)
                elif self.kind == "suburb":
                    length = r.uniform(12.0, 25.0)
                else:
                    length = r.uniform(15.0, 40.0)
                z1 = z + length
                if self.cross is not None and z < self.cross[0] < z1:
                    z1 = self.cross[0]
                segments.append((z, z1))
                z = z1
            for z0, z1 in reversed(segments):
                self.segment(back, edge, lawn, side, z0, z1)

    def building_front_block(self, parts: _Parts, z: float, colour) -> None:
        r = self.rng
        glass = self.jitter((60, 70, 90), 10)
        storeys = {"glass": glass, "floor": 3.2, "ground": 4.0, "sill": 0.8, "win_h": 1.5,
                   "spacing": r.uniform(2.5, 3.5), "offset": 0.5, "height": 60.0, "shop": False,
                   "shop_spacing": 3.0, "lit": 0.3 if self.weather == "dusk" else 0.0,
                   "salt": int(r.integers(0, 1 << 16))}
        storeys["win_w"] = storeys["spacing"] * 0.5
        tex = self.facade_texture(self.front_coords(-60.0, z), colour, 0.95, storeys)
        self.plane_front(parts, -60.0, 60.0, z, 0.0, r.uniform(12.0, 45.0), colour, BUILDING, tex)

    def segment(self, back: _Parts, edge: _Parts, lawn: list, side: int, z0: float, z1: float) -> None:
        """Fill one stretch of the roadside (between depths z0 and z1) according to the scene kind."""
        r = self.rng
        p = r.random()
        facade = self.jitter(_FACADE_COLOURS[int(r.integers(len(_FACADE_COLOURS)))], 12, 0.1)
        if self.kind == "city":
            if p < 0.72:
                self.building(back, side, z0, z1, 0.0 if r.random() < 0.7 else r.uniform(0.5, 2.0),
                              r.uniform(7.0, 40.0), r.uniform(10.0, 25.0), facade)
            elif p < 0.9:
                self.building(back, side, z0, z1, r.uniform(6.0, 15.0), r.uniform(8.0, 30.0), 15.0, facade)
                self.wall(edge, side, z0, z1, r.uniform(1.6, 3.0))
            else:
                self.building(back, side, z0, z1, r.uniform(10.0, 20.0), r.uniform(8.0, 25.0), 15.0, facade)
                if r.random() < 0.5:
                    self.fence(edge, side, z0, z1, r.uniform(1.2, 1.9))
        elif self.kind == "suburb":
            setback = r.uniform(4.0, 10.0)
            if p < 0.8:
                lot = z1 - z0
                h0 = z0 + lot * r.uniform(0.05, 0.3)
                h1 = h0 + min(lot * 0.7, r.uniform(7.0, 13.0))
                self.building(back, side, h0, h1, setback, r.uniform(3.0, 6.5), r.uniform(8.0, 11.0),
                              facade, roof=True)
            q = r.random()
            if q < 0.35:
                self.fence(edge, side, z0, z1, r.uniform(0.9, 1.6))
            elif q < 0.65:
                self.hedge(edge, side, z0, z1, r.uniform(0.9, 2.0))
            elif q < 0.8:
                self.wall(edge, side, z0, z1, r.uniform(1.0, 2.0))
            for _ in range(int(r.integers(0, 3))):
                zt = r.uniform(z0, z1)
                lawn.append((zt, ("tree", side * (self.out[side] + r.uniform(1.0, max(1.5, setback - 1.0))), zt)))
            if r.random() < 0.5:
                zt = r.uniform(z0, z1)
                lawn.append((zt, ("bush", side * (self.out[side] + r.uniform(1.5, max(2.0, setback))), zt)))
        else:
            if p < 0.35:
                depth = r.uniform(12.0, 35.0)
                self.hedge(back, side, z0, z1, r.uniform(7.0, 14.0), offset=depth)
            for _ in range(int(r.integers(0, 4))):
                zt = r.uniform(z0, z1)
                lawn.append((zt, ("tree", side * (self.out[side] + r.uniform(2.0, 12.0)), zt)))
            for _ in range(int(r.integers(0, 3))):
                zt = r.uniform(z0, z1)
                lawn.append((zt, ("bush", side * (self.out[side] + r.uniform(1.0, 6.0)), zt)))
            if r.random() < 0.3 and z0 < 60:
                self.fence(edge, side, z0, z1, r.uniform(1.0, 1.4), offset=r.uniform(1.0, 3.0))

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

    def layout_objects(self) -> list:
        """(depth, drawing closure) for everything on the sidewalks and the road."""
        r = self.rng
        items: list = []
        kind = self.kind

        # street lights / utility poles
        for side in (-1, 1):
            if kind == "open":
                if r.random() < 0.5:
                    x = side * (self.out[side] + r.uniform(1.0, 2.5))
                    spacing = r.uniform(25.0, 40.0)
                    for z in np.arange(r.uniform(3.0, 25.0), 120.0, spacing):
                        items.append((z, lambda p, x=x, z=z, s=side: self.streetlight(p, s, x, z, wooden=True)))
                continue
            if r.random() < 0.8:
                x = side * (self.edge[side] + r.uniform(0.3, 0.7))
                spacing = r.uniform(15.0, 30.0)
                for z in np.arange(r.uniform(2.0, 15.0), 100.0, spacing):
                    if self.in_cross(z - 1, z + 1):
                        continue
                    items.append((z, lambda p, x=x, z=z, s=side: self.streetlight(p, s, x, z)))

        # street trees in the sidewalk (city) or the verge
        for side in (-1, 1):
            if kind == "city" and self.walk[side] > 3.0 and r.random() < 0.45:
                x = side * (self.out[side] - 0.9)
                for z in np.arange(r.uniform(3.0, 10.0), 70.0, r.uniform(8.0, 16.0)):
                    if not self.in_cross(z - 2, z + 2):
                        items.append((z, lambda p, x=x, z=z: self.tree(p, x, z, 0.8)))

        # traffic signs
        n_signs = int(r.integers(2, 5)) if kind == "city" else int(r.integers(1, 4))
        for _ in range(n_signs):
            side = 1 if r.random() < 0.75 else -1
            z = r.uniform(5.0, 35.0)
            x = side * (self.edge[side] + r.uniform(0.5, 1.2))
            items.append((z, lambda p, x=x, z=z: self.sign(p, x, z)))

        # traffic lights at the crossing
        if self.cross is not None and (kind == "city" or r.random() < 0.4):
            zc, wc = self.cross
            z = zc - r.uniform(0.5, 1.5)
            items.append((z, lambda p, z=z: self.traffic_light(p, 1, self.edge[1] + 0.7, z, r.random() < 0.6)))
            if r.random() < 0.7:
                z2 = zc + wc + r.uniform(0.5, 1.5)
                items.append((z2, lambda p, z=z2: self.traffic_light(p, -1, -(self.edge[-1] + 0.7), z,
                                                                       r.random() < 0.3)))
            if r.random() < 0.5:
                z3 = zc + wc + r.uniform(0.5, 1.5)
                items.append((z3, lambda p, z=z3: self.traffic_light(p, 1, self.edge[1] + 0.7, z, False)))
        elif self.crosswalk is not None and r.random() < 0.6:  # pedestrian-crossing lights
            z = self.crosswalk[0] - r.uniform(0.3, 1.0)
            items.append((z, lambda p, z=z: self.traffic_light(p, 1, self.edge[1] + 0.6, z, r.random() < 0.5)))

        # pedestrians on the sidewalks (and on the crosswalk)
        n_peds = {"city": int(r.integers(3, 11)), "suburb": int(r.integers(1, 5)),
                  "open": int(r.random() < 0.15)}[kind]
        min_h = self.min_px(12)  # keep pedestrians at least ~5×12 px at 96×128
        z_max = max(self.f * 1.7 / min_h, self.z_near * 1.5)
        for _ in range(n_peds):
            side = 1 if r.random() < 0.5 else -1
            if self.walk[side] < 1.0:
                continue
            z = r.uniform(self.z_near * 1.3, z_max)
            if self.in_cross(z, z):
                continue
            x = side * (self.edge[side] + r.uniform(0.5, self.walk[side] - 0.3))
            items.append((z, lambda p, x=x, z=z: self.pedestrian(p, x, z)))
            if r.random() < 0.35:  # someone walking alongside
                z2 = z + r.uniform(-1.5, 1.5)
                x2 = side * np.clip(abs(x) + r.uniform(-0.8, 0.8), self.edge[side] + 0.3, self.out[side] - 0.2)
                items.append((z2, lambda p, x=x2, z=z2: self.pedestrian(p, x, z)))
        if self.crosswalk is not None and r.random() < 0.5:
            z = (self.crosswalk[0] + self.crosswalk[1]) / 2
            for _ in range(int(r.integers(1, 3))):
                x = r.uniform(self.road_l, self.road_r)
                zz = z + r.uniform(-1.0, 1.0)
                items.append((zz, lambda p, x=x, z=zz: self.pedestrian(p, x, z)))

        # vehicles in the lanes, parked cars along the kerb
        density = {"city": 1.0, "suburb": 0.55, "open": 0.6}[kind]
        lanes = [(self.x_centre + (j + 0.5) * self.lane_w, True) for j in range(self.n_own)]
        lanes += [(self.x_centre - (j + 0.5) * self.lane_w, False) for j in range(self.n_opp)]
        for lane_x, away in lanes:
            ours = abs(lane_x) < self.lane_w / 2
            z = r.uniform(7.0 if ours else 4.0, 30.0)
            while z < 80.0 and r.random() < density * 0.85:
                vkind = str(r.choice(["car", "van", "truck", "bus"], p=[0.74, 0.14, 0.07, 0.05]))
                x = lane_x + r.uniform(-0.3, 0.3)
                if not (self.crosswalk and self.crosswalk[0] - 1 < z < self.crosswalk[1]):
                    items.append((z, lambda p, x=x, z=z, k=vkind, a=away: self.vehicle(p, x, z, k, a)))
                z += {"car": 4.5, "van": 5.5, "truck": 9.0, "bus": 12.5}[vkind] + r.uniform(4.0, 25.0)
        for side in (-1, 1):
            if not self.parking[side]:
                continue
            x_lane = side * (self.edge[side] - 1.15)
            z = r.uniform(0.0, 6.0)
            while z < 60.0:
                length = r.uniform(4.0, 4.8)
                if r.random() < 0.7 and not self.in_cross(z - 2, z + length + 2):
                    items.append((z, lambda p, x=x_lane, z=z: self.vehicle(
                        p, x + r.uniform(-0.15, 0.15), max(z, 1.0), "car", True)))
                z += length + r.uniform(1.0, 8.0)
        return items

    def finish(self) -> np.ndarray:
        """Textures, shadows, lighting and noise on the picture; returns uint8."""
        r, h, w = self.rng, self.h, self.w
        cls = self.cls
        rgb = self.rgb
        shadow = np.asarray(self.shadow).astype(bool) & _GROUND[cls]
        rgb[shadow] *= r.uniform(0.4, 0.6)
        fine = r.standard_normal((h, w), dtype=np.float32)
        coarse = _smooth_noise(r, h, w, cell=max(2.0, w / 24))
        leaf = r.standard_normal(((h + 1) // 2, (w + 1) // 2), dtype=np.float32).repeat(2, 0).repeat(2, 1)[:h, :w]
        factor = 1.0 + _FINE[cls] * fine + _COARSE[cls] * (coarse - 0.5) * 2 + _LEAF[cls] * leaf
        rgb *= factor[..., None]
        # global lighting
        if self.weather == "clear":
            bright, contrast = r.uniform(0.9, 1.15), r.uniform(0.92, 1.12)
            cast = 1 + r.normal(0, 0.035, 3)
        elif self.weather == "overcast":
            bright, contrast = r.uniform(0.8, 1.05), r.uniform(0.8, 0.95)
            cast = 1 + r.normal(0, 0.03, 3)
        else:
            bright, contrast = r.uniform(0.7, 0.9), r.uniform(0.88, 1.05)
            cast = np.array([1.08, 0.98, 0.88]) + r.normal(0, 0.03, 3)
        rgb[:] = (rgb - 128.0) * contrast + 128.0
        rgb *= (bright * cast).astype(np.float32)
        rgb += r.normal(0.0, r.uniform(1.0, 4.5), rgb.shape).astype(np.float32)
        return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)

    def render(self) -> tuple[np.ndarray, np.ndarray]:
        self.paint_sky()
        self.paint_ground()
        far = _Parts(self.h, self.w)
        self.skyline(far)
        far.commit(self.rgb, self.cls)
        back, edge, lawn_parts = _Parts(self.h, self.w), _Parts(self.h, self.w), _Parts(self.h, self.w)
        lawn: list = []
        self.layout_backdrop(back, edge, lawn)
        back.commit(self.rgb, self.cls)
        for _, (what, x, z) in sorted(lawn, key=lambda item: -item[0]):
            if what == "tree":
                self.tree(lawn_parts, x, z, self.rng.uniform(0.8, 1.4))
            else:
                self.bush(lawn_parts, x, z)
        lawn_parts.commit(self.rgb, self.cls)
        edge.commit(self.rgb, self.cls)
        near = _Parts(self.h, self.w)
        for _, draw in sorted(self.layout_objects(), key=lambda item: -item[0]):
            draw(near)
        near.commit(self.rgb, self.cls)
        return self.finish(), self.cls.copy()


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cell: float) -> np.ndarray:
    """Smooth noise in [0, 1]: a coarse random grid, bilinearly upsampled (picture only, never labels)."""
    gh, gw = max(2, int(np.ceil(height / cell)) + 1), max(2, int(np.ceil(width / cell)) + 1)
    grid = rng.random((gh, gw), dtype=np.float32)
    return np.asarray(Image.fromarray(grid).resize((width, height), Image.Resampling.BILINEAR))


def render_scene(rng: np.random.Generator, height: int = 96, width: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """One road scene seen from a car: (H×W×3 uint8 image, H×W uint8 class-id mask)."""
    height, width = _check_size((height, width))
    return _Scene(rng, height, width).render()


def _check_size(size) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in size)
        ok = all(float(v) == int(v) for v in size) and not any(isinstance(v, bool) for v in size)
    except (TypeError, ValueError):
        raise UserError(f"size must be two positive integers (height, width), got {size!r}") from None
    if not ok or height < 1 or width < 1:
        raise UserError(f"size must be two positive integers (height, width), got {tuple(size)!r}")
    return height, width


def _png(array: np.ndarray) -> bytes:
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
