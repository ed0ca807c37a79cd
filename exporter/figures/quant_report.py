"""The quantization report's picture: the SQNR each layer's output carries along the U, the worst layers marked."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from exporter.figures.common import SCREEN_DPI, save_png

if TYPE_CHECKING:
    from exporter.export.quant_report import QuantReport

SQNR_CAP = 80.0  # dB drawn at most: an exact layer (infinite SQNR) stays on the plot
STAGE_COLOURS = {"encoder": "#dbe9f6", "bottleneck": "#fde2c8", "decoder": "#dff2df", "head": "#f6d5d5"}
KIND_MARKERS = {"conv": "o", "transposed conv": "^", "pool": "v", "concat": "s"}
WORST_ORANGE = "#b35900"


def _short_name(name: str) -> str:
    """A Keras layer name short enough for a tick label."""
    return (name.replace("conv2d_transpose", "up").replace("conv2d", "conv").replace("max_pooling2d", "pool")
            .replace("concatenate", "cat"))


def _shade_stages(ax, rep: QuantReport) -> None:
    """A shaded band per stage (encoder, bottleneck, decoder, head), its name on top."""
    for stage, colour in STAGE_COLOURS.items():
        members = [layer.index for layer in rep.layers if layer.stage == stage]
        if members:
            ax.axvspan(min(members) - 0.5, max(members) + 0.5, color=colour, zorder=0)
            ax.text((min(members) + max(members)) / 2, 0.98, stage, transform=ax.get_xaxis_transform(),
                    ha="center", va="top", fontsize=9, color="0.3")


def _mark_worst(ax, rep: QuantReport) -> None:
    """A ring and a note on the three int8 convolutions that add the most error themselves."""
    for rank, layer in enumerate(rep.worst(3)):
        ax.scatter([layer.index], [min(layer.sqnr_db, SQNR_CAP)], s=150, facecolors="none", edgecolors="#ff7f0e",
                   linewidths=1.8, zorder=3)
        ax.annotate(f"{layer.name}: \u2212{layer.added_db:.1f} dB here", (layer.index, min(layer.sqnr_db, SQNR_CAP)),
                    xytext=(10, 8 + 14 * rank), textcoords="offset points", ha="left", fontsize=8.5,
                    color=WORST_ORANGE, arrowprops={"arrowstyle": "-", "color": WORST_ORANGE, "lw": 0.6})


def sqnr_per_layer(rep: QuantReport, path: str | os.PathLike[str]) -> Path:
    """SQNR per layer along the U (encoder, bottleneck, decoder, head shaded), the worst layers marked.

    A missing matplotlib is an ImportError, which the report's writer takes as "no picture".
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 4.2), dpi=SCREEN_DPI)
    xs = [layer.index for layer in rep.layers]
    ys = [min(layer.sqnr_db, SQNR_CAP) for layer in rep.layers]
    _shade_stages(ax, rep)
    ax.plot(xs, ys, "-", color="0.55", zorder=1)
    for kind, marker in KIND_MARKERS.items():
        members = [layer for layer in rep.layers if layer.kind == kind]
        ax.scatter([layer.index for layer in members], [min(layer.sqnr_db, SQNR_CAP) for layer in members],
                   marker=marker, s=36, zorder=2, label=kind,
                   c=["#d62728" if layer.precision != "int8" else "#1f77b4" for layer in members])
    _mark_worst(ax, rep)
    low, high = min(ys), max(ys)
    ax.set_ylim(low - 0.15 * (high - low) - 1, high + 0.22 * (high - low) + 1)
    ax.set_xticks(xs, [_short_name(layer.name) for layer in rep.layers], rotation=70, fontsize=8)
    ax.set_ylabel("SQNR vs Keras (dB, higher = better)")
    ax.set_title(f"{rep.artifact}: error each layer's output carries vs Keras ({rep.frames} held-out frames); "
                 "blue = int8, red = kept float, ringed = adds the most", fontsize=10)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.32), ncols=4, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return save_png(fig, path)
