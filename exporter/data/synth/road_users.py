"""Road users: pedestrians on the sidewalks and crosswalks, and cars, vans, trucks and buses in the lanes
and parked along the kerb, each with its shadow on the ground.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from exporter.data.synth.labels import PEDESTRIAN, VEHICLES
from exporter.data.synth.raster import _Parts
from exporter.data.synth.world import _World

_CAR_COLOURS = (
    (225, 225, 222), (235, 235, 235), (28, 28, 30), (45, 45, 50), (165, 168, 172), (120, 122, 128),
    (170, 25, 25), (120, 15, 20), (25, 55, 140), (20, 35, 80), (30, 80, 45), (215, 175, 30),
    (200, 90, 20), (95, 70, 50), (90, 140, 190),
)
_SHIRT_COLOURS = (
    (200, 30, 30), (30, 60, 160), (240, 240, 235), (25, 25, 28), (40, 120, 60), (230, 200, 40),
    (120, 40, 120), (230, 110, 30), (110, 110, 115), (60, 160, 200), (150, 90, 60),
)
_TROUSER_COLOURS = ((30, 35, 60), (25, 25, 28), (70, 70, 75), (160, 140, 100), (40, 55, 95), (90, 60, 40))
_SKIN_COLOURS = ((235, 195, 160), (200, 150, 110), (150, 100, 70), (95, 65, 45))

_TYRE = (22.0, 22.0, 24.0)


@dataclass
class _Vehicle:
    """One vehicle: its box (centre X, near-face depth z, width × height × length in metres) and paint."""

    kind: str
    facing_away: bool
    x: float
    z: float
    size: tuple[float, float, float]
    body: np.ndarray
    glass: np.ndarray

    @property
    def belt(self) -> float:
        """Height of the window line, as a fraction of the vehicle's height."""
        return 0.58 if self.kind == "car" else 0.62


class _RoadUsers(_World):
    """Paints pedestrians and vehicles standing at (X, z)."""

    def pedestrian(self, parts: _Parts, x: float, z: float) -> None:
        """A walking person: legs, shirt, arms, head and hair, sometimes a bag."""
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
        size = self._vehicle_size(kind)
        body = self.jitter(_CAR_COLOURS[int(r.integers(len(_CAR_COLOURS)))], 10, 0.06)
        if kind == "bus":
            body = self.jitter(r.choice([(200, 40, 35), (230, 190, 40), (40, 90, 170), (230, 230, 225)]), 10)
        car = _Vehicle(kind, facing_away, x, z, size, body, self.jitter((40, 48, 58), 8))
        w, _, length = size
        z_far = z + length
        xl, xr = x - w / 2, x + w / 2
        # shadow on the ground beneath
        ground = [(xl - 0.15, z - 0.3), (xr + 0.15, z - 0.3), (xr + 0.15, z_far), (xl - 0.15, z_far)]
        pts = [(self.px(gx, max(gz, 0.5)) - 0.5, self.py(0.0, max(gz, 0.5)) - 0.5) for gx, gz in ground]
        self.shadow_draw.polygon(pts, fill=1)
        if xl > 0.05 or xr < -0.05:  # the side face, when it faces the camera
            self._vehicle_side(parts, car, xl if xl > 0 else xr)
        if z >= 0.8:
            self._vehicle_face(parts, car)

    def _vehicle_size(self, kind: str) -> tuple[float, float, float]:
        """Random (width, height, length) in metres for the kind of vehicle."""
        r = self.rng
        if kind == "car":
            w, h, length = r.uniform(1.7, 1.95), r.uniform(1.35, 1.6), r.uniform(4.0, 4.9)
        elif kind == "van":
            w, h, length = r.uniform(1.9, 2.1), r.uniform(1.9, 2.4), r.uniform(4.8, 5.6)
        elif kind == "truck":
            w, h, length = r.uniform(2.3, 2.5), r.uniform(2.8, 3.4), r.uniform(7.0, 10.0)
        else:  # bus
            w, h, length = 2.5, r.uniform(3.0, 3.3), r.uniform(11.0, 12.5)
        return w, h, length

    def _vehicle_side(self, parts: _Parts, car: _Vehicle, sx: float) -> None:
        """The side face at X = sx: body, windows and wheels."""
        kind, z, glass = car.kind, car.z, car.glass
        _, h, length = car.size
        z_far = z + length
        belt = car.belt
        side_body = car.body * 0.82
        wheel_d = min(0.7, h * 0.45)
        self.plane_side(parts, sx, z, z_far, (0.18, belt * h if kind == "car" else h), side_body, VEHICLES)
        if kind == "car":
            cz0, cz1 = z + length * 0.22, z + length * 0.82
            self.plane_side(parts, sx, z + length * 0.12, z_far - length * 0.05, (belt * h, 0.96 * h),
                            side_body, VEHICLES)
            self.plane_side(parts, sx, cz0, cz1, (belt * h + 0.05, 0.92 * h), glass, VEHICLES)
        elif kind == "bus":
            self.plane_side(parts, sx, z + 0.3, z_far - 0.3, (0.55 * h, 0.85 * h), glass, VEHICLES)
        elif kind == "van":  # cab windows at the front end
            wz = z_far - 1.6 if car.facing_away else z + 0.2
            self.plane_side(parts, sx, wz, wz + 1.4, (0.55 * h, 0.85 * h), glass, VEHICLES)
        for wz in (z + length * 0.14, z_far - length * 0.14 - wheel_d):
            self.plane_side(parts, sx, wz, wz + wheel_d, (0.0, wheel_d), _TYRE, VEHICLES)

    def _vehicle_face(self, parts: _Parts, car: _Vehicle) -> None:
        """The near face (rear or front) at depth z: wheels, body, bumper, windows, lamps, plate, grille."""
        r = self.rng
        kind, z, facing_away, body, glass = car.kind, car.z, car.facing_away, car.body, car.glass
        w, h, _ = car.size
        xl, xr = car.x - w / 2, car.x + w / 2
        belt = car.belt
        x0, x1 = self.px(xl, z), self.px(xr, z)
        wpx = x1 - x0
        yv = lambda v: self.py(v, z)  # noqa: E731
        # wheels below the body, at the outer corners
        tw = max(wpx * 0.16, 1.0)
        parts.rect(x0, yv(0.3), x0 + tw, yv(0.0), _TYRE, VEHICLES)
        parts.rect(x1 - tw, yv(0.3), x1, yv(0.0), _TYRE, VEHICLES)
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
