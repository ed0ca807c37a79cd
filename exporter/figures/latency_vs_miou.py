"""Latency vs mIoU: one numbered point per artifact on one runtime, a key explaining the numbers beside the plot."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from exporter.contracts.bench_json import BenchRow
from exporter.drift import Budget, miou_drop_points
from exporter.figures.common import FONT, SCREEN_DPI, distinct_labels, message_figure, pyplot, save_png
from exporter.figures.label_layout import Box, LabelSpot, Point, box_overlap, place_labels

RUNTIME_STYLES = {"keras": ("#333333", "D"), "litert": ("#1f77b4", "o"), "onnxruntime": ("#ff7f0e", "s"),
                  "openvino": ("#2ca02c", "^")}
OTHER_STYLES = [("#9467bd", "v"), ("#8c564b", "P"), ("#e377c2", "X"), ("#17becf", "*"), ("#bcbd22", "h")]
MARKER = 6.0  # pixels: half the size of a point's marker, which no label may cover
BUDGET_RED = "#d62728"


@dataclass
class LatencyFigure:
    """The latency-vs-mIoU figure before it is saved, with what tests and callers may check."""

    fig: object
    ax: object | None
    rows: list[BenchRow]  # in key order: number i + 1 is rows[i]
    spots: list[LabelSpot]
    budget_miou: float | None
    note: str | None


@dataclass(frozen=True)
class _Layout:
    """The figure in inches: the plot on the left, the key (a fixed-width table) on its right."""

    key_w: float
    plot_h: float
    bottom: float
    line_h: float  # one line of the key
    left: float = 0.85
    plot_w: float = 7.2
    gap: float = 0.35
    right: float = 0.15
    top: float = 0.8

    @property
    def fig_w(self) -> float:
        return self.left + self.plot_w + self.gap + self.key_w + self.right

    @property
    def fig_h(self) -> float:
        return self.top + self.plot_h + self.bottom

    def plot_box(self) -> tuple[float, float, float, float]:
        """The plot's axes, in figure fractions."""
        return (self.left / self.fig_w, self.bottom / self.fig_h, self.plot_w / self.fig_w, self.plot_h / self.fig_h)

    def key_box(self) -> tuple[float, float, float, float]:
        """The key's axes, in figure fractions."""
        return ((self.left + self.plot_w + self.gap) / self.fig_w, self.bottom / self.fig_h, self.key_w / self.fig_w,
                self.plot_h / self.fig_h)


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


def _runtime_styles(rows: list[BenchRow]) -> dict[str, tuple[str, str]]:
    """(colour, marker) per runtime present: the known runtimes first, in their fixed style, then the others."""
    present = list(dict.fromkeys(str(r.runtime) for r in rows))
    runtimes = [rt for rt in RUNTIME_STYLES if rt in present] + [rt for rt in present if rt not in RUNTIME_STYLES]
    others = iter(OTHER_STYLES * (1 + len(runtimes) // len(OTHER_STYLES)))
    return {rt: RUNTIME_STYLES.get(rt) or next(others) for rt in runtimes}


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
        columns.append(("vs Keras", [f"{-miou_drop_points(r.score('miou'), reference_miou):+.2f} pt" for r in rows],
                        ">"))
    widths = [max(len(head), *(len(v) for v in values)) for head, values, _ in columns]
    header = "  ".join(f"{head:{align}{w}}" for (head, _, align), w in zip(columns, widths, strict=True))
    lines = ["  ".join(f"{values[i]:{align}{w}}" for (_, values, align), w in zip(columns, widths, strict=True))
             for i in range(len(rows))]
    return header, lines


def _layout(header: str, lines: list[str], note: str | None) -> _Layout:
    """Room for the plot, the key's ``lines`` (at least) and the footnote."""
    char_w = FONT * 0.61 / 72
    line_h = FONT * 1.55 / 72
    key_w = 0.35 + char_w * max(len(header), *(len(t) for t in lines)) + 0.15
    return _Layout(key_w=key_w, plot_h=max(4.2, line_h * (len(lines) + 2)), bottom=0.8 if note else 0.6,
                   line_h=line_h)


def _draw_points(ax, rows: list[BenchRow], x: np.ndarray, y: np.ndarray, styles: dict) -> list:
    """A marker per row in its runtime's style (hollow on a GPU); the legend's handles."""
    from matplotlib.lines import Line2D

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
    return handles


def _set_axes(ax, rows: list[BenchRow], x: np.ndarray, levels: list[float]) -> None:
    """Latency on x (log scale when it spans more than 10x), mIoU on y with room for every level, the labels."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

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
    low, high = min(levels), max(levels)
    pad = max(0.004, 0.08 * (high - low))
    ax.set_ylim(low - pad, high + pad)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3f}"))
    per = "image" if {r.batch_size or 1 for r in rows} == {1} else "batch"
    ax.set_xlabel(f"p50 latency per {per} (ms{', log scale' if wide else ''}); lower is better", fontsize=FONT)
    ax.set_ylabel("mIoU on the evaluation frames; higher is better", fontsize=FONT)
    ax.tick_params(labelsize=FONT - 0.5)
    ax.grid(True, alpha=0.3)


def _draw_levels(ax, handles: list, reference_miou: float | None, budget: float | None,
                 max_miou_drop: float | None) -> list[tuple[float, str]]:
    """The Keras reference line and the budget line (shaded below); each line's (level, label text)."""
    from matplotlib.patches import Patch

    line_texts = []
    if reference_miou is not None:
        ax.axhline(reference_miou, color="0.35", lw=1.0, zorder=1, gid="reference")
        line_texts.append((reference_miou, f"Keras reference: {reference_miou:.3f}"))
    if budget is not None:
        ax.axhline(budget, color=BUDGET_RED, ls="--", lw=1.3, zorder=1, gid="budget")
        ax.axhspan(ax.get_ylim()[0], budget, color=BUDGET_RED, alpha=0.07, lw=0, zorder=0)
        handles.append(Patch(facecolor=BUDGET_RED, alpha=0.15, label="below the mIoU budget"))
        line_texts.append((budget, f"budget: \u2212{_points_text(max_miou_drop)} pt mIoU vs Keras ({budget:.3f})"))
    return line_texts


def _title_legend_note(fig, ax, layout: _Layout, handles: list, note: str | None) -> None:
    """The title, the runtimes' legend above the plot and the footnote under it."""
    fig.text(layout.left / layout.fig_w, 1 - 0.12 / layout.fig_h,
             "Latency vs mIoU: one point per artifact on one runtime", fontsize=FONT + 2, fontweight="bold", va="top")
    ax.legend(handles=handles, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=min(len(handles), 6),
              frameon=False, fontsize=FONT - 0.5, handletextpad=0.3, columnspacing=1.2, borderaxespad=0.2)
    if note:
        fig.text(layout.left / layout.fig_w, 0.1 / layout.fig_h, note, fontsize=FONT - 0.5, color="0.3",
                 va="bottom")


def _label_levels(ax, renderer, line_texts: list[tuple[float, str]], marks: list[Box],
                  budget: float | None) -> list[Box]:
    """Each line's label at the first end of its line where it hides no point and no other label; their boxes."""
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
                clash = sum(box_overlap(box, m) for m in (*marks, *obstacles))
                if best is None or clash < best[0]:
                    best = (clash, ha, ax_x, va, box)
            if best[0] == 0:
                break
        _, ha, ax_x, va, box = best
        artist.set_position((ax_x, level))
        artist.set_ha(ha)
        artist.set_va(va)
        obstacles.append(box)
    return obstacles


def _number_points(ax, renderer, pixels: list[Point], bounds: Box, obstacles: list[Box]) -> list[LabelSpot]:
    """Number i + 1 beside point i, placed by ``place_labels``, with a leader line where it had to move."""
    numbers = [ax.text(0, 0, str(i + 1), fontsize=FONT, ha="center", va="center") for i in range(len(pixels))]
    sizes = []
    for t in numbers:
        bb = t.get_window_extent(renderer)
        sizes.append((bb.width + 3, bb.height + 1))
    spots = place_labels(pixels, sizes, bounds, marker=MARKER, obstacles=obstacles)
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
    return spots


def _draw_key(ax_key, layout: _Layout, rows: list[BenchRow], header: str, lines: list[str], styles: dict) -> None:
    """The key: marker, number, artifact, runtime, latency, mIoU per row, in the order of the numbers."""
    ax_key.set_axis_off()
    ax_key.set_xlim(0, layout.key_w)
    ax_key.set_ylim(layout.plot_h / layout.line_h - 1.5, -1.5)  # one line of the key per line_h inches
    ax_key.text(0.35, -1, header, family="monospace", fontsize=FONT, fontweight="bold", va="center")
    for i, (r, text) in enumerate(zip(rows, lines, strict=True)):
        colour, marker_style = styles[str(r.runtime)]
        gpu = r.device == "gpu"
        ax_key.scatter([0.15], [i], s=40, marker=marker_style, facecolors="white" if gpu else colour,
                       edgecolors=colour, clip_on=False)
        ax_key.text(0.35, i, text, family="monospace", fontsize=FONT, va="center")


def latency_vs_miou_figure(results: Sequence[BenchRow], *, reference_miou: float | None = None,
                           max_miou_drop: float | None = None) -> LatencyFigure:
    """Build (not save) the latency-vs-mIoU figure; see ``latency_vs_miou``."""
    plt = pyplot()
    results = list(results)
    note = not_plotted_note(results)
    rows = sorted((r for r in results if r.ok and r.p50 is not None and r.score("miou") is not None),
                  key=lambda r: (r.p50, -r.score("miou")))
    if not rows:
        fig = message_figure(plt, "latency vs mIoU: no row has both a latency and an mIoU"
                             + (f"\n{note}" if note else ""), size=(7, 2))
        return LatencyFigure(fig, None, [], [], None, note)
    x = np.array([r.p50 for r in rows])
    y = np.array([r.score("miou") for r in rows])
    budget = Budget(max_miou_drop=max_miou_drop).miou_floor(reference_miou)
    header, lines = _key_lines(rows, reference_miou)
    layout = _layout(header, lines, note)
    fig = plt.figure(figsize=(layout.fig_w, layout.fig_h), dpi=SCREEN_DPI)
    ax = fig.add_axes(layout.plot_box())
    ax_key = fig.add_axes(layout.key_box())
    styles = _runtime_styles(rows)
    handles = _draw_points(ax, rows, x, y, styles)
    _set_axes(ax, rows, x, [*y.tolist(), *(v for v in (reference_miou, budget) if v is not None)])
    line_texts = _draw_levels(ax, handles, reference_miou, budget, max_miou_drop)
    _title_legend_note(fig, ax, layout, handles, note)

    # labels of the lines, where they hide no point; then the numbers beside the points
    renderer = fig.canvas.get_renderer()
    inside = ax.get_window_extent(renderer)
    bounds = (inside.x0 + 2, inside.y0 + 2, inside.x1 - 2, inside.y1 - 2)
    pixels = [tuple(ax.transData.transform((float(a), float(b)))) for a, b in zip(x, y, strict=True)]
    marks = [(px - MARKER, py - MARKER, px + MARKER, py + MARKER) for px, py in pixels]
    obstacles = _label_levels(ax, renderer, line_texts, marks, budget)
    spots = _number_points(ax, renderer, pixels, bounds, obstacles)
    _draw_key(ax_key, layout, rows, header, lines, styles)
    return LatencyFigure(fig, ax, rows, spots, budget, note)


def latency_vs_miou(results: list[BenchRow], path: str | os.PathLike[str], *, reference_miou: float | None = None,
                    max_miou_drop: float | None = None) -> Path:
    """Scatter of p50 latency (x; log scale when the range spans > 10x) vs mIoU (y), one point per ok row.

    Markers are coloured and shaped by runtime; each point carries a number, placed beside it without
    overlap, that the key to the right explains (artifact, runtime, latency, mIoU), sorted by latency.
    ``reference_miou`` draws a line at the Keras model's mIoU; with ``max_miou_drop`` (points: 1.0 = 0.01 mIoU)
    too, a dashed budget line at ``reference_miou - max_miou_drop / 100`` and a shaded area below it. Rows that
    failed, were skipped or lack a latency or an mIoU are not plotted; a footnote says how many.
    """
    built = latency_vs_miou_figure(results, reference_miou=reference_miou, max_miou_drop=max_miou_drop)
    return save_png(built.fig, path, dpi=SCREEN_DPI)
