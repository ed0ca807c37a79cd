"""The sky and the ground: gradient sky with clouds; road, lane markings, crosswalks, sidewalks and grass,
computed per pixel from world coordinates so that perspective and textures (tiles, dashes) are exact.
"""

from __future__ import annotations

import numpy as np

from exporter.data.synth.labels import ROAD, ROADLINE, SIDEWALK, SKY, TERRAIN
from exporter.data.synth.raster import _smooth_noise
from exporter.data.synth.world import _World


class _SkyAndGround(_World):
    """Paints the sky over the whole frame, then the ground below the horizon."""

    def paint_sky(self) -> None:
        """Vertical sky gradient for the weather, with soft clouds; every pixel labelled sky."""
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
        """Grass, road, sidewalks and lane markings on every row below the horizon."""
        h, w = self.h, self.w
        rows = np.arange(h, dtype=np.float32) + 0.5
        first = int(np.searchsorted(rows, self.y_h, side="right"))
        if first >= h:
            return
        z = (self.f * self.cam_h / (rows[first:] - self.y_h))[:, None]
        x = (np.arange(w, dtype=np.float32) + 0.5 - self.x_v)[None, :] * z / self.f
        shape = (h - first, w)
        zz = np.broadcast_to(z, shape)
        colours = self._ground_colours()
        cls, in_cross = self._ground_classes(x, z, shape)
        rgb = np.empty((*shape, 3), np.float32)
        rgb[:] = colours["grass"]
        rgb[cls == ROAD] = colours["road"]
        self._paint_sidewalks(rgb, cls, x, zz, colours)
        marks, yellow = self._lane_markings(x, zz, in_cross)
        on_road = cls == ROAD
        marks &= on_road
        yellow &= on_road & ~marks
        cls[marks | yellow] = ROADLINE
        rgb[marks] = colours["white"]
        rgb[yellow] = colours["yellow"]
        self._shade_street(rgb, on_road, x, zz)
        self.rgb[first:] = rgb
        self.cls[first:] = cls

    def _ground_colours(self) -> dict[str, np.ndarray]:
        """This frame's road, line, sidewalk, kerb and grass colours."""
        r = self.rng
        road = self.jitter((78, 78, 82), 10, 0.18)
        white = self.jitter((228, 228, 222), 8, 0.06)
        yellow = self.jitter((225, 185, 45), 10, 0.06)
        walk = self.jitter(r.choice([(165, 162, 158), (180, 170, 160), (172, 140, 130)]), 10, 0.1)
        curb = np.clip(walk * 1.12, 0, 255)
        grass = self.jitter(r.choice([(100, 128, 55), (120, 135, 65), (90, 120, 60)]), 12, 0.1)
        return {"road": road, "white": white, "yellow": yellow, "walk": walk, "curb": curb, "grass": grass}

    def _ground_classes(self, x: np.ndarray, z: np.ndarray,
                        shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Terrain, sidewalk and road classes of the ground rows, and where the crossing street lies."""
        cls = np.full(shape, TERRAIN, np.uint8)
        in_cross = np.zeros(shape, bool)
        if self.cross is not None:
            zc, wc = self.cross
            in_cross = np.broadcast_to((z >= zc) & (z <= zc + wc), shape)
        road = (x >= self.road_l) & (x <= self.road_r)
        walk_r = (x > self.road_r) & (x <= self.out[1]) & ~in_cross
        walk_l = (x < self.road_l) & (x >= -self.out[-1]) & ~in_cross
        cls[walk_r | walk_l] = SIDEWALK
        cls[road | (in_cross & ~walk_r & ~walk_l)] = ROAD
        return cls, in_cross

    def _paint_sidewalks(self, rgb: np.ndarray, cls: np.ndarray, x: np.ndarray, zz: np.ndarray,
                         colours: dict[str, np.ndarray]) -> None:
        """Paving tiles with darker joints and a lighter kerb along the road."""
        sidewalk = cls == SIDEWALK
        if not sidewalk.any():
            return
        walk_col, curb_col = colours["walk"], colours["curb"]
        tile = self.rng.uniform(0.5, 1.0)
        across = np.where(x > 0, x - self.road_r, -self.road_l - x)
        joint = ((zz % tile) < 0.06) | ((across % tile) < 0.06)
        curb = across < 0.3
        col = np.where(joint[..., None], walk_col * 0.82, walk_col)
        col = np.where(curb[..., None], curb_col, col)
        rgb[sidewalk] = col[sidewalk]

    def _lane_markings(self, x: np.ndarray, zz: np.ndarray,
                       in_cross: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(white, yellow) marking masks in world coordinates, so dashes shrink with distance."""
        r = self.rng
        marks = np.zeros(zz.shape, bool)
        yellow = np.zeros(zz.shape, bool)
        lw = r.uniform(0.14, 0.22)
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
        return marks, yellow

    def _shade_street(self, rgb: np.ndarray, on_road: np.ndarray, x: np.ndarray, zz: np.ndarray) -> None:
        """Slightly darker tyre tracks in every lane, and sometimes a building's shadow across the street."""
        r = self.rng
        lane_pos = (x - self.x_centre) % self.lane_w
        tracks = (np.abs(lane_pos - self.lane_w / 2) > 0.55) & (np.abs(lane_pos - self.lane_w / 2) < 1.05)
        rgb[on_road & ~tracks] *= r.uniform(1.0, 1.06)
        if self.weather == "clear" and self.kind != "open" and r.random() < 0.45:
            side = 1 if r.random() < 0.5 else -1
            edge = r.uniform(-2.0, 5.0) + r.uniform(-0.15, 0.15) * zz
            shade = (side * x) > edge
            rgb[shade] *= r.uniform(0.55, 0.75)
