"""Street furniture and greenery beside the road: trees, bushes, street lights and utility poles,
traffic signs and traffic lights, drawn as flat shapes scaled by depth.
"""

from __future__ import annotations

import numpy as np

from exporter.data.synth.labels import POLE, TRAFFICLIGHT, TRAFFICSIGN, VEGETATION
from exporter.data.synth.raster import _Parts
from exporter.data.synth.world import _World


class _StreetFurniture(_World):
    """Paints trees, bushes, poles, signs and traffic lights standing at (X, z)."""

    def tree(self, parts: _Parts, x: float, z: float, size: float = 1.0) -> None:
        """A trunk and a crown of overlapping leafy ellipses."""
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
        """Two or three low leafy ellipses on the ground."""
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
        """A metal street light with an arm over the road, or a wooden utility pole with a cross-arm."""
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
        """A traffic sign of a random kind on a thin pole."""
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
        """A post-mounted traffic light, or a mast with an arm carrying heads over the road."""
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

