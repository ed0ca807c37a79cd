"""The drift picture: where each artifact's class maps differ from the Keras reference, frame by frame."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from exporter.classes import colorize
from exporter.errors import UserError
from exporter.figures.common import FONT, SCREEN_DPI, distinct_labels, pyplot, save_png, shorten_middle
from exporter.metrics import agreement

MAX_DRIFT_ARTIFACTS = 6
MAX_DRIFT_FRAMES = 3
PANEL_W = 1.6  # inches: a 128-pixel-wide map is drawn 160 pixels wide
TEXT_W = 2.6  # inches: the headings left of the maps
LEFT = 0.15  # inches: the margin left of the headings
GAP = 0.08  # inches between two maps
NAME_WIDTH = 32  # characters of an artifact name in the row heading
DIFFER_RED = (0.85, 0.0, 0.0)
IGNORED_GREY = (0.45, 0.45, 0.45)  # a "don't care" pixel of the labels: not counted


class _Scored(NamedTuple):
    """An artifact's class maps on the frames drawn and its agreement with the reference there and in the table."""

    name: str
    maps: np.ndarray
    shown: float
    table: float | None


class _DriftRow(NamedTuple):
    """One row of the picture: a bold heading, plain lines under it, a picture per frame, titles over them."""

    heading: str
    lines: list[str]
    pictures: list[np.ndarray]
    titles: list[str]

    @property
    def title_band(self) -> float:
        """Inches above the pictures: room for their titles, if any."""
        return 0.26 if self.titles else 0.08


@dataclass(frozen=True)
class _Grid:
    """The picture's geometry in inches."""

    fig_w: float
    fig_h: float
    top: float
    panel_h: float
    line_h: float


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


def _checked(images: np.ndarray, reference_maps: np.ndarray, rows: list[tuple[str, np.ndarray]],
             table_agreement: Sequence[float | None] | None) -> tuple[np.ndarray, np.ndarray]:
    """The frames drawn (at most 3, as floats in [0, 1]) and their reference maps; UserError if the shapes differ."""
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
    return images[:k], reference_maps[:k]


def _agreement(maps: np.ndarray, reference_maps: np.ndarray, counted: np.ndarray | None) -> float:
    """``metrics.agreement`` over the counted pixels; 1.0 where none is counted (all "don't care")."""
    share = agreement(maps, reference_maps, counted)
    return 1.0 if np.isnan(share) else share


def _chosen(rows: list[tuple[str, np.ndarray]], reference_maps: np.ndarray,
            table_agreement: Sequence[float | None] | None,
            counted: np.ndarray | None = None) -> tuple[list[_Scored], str]:
    """The artifacts to draw (the 6 that agree least, when there are more) and the subtitle that says what is drawn."""
    k = len(reference_maps)
    tables = list(table_agreement) if table_agreement is not None else [None] * len(rows)
    scored = [_Scored(name, np.asarray(maps)[:k], _agreement(np.asarray(maps)[:k], reference_maps, counted), table)
              for (name, maps), table in zip(rows, tables, strict=True)]
    subtitle = (f"{k} evaluation frame{'s' if k > 1 else ''}; red = the pixel's class differs from the Keras "
                "reference,\npale = same class as the reference (its class colour, faded)")
    if counted is not None:
        subtitle += "; grey = labelled \"don't care\" (not counted)"
    if len(scored) > MAX_DRIFT_ARTIFACTS:
        chosen = sorted(range(len(scored)), key=lambda i: scored[i].shown)[:MAX_DRIFT_ARTIFACTS]
        subtitle += (f"\nshowing the {MAX_DRIFT_ARTIFACTS} of {len(scored)} artifacts that agree least with "
                     "the reference on these frames")
        scored = [scored[i] for i in sorted(chosen)]
    return scored, subtitle


def _artifact_rows(scored: list[_Scored], reference_maps: np.ndarray, eval_frames: int | None,
                   counted: np.ndarray | None = None) -> list[_DriftRow]:
    """A row per artifact: its name, runtime and agreement; per frame, the reference faded and its differences red."""
    k = len(reference_maps)
    heads = [s.name.split("@", 1) for s in scored]
    artifacts = distinct_labels([h[0] for h in heads], NAME_WIDTH)
    runtimes = ["on " + shorten_middle(h[1], NAME_WIDTH - 3) if len(h) > 1 else "" for h in heads]
    table = []
    for s, artifact, runtime in zip(scored, artifacts, runtimes, strict=True):
        pictures, titles = [], []
        for f in range(k):
            differ = s.maps[f] != reference_maps[f]
            overlay = 0.72 + 0.22 * colorize(reference_maps[f]) / 255.0  # the reference's classes, pale
            overlay[differ] = DIFFER_RED
            here = None if counted is None else counted[f]
            if here is not None:
                overlay[~here] = IGNORED_GREY
            pictures.append(overlay)
            titles.append("all don't care" if here is not None and not here.any() else
                          f"{_pct(_agreement(s.maps[f], reference_maps[f], here))} agree")
        lines = ([runtime] if runtime else []) + agreement_lines(k, s.shown, s.table, eval_frames)
        table.append(_DriftRow(artifact, lines, pictures, titles))
    return table


def _grid(table: list[_DriftRow], subtitle: str, k: int, map_shape: tuple[int, int]) -> tuple[_Grid, list[float]]:
    """The geometry for ``table``'s rows of ``k`` maps of ``map_shape`` (H, W); and each row's height."""
    h, w = map_shape
    panel_h = PANEL_W * h / w
    line_h = FONT * 1.3 / 72
    row_heights = [row.title_band + max(panel_h, line_h * (1 + len(row.lines))) for row in table]
    top, bottom = 0.35 + line_h * (1 + subtitle.count("\n")) + 0.1, 0.15
    fig_w = LEFT + TEXT_W + k * (PANEL_W + GAP) + 0.05
    fig_h = top + sum(row_heights) + bottom
    return _Grid(fig_w, fig_h, top, panel_h, line_h), row_heights


def _draw_row(fig, grid: _Grid, row: _DriftRow, y_top: float) -> None:
    """``row``'s heading and lines on the left, its pictures to the right, its top ``y_top`` inches up."""
    fig_w, fig_h = grid.fig_w, grid.fig_h
    panel_top = y_top - row.title_band
    fig.text(LEFT / fig_w, panel_top / fig_h, row.heading, fontsize=FONT + 0.5, fontweight="bold", va="top")
    if row.lines:
        fig.text(LEFT / fig_w, (panel_top - grid.line_h * 1.1) / fig_h, "\n".join(row.lines), fontsize=FONT,
                 va="top", linespacing=1.3)
    for f, picture in enumerate(row.pictures):
        x0 = LEFT + TEXT_W + f * (PANEL_W + GAP)
        ax = fig.add_axes((x0 / fig_w, (panel_top - grid.panel_h) / fig_h, PANEL_W / fig_w, grid.panel_h / fig_h))
        ax.imshow(picture, interpolation="nearest", aspect="auto")
        ax.set_xticks([])
        ax.set_yticks([])
        if f < len(row.titles):
            ax.set_title(row.titles[f], fontsize=FONT, pad=3)


def _drift_figure(plt, table: list[_DriftRow], subtitle: str, k: int, map_shape: tuple[int, int]):
    """The figure: title, subtitle, then ``table``'s rows top to bottom."""
    grid, row_heights = _grid(table, subtitle, k, map_shape)
    fig = plt.figure(figsize=(grid.fig_w, grid.fig_h), dpi=SCREEN_DPI)
    fig.text(LEFT / grid.fig_w, 1 - 0.1 / grid.fig_h,
             "Where each artifact's class map differs from the Keras reference", fontsize=FONT + 2,
             fontweight="bold", va="top")
    fig.text(LEFT / grid.fig_w, 1 - 0.4 / grid.fig_h, subtitle, fontsize=FONT, va="top", linespacing=1.3)
    y_top = grid.fig_h - grid.top
    for row, row_h in zip(table, row_heights, strict=True):
        _draw_row(fig, grid, row, y_top)
        y_top -= row_h
    return fig


def drift_picture(images: np.ndarray, reference_maps: np.ndarray, rows: list[tuple[str, np.ndarray]],
                  path: str | os.PathLike[str], labels: np.ndarray | None = None, *,
                  table_agreement: Sequence[float | None] | None = None, eval_frames: int | None = None,
                  ignore_index: int | None = None) -> Path:
    """Where each artifact's class maps differ from the Keras reference: one column per frame (at most 3), and
    one row each for the frame, [the label map,] the reference class map, then each artifact: the reference
    class map faded, with the pixels whose class differs from the reference in red.

    Beside each artifact its name, runtime and the share of pixels agreeing with the reference on the frames
    drawn; ``table_agreement`` (one value or None per entry of ``rows``: the bench row's
    ``agreement_vs_reference``, over all ``eval_frames`` evaluation frames) adds the bench table's figure.

    ``images``: K×H×W×3 floats in [0, 1] (uint8 is accepted); maps: K×H×W class ids; ``rows``: (name, maps) with
    name as ``artifact@runtime/device``. At most 6 artifacts are drawn: with more, the 6 with the lowest
    agreement on these frames (said so in the title). With ``labels`` and ``ignore_index``, the pixels labelled
    with it are grey and left out of every agreement, as the bench table leaves them out.
    """
    plt = pyplot()
    images, reference_maps = _checked(images, reference_maps, rows, table_agreement)
    k = len(reference_maps)
    if labels is not None and (np.shape(labels)[1:3] != reference_maps.shape[1:3] or len(labels) < k):
        raise UserError(f"drift picture: labels {np.shape(labels)} do not match the maps {reference_maps.shape}")
    counted = None
    if labels is not None and ignore_index is not None:
        counted = np.asarray(labels)[:k] != ignore_index
    scored, subtitle = _chosen(rows, reference_maps, table_agreement, counted)
    table = [_DriftRow("camera frame", [], list(images), [f"frame {f + 1}" for f in range(k)])]
    if labels is not None:
        table.append(_DriftRow("labels", ["(ground truth)"], [colorize(m) for m in np.asarray(labels)[:k]], []))
    table.append(_DriftRow("Keras reference", ["(its class map)"], [colorize(m) for m in reference_maps], []))
    table += _artifact_rows(scored, reference_maps, eval_frames, counted)
    fig = _drift_figure(plt, table, subtitle, k, reference_maps.shape[1:])
    return save_png(fig, path, dpi=SCREEN_DPI)
