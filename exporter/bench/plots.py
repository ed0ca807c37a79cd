"""unet-bench pictures: latency vs mIoU, per-class IoU vs the reference, and a drift picture of class maps.

matplotlib is optional on the device: it is imported inside the functions (Agg backend) and a missing one
is a UserError. Every PNG is written atomically and kept small (re-encoded with a 256-colour palette when the
plain PNG would be over ~190 KB). The latency plot and the drift picture are saved at 100 dpi with text of
at least 9 pt, so that they read at 100 %; the per-class heatmap at 80 dpi.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from exporter.classes import colorize
from exporter.contracts.bench_json import BenchResult, BenchRow, reference_row
from exporter.errors import UserError
from exporter.fileio import atomic_path

DPI = 80
MAX_DRIFT_ARTIFACTS = 6
MAX_DRIFT_FRAMES = 3
SMALL_PNG_BYTES = 190_000
MAX_PNG_BYTES = 190_000
MISSING_MATPLOTLIB = "matplotlib is not installed: pip install 'unet-export[plots]' for --plots"


def _pyplot():
    """matplotlib.pyplot on the Agg backend, or UserError when matplotlib is missing."""
    try:
        import matplotlib
    except ImportError:
        raise UserError(MISSING_MATPLOTLIB) from None
    if matplotlib is None:  # blocked in sys.modules
        raise UserError(MISSING_MATPLOTLIB)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path, dpi: float = DPI) -> Path:
    """Render ``fig`` to PNG atomically; palette-quantise it when the plain PNG is large."""
    plt = _pyplot()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    data = buffer.getvalue()
    if len(data) > SMALL_PNG_BYTES:
        from PIL import Image  # a hard dependency of matplotlib

        rgb = Image.open(io.BytesIO(data)).convert("RGB")
        for colors, dither in ((256, True), (128, True), (64, True), (64, False)):
            palette = rgb.quantize(colors=colors, method=Image.Quantize.MEDIANCUT)
            image = rgb.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG if dither else
                                 Image.Dither.NONE)
            smaller = io.BytesIO()
            image.save(smaller, format="png", optimize=True)
            data = min(data, smaller.getvalue(), key=len)
            if len(data) <= MAX_PNG_BYTES:
                break
    with atomic_path(path, suffix=".png") as tmp:
        tmp.write_bytes(data)
    return Path(path)


def _message_figure(plt, text: str, size=(6, 2)):
    fig = plt.figure(figsize=size, dpi=DPI)
    fig.text(0.5, 0.5, text, ha="center", va="center", wrap=True)
    return fig


def row_labels(rows: list[BenchRow], with_device: bool = True) -> list[str]:
    """'artifact@runtime/device' per row; threads/batch appended where that alone would repeat."""
    base = [f"{r.artifact}@{r.runtime}" + (f"/{r.device}" if with_device else "") for r in rows]
    labels = []
    for r, text in zip(rows, base, strict=True):
        if base.count(text) > 1:
            if r.threads is not None:
                text += f" t{r.threads}"
            if r.batch_size not in (None, 1):
                text += f" b{r.batch_size}"
        labels.append(text)
    return labels


# ---------------------------------------------------------------- label placement (pure, pixels)

Box = tuple[float, float, float, float]  # x0, y0, x1, y1
Point = tuple[float, float]


class LabelSpot(NamedTuple):
    """Where a point's label goes (its box, in pixels) and the leader line to draw, if the label had to move."""

    box: Box
    leader: tuple[Point, Point] | None


def _overlap(a: Box, b: Box) -> float:
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
        total += sum(_overlap(box, b) for b in boxes if b is not None)
        total += sum(_overlap(box, m) for m in marks) + sum(_overlap(box, o) for o in obstacles)
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


# ---------------------------------------------------------------- latency vs mIoU

RUNTIME_STYLES = {"keras": ("#333333", "D"), "litert": ("#1f77b4", "o"), "onnxruntime": ("#ff7f0e", "s"),
                  "openvino": ("#2ca02c", "^")}
OTHER_STYLES = [("#9467bd", "v"), ("#8c564b", "P"), ("#e377c2", "X"), ("#17becf", "*"), ("#bcbd22", "h")]
LATENCY_DPI = 100
FONT = 9.5  # points: 13 px at LATENCY_DPI


def _runtime_styles(runtimes: list[str]) -> dict[str, tuple[str, str]]:
    others = iter(OTHER_STYLES * (1 + len(runtimes) // len(OTHER_STYLES)))
    return {rt: RUNTIME_STYLES.get(rt) or next(others) for rt in runtimes}


def not_plotted_note(results: Sequence[BenchRow]) -> str | None:
    """In plain words, how many rows the latency plot leaves out and why; None when it plots them all."""
    failed = sum(r.status == "failed" for r in results)
    skipped = sum(r.status == "skipped" for r in results)
    unmeasured = sum(r.ok and (r.p50 is None or r.score("miou") is None) for r in results)
    total = failed + skipped + unmeasured
    if not total:
        return None
    parts = []
    if failed:
        parts.append(f"{failed} failed")
    if skipped:
        parts.append(f"{skipped} {'was' if skipped == 1 else 'were'} skipped")
    if unmeasured:
        parts.append(f"{unmeasured} {'has' if unmeasured == 1 else 'have'} no latency or mIoU")
    return (f"{total} of {len(results)} row{'s' if len(results) != 1 else ''} not plotted: " + ", ".join(parts)
            + " (the bench table says why).")


def _points_text(value: float) -> str:
    return f"{value:.1f}" if round(value, 1) == value else f"{value:g}"


def _ms(value: float) -> str:
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


@dataclass
class LatencyFigure:
    """The latency-vs-mIoU figure before it is saved, with what tests and callers may check."""

    fig: object
    ax: object | None
    rows: list[BenchRow]  # in key order: number i + 1 is rows[i]
    spots: list[LabelSpot]
    budget_miou: float | None
    note: str | None


def _key_lines(rows: list[BenchRow], reference_miou: float | None) -> tuple[str, list[str]]:
    """Header and one fixed-width line per row for the key beside the plot."""
    artifacts = distinct_labels([r.artifact for r in rows], 30)
    runtimes = [str(r.runtime) + ("" if r.device in (None, "cpu") else f"/{r.device}") for r in rows]
    columns = [("#", [str(i + 1) for i in range(len(rows))], ">"), ("artifact", artifacts, "<"),
               ("runtime", runtimes, "<")]
    if len({r.threads for r in rows}) > 1:
        columns.append(("threads", ["-" if r.threads is None else str(r.threads) for r in rows], ">"))
    if len({r.batch_size or 1 for r in rows}) > 1:
        columns.append(("batch", [str(r.batch_size or 1) for r in rows], ">"))
    columns.append(("p50 ms", [_ms(r.p50) for r in rows], ">"))
    columns.append(("mIoU", [f"{r.score('miou'):.3f}" for r in rows], ">"))
    if reference_miou is not None:
        columns.append(("vs Keras", [f"{100 * (r.score('miou') - reference_miou):+.2f} pt" for r in rows], ">"))
    widths = [max(len(head), *(len(v) for v in values)) for head, values, _ in columns]
    header = "  ".join(f"{head:{align}{w}}" for (head, _, align), w in zip(columns, widths, strict=True))
    lines = ["  ".join(f"{values[i]:{align}{w}}" for (_, values, align), w in zip(columns, widths, strict=True))
             for i in range(len(rows))]
    return header, lines


def latency_vs_miou_figure(results: Sequence[BenchRow], *, reference_miou: float | None = None,
                           max_miou_drop: float | None = None) -> LatencyFigure:
    """Build (not save) the latency-vs-mIoU figure; see ``latency_vs_miou``."""
    plt = _pyplot()
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

    results = list(results)
    note = not_plotted_note(results)
    rows = sorted((r for r in results if r.ok and r.p50 is not None and r.score("miou") is not None),
                  key=lambda r: (r.p50, -r.score("miou")))
    if not rows:
        fig = _message_figure(plt, "latency vs mIoU: no row has both a latency and an mIoU"
                              + (f"\n{note}" if note else ""), size=(7, 2))
        return LatencyFigure(fig, None, [], [], None, note)
    x = np.array([r.p50 for r in rows])
    y = np.array([r.score("miou") for r in rows])
    budget = (reference_miou - max_miou_drop / 100.0
              if reference_miou is not None and max_miou_drop is not None else None)
    header, lines = _key_lines(rows, reference_miou)

    # layout in inches: plot on the left, the key (a fixed-width table) on the right
    char_w = FONT * 0.61 / 72
    line_h = FONT * 1.55 / 72
    key_w = 0.35 + char_w * max(len(header), *(len(t) for t in lines)) + 0.15
    plot_w, left, gap, right = 7.2, 0.85, 0.35, 0.15
    top, bottom = 0.8, 0.8 if note else 0.6
    plot_h = max(4.2, line_h * (len(rows) + 2))
    fig_w, fig_h = left + plot_w + gap + key_w + right, top + plot_h + bottom
    fig = plt.figure(figsize=(fig_w, fig_h), dpi=LATENCY_DPI)
    ax = fig.add_axes((left / fig_w, bottom / fig_h, plot_w / fig_w, plot_h / fig_h))
    ax_key = fig.add_axes(((left + plot_w + gap) / fig_w, bottom / fig_h, key_w / fig_w, plot_h / fig_h))

    present = list(dict.fromkeys(str(r.runtime) for r in rows))
    styles = _runtime_styles([rt for rt in RUNTIME_STYLES if rt in present] + [rt for rt in present
                                                                              if rt not in RUNTIME_STYLES])
    handles = []
    for runtime, (colour, marker) in styles.items():
        for gpu in (False, True):
            sel = [k for k, r in enumerate(rows) if str(r.runtime) == runtime and (r.device == "gpu") == gpu]
            if not sel:
                continue
            face = "white" if gpu else colour
            ax.scatter(x[sel], y[sel], s=58, marker=marker, facecolors=face, edgecolors=colour if gpu else "white",
                       linewidths=1.4 if gpu else 0.8, zorder=4 if runtime == "keras" else 3)
            handles.append(Line2D([], [], ls="", marker=marker, markersize=8, markerfacecolor=face,
                                  markeredgecolor=colour, label=runtime + (" (GPU)" if gpu else "")))

    wide = x.min() > 0 and x.max() / x.min() > 10
    if wide:
        ax.set_xscale("log")
        ax.set_xlim(float(x.min()) / 1.5, float(x.max()) * 1.5)
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    else:
        span = float(x.max() - x.min()) or float(x.max()) or 1.0
        ax.set_xlim(max(0.0, float(x.min()) - 0.1 * span), float(x.max()) + 0.1 * span)
    levels = [*y.tolist(), *(v for v in (reference_miou, budget) if v is not None)]
    low, high = min(levels), max(levels)
    pad = max(0.004, 0.08 * (high - low))
    ax.set_ylim(low - pad, high + pad)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3f}"))
    batches = {r.batch_size or 1 for r in rows}
    per = "image" if batches == {1} else "batch"
    ax.set_xlabel(f"p50 latency per {per} (ms{', log scale' if wide else ''}); lower is better", fontsize=FONT)
    ax.set_ylabel("mIoU on the evaluation frames; higher is better", fontsize=FONT)
    ax.tick_params(labelsize=FONT - 0.5)
    ax.grid(True, alpha=0.3)

    line_texts = []
    if reference_miou is not None:
        ax.axhline(reference_miou, color="0.35", lw=1.0, zorder=1, gid="reference")
        line_texts.append((reference_miou, f"Keras reference: {reference_miou:.3f}"))
    if budget is not None:
        ax.axhline(budget, color="#d62728", ls="--", lw=1.3, zorder=1, gid="budget")
        ax.axhspan(ax.get_ylim()[0], budget, color="#d62728", alpha=0.07, lw=0, zorder=0)
        handles.append(Patch(facecolor="#d62728", alpha=0.15, label="below the mIoU budget"))
        line_texts.append((budget, f"budget: \u2212{_points_text(max_miou_drop)} pt mIoU vs Keras ({budget:.3f})"))

    fig.text(left / fig_w, 1 - 0.12 / fig_h, "Latency vs mIoU: one point per artifact on one runtime",
             fontsize=FONT + 2, fontweight="bold", va="top")
    ax.legend(handles=handles, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=min(len(handles), 6),
              frameon=False, fontsize=FONT - 0.5, handletextpad=0.3, columnspacing=1.2, borderaxespad=0.2)
    if note:
        fig.text(left / fig_w, 0.1 / fig_h, note, fontsize=FONT - 0.5, color="0.3", va="bottom")

    # labels of the lines, where they hide no point; then the numbers beside the points
    renderer = fig.canvas.get_renderer()
    inside = ax.get_window_extent(renderer)
    bounds = (inside.x0 + 2, inside.y0 + 2, inside.x1 - 2, inside.y1 - 2)
    pixels = [tuple(ax.transData.transform((float(a), float(b)))) for a, b in zip(x, y, strict=True)]
    marker = 6.0
    marks = [(px - marker, py - marker, px + marker, py + marker) for px, py in pixels]
    obstacles: list[Box] = []
    for level, text in line_texts:
        artist = ax.text(0, level, text, fontsize=FONT - 0.5, color="#b22222" if level == budget else "0.25",
                         transform=ax.get_yaxis_transform(), zorder=4,
                         bbox=dict(facecolor="white", edgecolor="none", alpha=0.85, pad=1.0))
        best = None
        for ha, ax_x in (("left", 0.01), ("right", 0.99)):
            for va in ("bottom", "top"):
                artist.set_position((ax_x, level))
                artist.set_ha(ha)
                artist.set_va(va)
                bb = artist.get_window_extent(renderer).padded(2)
                box = (bb.x0, bb.y0 + (2 if va == "bottom" else -2), bb.x1, bb.y1 + (2 if va == "bottom" else -2))
                clash = sum(_overlap(box, m) for m in (*marks, *obstacles))
                if best is None or clash < best[0]:
                    best = (clash, ha, ax_x, va, box)
            if best[0] == 0:
                break
        _, ha, ax_x, va, box = best
        artist.set_position((ax_x, level))
        artist.set_ha(ha)
        artist.set_va(va)
        obstacles.append(box)

    numbers = [ax.text(0, 0, str(i + 1), fontsize=FONT, ha="center", va="center") for i in range(len(rows))]
    sizes = []
    for t in numbers:
        bb = t.get_window_extent(renderer)
        sizes.append((bb.width + 3, bb.height + 1))
    spots = place_labels(pixels, sizes, bounds, marker=marker, obstacles=obstacles)
    to_data = ax.transData.inverted()
    for t, spot in zip(numbers, spots, strict=True):
        cx, cy = (spot.box[0] + spot.box[2]) / 2, (spot.box[1] + spot.box[3]) / 2
        t.set_position(to_data.transform((cx, cy)))
        t.set_zorder(5)
        t.set_bbox(dict(facecolor="white", edgecolor="none", alpha=0.75, pad=0.4))
        if spot.leader is not None:
            (ax0, ay0), (ax1, ay1) = spot.leader
            ax.plot(*zip(to_data.transform((ax0, ay0)), to_data.transform((ax1, ay1)), strict=True),
                    color="0.45", lw=0.7, zorder=2)

    # the key: marker, number, artifact, runtime, latency, mIoU per row, in the order of the numbers
    ax_key.set_axis_off()
    ax_key.set_xlim(0, key_w)
    ax_key.set_ylim(plot_h / line_h - 1.5, -1.5)  # one line of the key per line_h inches
    ax_key.text(0.35, -1, header, family="monospace", fontsize=FONT, fontweight="bold", va="center")
    for i, (r, text) in enumerate(zip(rows, lines, strict=True)):
        colour, marker_style = styles[str(r.runtime)]
        gpu = r.device == "gpu"
        ax_key.scatter([0.15], [i], s=40, marker=marker_style, facecolors="white" if gpu else colour,
                       edgecolors=colour, clip_on=False)
        ax_key.text(0.35, i, text, family="monospace", fontsize=FONT, va="center")
    return LatencyFigure(fig, ax, rows, spots, budget, note)


def latency_vs_miou(results: list[BenchRow], path, *, reference_miou: float | None = None,
                    max_miou_drop: float | None = None) -> Path:
    """Scatter of p50 latency (x; log scale when the range spans > 10x) vs mIoU (y), one point per ok row.

    Markers are coloured and shaped by runtime; each point carries a number, placed beside it without
    overlap, that the key to the right explains (artifact, runtime, latency, mIoU), sorted by latency.
    ``reference_miou`` draws a line at the Keras model's mIoU; with ``max_miou_drop`` (points: 1.0 = 0.01 mIoU)
    too, a dashed budget line at ``reference_miou - max_miou_drop / 100`` and a shaded area below it. Rows that
    failed, were skipped or lack a latency or an mIoU are not plotted; a footnote says how many.
    """
    built = latency_vs_miou_figure(results, reference_miou=reference_miou, max_miou_drop=max_miou_drop)
    return _save(built.fig, path, dpi=LATENCY_DPI)


def per_class_iou_heatmap(results: list[BenchRow], class_names: list[str], path) -> Path:
    """Heatmap of per-class IoU per ok row (one row per artifact@runtime[/device]), beside its delta vs the reference.

    Only classes with an IoU in some row are shown; the reference row comes first.
    """
    plt = _pyplot()
    reference = reference_row(results)
    candidates = [r for r in results if r.ok and r.accuracy is not None and r.accuracy.per_class_iou]
    if reference in candidates:
        candidates.remove(reference)
        candidates.insert(0, reference)
    rows, seen = [], set()
    for r in candidates:
        if r.key[:3] not in seen:
            seen.add(r.key[:3])
            rows.append(r)
    if not rows:
        return _save(_message_figure(plt, "per-class IoU: no ok row has per-class IoU"), path)
    n = max(len(r.accuracy.per_class_iou) for r in rows)
    iou = np.full((len(rows), n), np.nan)
    for i, r in enumerate(rows):
        for c, v in enumerate(r.accuracy.per_class_iou):
            if v is not None:
                iou[i, c] = v
    present = np.where(np.isfinite(iou).any(axis=0))[0]
    iou = iou[:, present]
    names = [class_names[c] if c < len(class_names) else f"class_{c}" for c in present]
    labels = [f"{r.artifact}@{r.runtime}" + ("" if r.device in (None, "cpu") else f"/{r.device}")
              + ("  (reference)" if r is reference else "") for r in rows]
    has_delta = reference is not None and len(rows) > 1
    width = max(5.0, 0.45 * len(present) + 1.0)
    fig_w = 2.8 + width * (2 if has_delta else 1)
    fig, axes = plt.subplots(1, 2 if has_delta else 1, figsize=(fig_w, 1.8 + 0.45 * len(rows)), dpi=DPI,
                             squeeze=False)
    panels = [(axes[0, 0], iou, "per-class IoU", "viridis", (0.0, 1.0), "{:.2f}")]
    if has_delta:
        delta = 100 * (iou - iou[0])
        limit = max(1.0, float(np.nanmax(np.abs(delta))) if np.isfinite(delta).any() else 1.0)
        panels.append((axes[0, 1], delta, "IoU minus reference (points)", "RdBu", (-limit, limit), "{:+.1f}"))
    for k, (ax, values, title, cmap, (vmin, vmax), fmt) in enumerate(panels):
        masked = np.ma.masked_invalid(values)
        colormap = plt.get_cmap(cmap).with_extremes(bad="0.85")
        image = ax.imshow(masked, cmap=colormap, vmin=vmin, vmax=vmax, aspect="auto", interpolation="nearest")
        for (i, j), v in np.ndenumerate(values):
            if np.isfinite(v):
                shade = (v - vmin) / (vmax - vmin)
                dark = shade < 0.55 if cmap == "viridis" else abs(shade - 0.5) > 0.3
                ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=7.5,
                        color="white" if dark else "black")
            else:
                ax.text(j, i, "-", ha="center", va="center", fontsize=7.5, color="0.4")
        ax.set_xticks(range(len(names)), names, rotation=40, ha="right", fontsize=8)
        ax.set_yticks(range(len(labels)), labels if k == 0 else [""] * len(labels), fontsize=8)
        ax.set_title(title, fontsize=10)
        fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02)
    fig.tight_layout()
    return _save(fig, path)


# ---------------------------------------------------------------- drift picture

DRIFT_DPI = 100
DRIFT_FONT = 9.5  # points: 13 px at DRIFT_DPI
DRIFT_PANEL_W = 1.6  # inches: a 128-pixel-wide map is drawn 160 pixels wide
DRIFT_TEXT_W = 2.6
DRIFT_NAME_WIDTH = 32  # characters of an artifact name in the row heading


def _shorten_middle(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width // 2 - 1] + "..." + text[-(width - width // 2 - 2):]


def distinct_labels(names: Sequence[str], width: int) -> list[str]:
    """Each name in at most ``width`` characters, and different names stay different.

    A name that fits is kept; a longer one is shortened in the middle. Where that makes different names equal
    (``unet_int8_floathead_v2…`` and ``unet_int8_floathead_v3…``), what they share at the start and the end is
    cut instead and the part that tells them apart is kept, with "…" where text was cut; as a last resort
    " #2", " #3"… is appended.
    """
    width = max(width, 8)
    labels = [_shorten_middle(n, width) for n in names]
    for label in dict.fromkeys(labels):
        group = [i for i, other in enumerate(labels) if other == label]
        texts = [names[i] for i in group]
        if len(set(texts)) < 2:
            continue
        prefix = len(os.path.commonprefix(texts))
        suffix = len(os.path.commonprefix([t[::-1] for t in texts]))
        for i in group:
            name = names[i]
            lo, hi = prefix, max(prefix, len(name) - min(suffix, len(name) - prefix))
            room = width - 2 - (hi - lo)
            if room < 0:  # the differing part alone is too long: its middle goes
                labels[i] = "\u2026" + _shorten_middle(name[lo:hi], width - 2) + "\u2026"
                continue
            grow_right = min(len(name) - hi, max(room // 2, room - lo))
            hi += grow_right
            lo = max(0, lo - (room - grow_right))
            labels[i] = ("\u2026" if lo > 0 else "") + name[lo:hi] + ("\u2026" if hi < len(name) else "")
    seen: dict[str, str] = {}
    counts: dict[str, int] = {}
    for i, (name, label) in enumerate(zip(names, labels, strict=True)):
        if seen.setdefault(label, name) != name:
            counts[label] = counts.get(label, 1) + 1
            labels[i] = f"{label} #{counts[label]}"
    return labels


def _pct(value: float) -> str:
    """A fraction as a percentage with 2 decimals, as the bench table writes it; never 100.00% unless it is."""
    text = f"{100 * value:.2f}%"
    return ">99.99%" if text == "100.00%" and value < 1 else text


def agreement_lines(shown_frames: int, shown: float, table: float | None = None,
                    eval_frames: int | None = None) -> list[str]:
    """The words under an artifact's name: agreement on the frames drawn and, if known, the bench table's value."""
    frames = f"{shown_frames} frame{'s' if shown_frames != 1 else ''}"
    lines = ["pixels agreeing with Keras:", f"  on these {frames}: {_pct(shown)}"]
    if table is not None:
        scope = f"all {eval_frames} eval frames" if eval_frames else "all eval frames"
        lines.append(f"  on {scope}: {_pct(table)}")
    return lines


def drift_picture(images: np.ndarray, reference_maps: np.ndarray, rows: list[tuple[str, np.ndarray]], path,
                  labels: np.ndarray | None = None, *, table_agreement: Sequence[float | None] | None = None,
                  eval_frames: int | None = None) -> Path:
    """Where each artifact's class maps differ from the Keras reference: one column per frame (at most 3), and
    one row each for the frame, [the label map,] the reference class map, then each artifact: the reference
    class map faded, with the pixels whose class differs from the reference in red.

    Beside each artifact its name, runtime and the share of pixels agreeing with the reference on the frames
    drawn; ``table_agreement`` (one value or None per entry of ``rows``: the bench row's
    ``agreement_vs_reference``, over all ``eval_frames`` evaluation frames) adds the bench table's figure.

    ``images``: K×H×W×3 floats in [0, 1] (uint8 is accepted); maps: K×H×W class ids; ``rows``: (name, maps) with
    name as ``artifact@runtime/device``. At most 6 artifacts are drawn: with more, the 6 with the lowest
    agreement on these frames (said so in the title).
    """
    plt = _pyplot()
    images = np.asarray(images)
    images = images.astype(np.float64) / 255.0 if images.dtype == np.uint8 else np.clip(images, 0.0, 1.0)
    reference_maps = np.asarray(reference_maps)
    k = min(MAX_DRIFT_FRAMES, len(images), len(reference_maps))
    if k == 0:
        raise UserError("drift picture: no frames")
    for name, maps in rows:
        if np.shape(maps)[1:] != reference_maps.shape[1:] or len(maps) < k:
            raise UserError(f"drift picture: {name} maps {np.shape(maps)} do not match the reference "
                            f"{reference_maps.shape}")
    if images.shape[1:3] != reference_maps.shape[1:3]:
        raise UserError(f"drift picture: frames {images.shape} do not match the maps {reference_maps.shape}")
    if table_agreement is not None and len(table_agreement) != len(rows):
        raise UserError(f"drift picture: {len(table_agreement)} table agreements for {len(rows)} artifacts")
    images, reference_maps = images[:k], reference_maps[:k]
    tables = list(table_agreement) if table_agreement is not None else [None] * len(rows)
    scored = [(name, np.asarray(maps)[:k], float(np.mean(np.asarray(maps)[:k] == reference_maps)), table)
              for (name, maps), table in zip(rows, tables, strict=True)]
    subtitle = (f"{k} evaluation frame{'s' if k > 1 else ''}; red = the pixel's class differs from the Keras "
                "reference,\npale = same class as the reference (its class colour, faded)")
    if len(scored) > MAX_DRIFT_ARTIFACTS:
        chosen = sorted(range(len(scored)), key=lambda i: scored[i][2])[:MAX_DRIFT_ARTIFACTS]
        subtitle += (f"\nshowing the {MAX_DRIFT_ARTIFACTS} of {len(scored)} artifacts that agree least with "
                     "the reference on these frames")
        scored = [scored[i] for i in sorted(chosen)]

    heads = [name.split("@", 1) for name, *_ in scored]
    artifacts = distinct_labels([h[0] for h in heads], DRIFT_NAME_WIDTH)
    runtimes = ["on " + _shorten_middle(h[1], DRIFT_NAME_WIDTH - 3) if len(h) > 1 else "" for h in heads]
    # (bold heading, plain lines, pictures, panel titles)
    table: list[tuple[str, list[str], list[np.ndarray], list[str]]] = [
        ("camera frame", [], list(images), [f"frame {f + 1}" for f in range(k)])]
    if labels is not None:
        table.append(("labels", ["(ground truth)"], [colorize(m) for m in np.asarray(labels)[:k]], []))
    table.append(("Keras reference", ["(its class map)"], [colorize(m) for m in reference_maps], []))
    for (_, maps, shown, total), artifact, runtime in zip(scored, artifacts, runtimes, strict=True):
        pictures, titles = [], []
        for f in range(k):
            differ = maps[f] != reference_maps[f]
            overlay = 0.72 + 0.22 * colorize(reference_maps[f]) / 255.0  # the reference's classes, pale
            overlay[differ] = (0.85, 0.0, 0.0)
            pictures.append(overlay)
            titles.append(f"{_pct(1.0 - float(np.mean(differ)))} agree")
        lines = ([runtime] if runtime else []) + agreement_lines(k, shown, total, eval_frames)
        table.append((artifact, lines, pictures, titles))

    h, w = reference_maps.shape[1:]
    panel_w, panel_h, gap = DRIFT_PANEL_W, DRIFT_PANEL_W * h / w, 0.08
    line_h = DRIFT_FONT * 1.3 / 72
    row_heights = [(0.26 if titles else 0.08) + max(panel_h, line_h * (1 + len(lines)))
                   for _, lines, _, titles in table]
    left, top, bottom = 0.15, 0.35 + line_h * (1 + subtitle.count("\n")) + 0.1, 0.15
    fig_w = left + DRIFT_TEXT_W + k * (panel_w + gap) + 0.05
    fig_h = top + sum(row_heights) + bottom
    fig = plt.figure(figsize=(fig_w, fig_h), dpi=DRIFT_DPI)
    fig.text(left / fig_w, 1 - 0.1 / fig_h, "Where each artifact's class map differs from the Keras reference",
             fontsize=DRIFT_FONT + 2, fontweight="bold", va="top")
    fig.text(left / fig_w, 1 - 0.4 / fig_h, subtitle, fontsize=DRIFT_FONT, va="top", linespacing=1.3)
    y_top = fig_h - top
    for (heading, lines, pictures, titles), row_h in zip(table, row_heights, strict=True):
        title_band = 0.26 if titles else 0.08
        panel_top = y_top - title_band
        fig.text(left / fig_w, panel_top / fig_h, heading, fontsize=DRIFT_FONT + 0.5, fontweight="bold", va="top")
        if lines:
            fig.text(left / fig_w, (panel_top - line_h * 1.1) / fig_h, "\n".join(lines), fontsize=DRIFT_FONT,
                     va="top", linespacing=1.3)
        for f, picture in enumerate(pictures):
            x0 = left + DRIFT_TEXT_W + f * (panel_w + gap)
            ax = fig.add_axes((x0 / fig_w, (panel_top - panel_h) / fig_h, panel_w / fig_w, panel_h / fig_h))
            ax.imshow(picture, interpolation="nearest", aspect="auto")
            ax.set_xticks([])
            ax.set_yticks([])
            if f < len(titles):
                ax.set_title(titles[f], fontsize=DRIFT_FONT, pad=3)
        y_top -= row_h
    return _save(fig, path, dpi=DRIFT_DPI)


def _load_maps(path: Path) -> np.ndarray | None:
    """K×H×W class maps from an .npz (key 'maps' / 'class_maps' / the first array) or .npy; None if unreadable."""
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    if isinstance(data, np.ndarray):
        return data if data.ndim == 3 else None
    try:
        key = next((k for k in ("maps", "class_maps", "preview_maps") if k in data.files), None)
        key = key or (data.files[0] if data.files else None)
        maps = None if key is None else np.asarray(data[key])
    except (OSError, ValueError, EOFError):
        return None
    finally:
        data.close()
    return maps if maps is not None and maps.ndim == 3 else None


def write_plots(bench: BenchResult, out_dir, class_names: list[str], eval_images=None, eval_labels=None,
                reference_maps=None, maps_root=None, *, reference_miou: float | None = None,
                max_miou_drop: float | None = None) -> list[Path]:
    """Write latency_vs_miou.png, per_class_iou.png and, when possible, drift.png into ``out_dir``.

    ``reference_miou`` and ``max_miou_drop`` (points) go to ``latency_vs_miou``: the Keras line and the budget
    line. The drift picture needs ``eval_images`` (K×H×W×3) and ok rows whose ``preview_maps`` files exist under
    ``maps_root`` (default: ``out_dir``). ``reference_maps`` defaults to the reference row's preview maps;
    ``eval_labels`` (K×H×W), if given, adds a label row. Beside each artifact the drift picture also shows its
    row's ``agreement_vs_reference`` from the bench (over the ``reference.frames`` evaluation frames).
    Returns the paths written.
    """
    out_dir = Path(out_dir)
    results = list(bench.rows)
    written = [latency_vs_miou(results, out_dir / "latency_vs_miou.png", reference_miou=reference_miou,
                               max_miou_drop=max_miou_drop),
               per_class_iou_heatmap(results, class_names, out_dir / "per_class_iou.png")]
    if eval_images is None:
        return written
    root = Path(maps_root) if maps_root is not None else out_dir
    reference = reference_row(results)

    def maps_of(row):
        rel = row.preview_maps
        if not rel:
            return None
        full = Path(rel) if os.path.isabs(rel) else root / rel
        return _load_maps(full) if full.is_file() else None

    if reference_maps is None and reference is not None:
        reference_maps = maps_of(reference)
    if reference_maps is None:
        return written
    reference_maps = np.asarray(reference_maps)
    images = np.asarray(eval_images)
    k = min(len(images), len(reference_maps), MAX_DRIFT_FRAMES)
    if k == 0 or images.shape[1:3] != reference_maps.shape[1:3]:
        return written
    rows, table, seen = [], [], set()
    candidates = [r for r in results if r.ok and r is not reference]
    names = row_labels(candidates)
    for r, name in zip(candidates, names, strict=True):
        key = r.key[:3]
        maps = maps_of(r)
        if key in seen or maps is None or maps.shape[1:] != reference_maps.shape[1:] or len(maps) < k:
            continue
        seen.add(key)
        rows.append((name, maps))
        table.append(r.score("agreement_vs_reference"))
    if not rows:
        return written
    labels = None
    if eval_labels is not None and np.shape(eval_labels)[1:3] == reference_maps.shape[1:3] \
            and len(eval_labels) >= k:
        labels = np.asarray(eval_labels)[:k]
    frames = (bench.reference or {}).get("frames")
    eval_frames = frames if isinstance(frames, int) and not isinstance(frames, bool) and frames > 0 else None
    written.append(drift_picture(images[:k], reference_maps[:k], rows, out_dir / "drift.png", labels=labels,
                                 table_agreement=table, eval_frames=eval_frames))
    return written
