"""Where labels go on a picture, in pixels: beside their points, clear of each other, with leader lines if moved.

Pure geometry (boxes, segments, a greedy search); no matplotlib.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

Box = tuple[float, float, float, float]  # x0, y0, x1, y1
Point = tuple[float, float]


class LabelSpot(NamedTuple):
    """Where a point's label goes (its box, in pixels) and the leader line to draw, if the label had to move."""

    box: Box
    leader: tuple[Point, Point] | None


def box_overlap(a: Box, b: Box) -> float:
    """Area two boxes share (0 when they only touch)."""
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def _turn(o: Point, a: Point, b: Point) -> float:
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def segments_cross(p1: Point, p2: Point, q1: Point, q2: Point) -> bool:
    """Whether two segments properly cross (sharing an end point is not crossing)."""
    return _turn(q1, q2, p1) * _turn(q1, q2, p2) < 0 and _turn(p1, p2, q1) * _turn(p1, p2, q2) < 0


def segment_hits_box(p: Point, q: Point, box: Box) -> bool:
    """Whether the segment p–q passes through the inside of ``box`` (Liang–Barsky clipping)."""
    x0, y0, x1, y1 = box[0] + 0.5, box[1] + 0.5, box[2] - 0.5, box[3] - 0.5
    if x0 >= x1 or y0 >= y1:
        return False
    t0, t1 = 0.0, 1.0
    dx, dy = q[0] - p[0], q[1] - p[1]
    for pk, qk in ((-dx, p[0] - x0), (dx, x1 - p[0]), (-dy, p[1] - y0), (dy, y1 - p[1])):
        if pk == 0:
            if qk < 0:
                return False
            continue
        t = qk / pk
        if pk < 0:
            t0 = max(t0, t)
        else:
            t1 = min(t1, t)
        if t0 > t1:
            return False
    return True


def _box_distance(p: Point, box: Box) -> float:
    """Distance from a point to the nearest point of a box (0 inside it)."""
    return math.hypot(max(box[0] - p[0], 0.0, p[0] - box[2]), max(box[1] - p[1], 0.0, p[1] - box[3]))


def _directions(ring: int) -> list[Point]:
    """Where to try a label around its point: right, left, above, below, then the diagonals (and more, further out)."""
    if ring == 0:
        return [(1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (1, -1), (-1, 1), (-1, -1)]
    angles = sorted((2 * math.pi * k / 16 for k in range(16)), key=lambda a: (abs(math.cos(a)) < 0.5, -math.cos(a)))
    return [(math.cos(a), math.sin(a)) for a in angles]


def place_labels(points: Sequence[Point], sizes: Sequence[tuple[float, float]], bounds: Box, *,
                 marker: float = 5.0, gap: float = 2.0, obstacles: Sequence[Box] = (),
                 rings: int = 14) -> list[LabelSpot]:
    """A box per point for a label of the given (width, height), greedily: the nearest spot around the point that
    overlaps no other label, no point's marker (a square of half-size ``marker``) and no obstacle, inside ``bounds``.

    A label right beside its point must be nearer to it than to any other point, so that it is clear whose it is.
    A label that is not right beside its point gets a leader line from the point to the box; a leader never
    crosses another leader, a label, a marker or an obstacle, and no label is put on a leader. Crowded points are
    placed first. When no free spot exists within ``rings`` steps, the least-overlapping spot is used.
    """
    n = len(points)
    marks = [(x - marker, y - marker, x + marker, y + marker) for x, y in points]
    boxes: list[Box | None] = [None] * n
    leaders: list[tuple[Point, Point]] = []
    spots: list[LabelSpot | None] = [None] * n
    crowd = [sum(abs(px - qx) < 60 and abs(py - qy) < 30 for qx, qy in points) for px, py in points]
    order = sorted(range(n), key=lambda i: (-crowd[i], points[i][0], points[i][1]))

    def cost(i: int, box: Box, leader) -> float:
        x0, y0, x1, y1 = box
        out = (max(0.0, bounds[0] - x0) + max(0.0, x1 - bounds[2]) + max(0.0, bounds[1] - y0)
               + max(0.0, y1 - bounds[3]))
        total = 1e6 * out
        total += sum(box_overlap(box, b) for b in boxes if b is not None)
        total += sum(box_overlap(box, m) for m in marks) + sum(box_overlap(box, o) for o in obstacles)
        total += 1e4 * sum(segment_hits_box(p, q, box) for p, q in leaders)
        if leader is None:  # right beside its point: no other point may be as close to it (whose label is it?)
            own = _box_distance(points[i], box)
            total += 1e3 * sum(_box_distance(points[j], box) < own + 1 for j in range(n)
                               if j != i and points[j] != points[i])
        else:
            p, q = leader
            total += 1e4 * sum(segments_cross(p, q, a, b) for a, b in leaders)
            total += 1e4 * sum(segment_hits_box(p, q, b) for b in boxes if b is not None)
            total += 1e4 * sum(segment_hits_box(p, q, o) for o in obstacles)
            total += 1e4 * sum(segment_hits_box(p, q, marks[j]) for j in range(n)  # markers it starts on aside
                               if j != i and _box_distance(points[i], marks[j]) > 0)
        return total

    for i in order:
        (x, y), (w, h) = points[i], sizes[i]
        best = None
        for ring in range(rings):
            distance = marker + gap + ring * (h + gap)
            for ux, uy in _directions(ring):
                cx, cy = x + ux * (distance + w / 2), y + uy * (distance + h / 2)
                box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
                leader = None
                if ring:
                    leader = ((x, y), (min(max(x, box[0]), box[2]), min(max(y, box[1]), box[3])))
                score = cost(i, box, leader)
                if best is None or score < best[0]:
                    best = (score, box, leader)
                if score == 0:
                    break
            if best[0] == 0:
                break
        _, box, leader = best
        boxes[i] = box
        if leader is not None:
            leaders.append(leader)
        spots[i] = LabelSpot(box, leader)
    return spots  # type: ignore[return-value]
