"""Per-class IoU of each ok bench row as a heatmap, beside its difference from the Keras reference."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from exporter.contracts.bench_json import BenchRow
from exporter.drift import reference_row
from exporter.figures.common import DPI, message_figure, pyplot, save_png


class _Panel(NamedTuple):
    """How one heatmap shows its values."""

    title: str
    cmap: str
    vmin: float
    vmax: float
    fmt: str  # a cell's text


def _heatmap_rows(results: list[BenchRow], reference: BenchRow | None) -> list[BenchRow]:
    """The ok rows with per-class IoU, one per artifact, runtime and device; the reference first."""
    candidates = [r for r in results if r.ok and r.accuracy is not None and r.accuracy.per_class_iou]
    if reference in candidates:
        candidates.remove(reference)
        candidates.insert(0, reference)
    rows, seen = [], set()
    for r in candidates:
        if r.key[:3] not in seen:
            seen.add(r.key[:3])
            rows.append(r)
    return rows


def _iou_matrix(rows: list[BenchRow]) -> tuple[np.ndarray, np.ndarray]:
    """Rows × classes IoU (NaN where missing), only the classes with an IoU somewhere; and those classes."""
    n = max(len(r.accuracy.per_class_iou) for r in rows)
    iou = np.full((len(rows), n), np.nan)
    for i, r in enumerate(rows):
        for c, v in enumerate(r.accuracy.per_class_iou):
            if v is not None:
                iou[i, c] = v
    present = np.where(np.isfinite(iou).any(axis=0))[0]
    return iou[:, present], present


def _draw_panel(plt, fig, ax, values: np.ndarray, panel: _Panel, names: list[str], labels: list[str]) -> None:
    """One heatmap, its value in each cell ("-" where there is none), class names below and a colour bar."""
    title, cmap, vmin, vmax, fmt = panel
    masked = np.ma.masked_invalid(values)
    colormap = plt.get_cmap(cmap).with_extremes(bad="0.85")
    image = ax.imshow(masked, cmap=colormap, vmin=vmin, vmax=vmax, aspect="auto", interpolation="nearest")
    for (i, j), v in np.ndenumerate(values):
        if np.isfinite(v):
            shade = (v - vmin) / (vmax - vmin)
            dark = shade < 0.55 if cmap == "viridis" else abs(shade - 0.5) > 0.3
            ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=7.5, color="white" if dark else "black")
        else:
            ax.text(j, i, "-", ha="center", va="center", fontsize=7.5, color="0.4")
    ax.set_xticks(range(len(names)), names, rotation=40, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02)


def per_class_iou_heatmap(results: list[BenchRow], class_names: list[str], path: str | os.PathLike[str]) -> Path:
    """Heatmap of per-class IoU per ok row (one row per artifact@runtime[/device]), beside its delta vs the reference.

    Only classes with an IoU in some row are shown; the reference row comes first.
    """
    plt = pyplot()
    reference = reference_row(results)
    rows = _heatmap_rows(results, reference)
    if not rows:
        return save_png(message_figure(plt, "per-class IoU: no ok row has per-class IoU"), path)
    iou, present = _iou_matrix(rows)
    names = [class_names[c] if c < len(class_names) else f"class_{c}" for c in present]
    labels = [f"{r.artifact}@{r.runtime}" + ("" if r.device in (None, "cpu") else f"/{r.device}")
              + ("  (reference)" if r is reference else "") for r in rows]
    has_delta = reference is not None and len(rows) > 1
    width = max(5.0, 0.45 * len(present) + 1.0)
    fig_w = 2.8 + width * (2 if has_delta else 1)
    fig, axes = plt.subplots(1, 2 if has_delta else 1, figsize=(fig_w, 1.8 + 0.45 * len(rows)), dpi=DPI,
                             squeeze=False)
    _draw_panel(plt, fig, axes[0, 0], iou, _Panel("per-class IoU", "viridis", 0.0, 1.0, "{:.2f}"), names, labels)
    if has_delta:
        delta = 100 * (iou - iou[0])
        limit = max(1.0, float(np.nanmax(np.abs(delta))) if np.isfinite(delta).any() else 1.0)
        panel = _Panel("IoU minus reference (points)", "RdBu", -limit, limit, "{:+.1f}")
        _draw_panel(plt, fig, axes[0, 1], delta, panel, names, [""] * len(labels))
    fig.tight_layout()
    return save_png(fig, path)
