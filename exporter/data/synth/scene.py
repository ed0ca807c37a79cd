"""One whole frame: where the roadside stretches and the objects go, the far-to-near drawing order,
and the picture-only finish (class textures, shadows, lighting, noise).
"""

from __future__ import annotations

import numpy as np

from exporter.data.synth.buildings import _Buildings
from exporter.data.synth.labels import (
    BUILDING,
    FENCE,
    N_CLASSES,
    PEDESTRIAN,
    POLE,
    ROAD,
    ROADLINE,
    SIDEWALK,
    SKY,
    TERRAIN,
    TRAFFICLIGHT,
    TRAFFICSIGN,
    VEGETATION,
    VEHICLES,
    WALL,
)
from exporter.data.synth.raster import _Parts, _smooth_noise
from exporter.data.synth.road_users import _RoadUsers
from exporter.data.synth.sky_ground import _SkyAndGround
from exporter.data.synth.street import _StreetFurniture

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


class _Scene(_SkyAndGround, _Buildings, _StreetFurniture, _RoadUsers):
    """One frame: camera, road layout, objects; ``render`` returns (image, mask)."""

    # -- roadside ----------------------------------------------------------------------------------
    def layout_backdrop(self, back: _Parts, edge: _Parts, lawn: list) -> None:
        """Buildings, walls, fences and hedges along both sides, far to near."""
        r = self.rng
        if self.kind == "city" and r.random() < 0.5:  # a block closing the street far away
            zc = r.uniform(70.0, 140.0)
            colour = self.facade_colour(10)
            self.building_front_block(back, zc, colour)
        for side in (-1, 1):
            for z0, z1 in reversed(self.roadside_stretches()):
                self.segment(back, edge, lawn, side, z0, z1)

    def roadside_stretches(self) -> list[tuple[float, float]]:
        """Consecutive (z0, z1) stretches of one roadside, near to far, broken at the crossing street."""
        r = self.rng
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
        return segments

    def segment(self, back: _Parts, edge: _Parts, lawn: list, side: int, z0: float, z1: float) -> None:
        """Fill one stretch of the roadside (between depths z0 and z1) according to the scene kind."""
        r = self.rng
        p = r.random()
        facade = self.facade_colour(12, 0.1)
        if self.kind == "city":
            if p < 0.72:
                self.building(back, side, z0, z1, 0.0 if r.random() < 0.7 else r.uniform(0.5, 2.0),
                              (r.uniform(7.0, 40.0), r.uniform(10.0, 25.0)), facade)
            elif p < 0.9:
                self.building(back, side, z0, z1, r.uniform(6.0, 15.0), (r.uniform(8.0, 30.0), 15.0), facade)
                self.wall(edge, side, z0, z1, r.uniform(1.6, 3.0))
            else:
                self.building(back, side, z0, z1, r.uniform(10.0, 20.0), (r.uniform(8.0, 25.0), 15.0), facade)
                if r.random() < 0.5:
                    self.fence(edge, side, z0, z1, r.uniform(1.2, 1.9))
        elif self.kind == "suburb":
            setback = r.uniform(4.0, 10.0)
            if p < 0.8:
                lot = z1 - z0
                h0 = z0 + lot * r.uniform(0.05, 0.3)
                h1 = h0 + min(lot * 0.7, r.uniform(7.0, 13.0))
                self.building(back, side, h0, h1, setback, (r.uniform(3.0, 6.5), r.uniform(8.0, 11.0)),
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

    # -- on the sidewalks and the road -------------------------------------------------------------
    def layout_objects(self) -> list:
        """(depth, drawing closure) for everything on the sidewalks and the road."""
        items: list = []
        self.place_streetlights(items)
        self.place_street_trees(items)
        self.place_signs(items)
        self.place_traffic_lights(items)
        self.place_pedestrians(items)
        self.place_vehicles(items)
        self.place_parked_cars(items)
        return items

    def place_streetlights(self, items: list) -> None:
        """Street lights along the kerbs, or wooden utility poles in the open."""
        r = self.rng
        for side in (-1, 1):
            if self.kind == "open":
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

    def place_street_trees(self, items: list) -> None:
        """A row of trees in wide city sidewalks."""
        r = self.rng
        for side in (-1, 1):
            if self.kind == "city" and self.walk[side] > 3.0 and r.random() < 0.45:
                x = side * (self.out[side] - 0.9)
                for z in np.arange(r.uniform(3.0, 10.0), 70.0, r.uniform(8.0, 16.0)):
                    if not self.in_cross(z - 2, z + 2):
                        items.append((z, lambda p, x=x, z=z: self.tree(p, x, z, 0.8)))

    def place_signs(self, items: list) -> None:
        """A few traffic signs beside the road, mostly on the right."""
        r = self.rng
        n_signs = int(r.integers(2, 5)) if self.kind == "city" else int(r.integers(1, 4))
        for _ in range(n_signs):
            side = 1 if r.random() < 0.75 else -1
            z = r.uniform(5.0, 35.0)
            x = side * (self.edge[side] + r.uniform(0.5, 1.2))
            items.append((z, lambda p, x=x, z=z: self.sign(p, x, z)))

    def place_traffic_lights(self, items: list) -> None:
        """Traffic lights at the crossing street, or pedestrian-crossing lights at a crosswalk."""
        r = self.rng
        if self.cross is not None and (self.kind == "city" or r.random() < 0.4):
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

    def place_pedestrians(self, items: list) -> None:
        """Pedestrians on the sidewalks, some in pairs, and sometimes on the crosswalk."""
        r = self.rng
        n_peds = {"city": int(r.integers(3, 11)), "suburb": int(r.integers(1, 5)),
                  "open": int(r.random() < 0.15)}[self.kind]
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

    def place_vehicles(self, items: list) -> None:
        """Traffic in every lane: ours driving away, the opposite lanes coming towards us."""
        r = self.rng
        density = {"city": 1.0, "suburb": 0.55, "open": 0.6}[self.kind]
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

    def place_parked_cars(self, items: list) -> None:
        """Cars parked along the kerb where the street has a parking lane."""
        r = self.rng
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

    # -- drawing and finish ------------------------------------------------------------------------
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
        """Paint sky and ground, then everything standing on it far to near; (image, mask)."""
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

