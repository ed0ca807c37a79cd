"""The bench's pictures in a folder: latency vs mIoU, per-class IoU and, given the frames and previews, drift."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from exporter.contracts.bench_json import BenchResult, BenchRow
from exporter.drift import reference_of, reference_row
from exporter.figures.drift_picture import MAX_DRIFT_FRAMES, drift_picture
from exporter.figures.latency_vs_miou import latency_vs_miou
from exporter.figures.per_class_iou import per_class_iou_heatmap


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


def _preview_maps(row: BenchRow, root: Path) -> np.ndarray | None:
    """``row``'s preview class maps (its path relative to ``root``); None if it has none or they are unreadable."""
    rel = row.preview_maps
    if not rel:
        return None
    full = Path(rel) if os.path.isabs(rel) else root / rel
    return _load_maps(full) if full.is_file() else None


def _drift_rows(results: list[BenchRow], reference: BenchRow | None, reference_maps: np.ndarray, k: int,
                root: Path) -> tuple[list[tuple[str, np.ndarray]], list[float | None]]:
    """(name, maps) of each ok row with previews like the reference's, one per artifact, runtime and device;
    and each one's agreement with the reference in the bench table."""
    rows, table, seen = [], [], set()
    candidates = [r for r in results if r.ok and r is not reference]
    for r, name in zip(candidates, row_labels(candidates), strict=True):
        key = r.key[:3]
        maps = _preview_maps(r, root)
        if key in seen or maps is None or maps.shape[1:] != reference_maps.shape[1:] or len(maps) < k:
            continue
        seen.add(key)
        rows.append((name, maps))
        table.append(r.score("agreement_vs_reference"))
    return rows, table


def _eval_frames(bench: BenchResult) -> int | None:
    """How many evaluation frames the bench's agreements are over, if it says."""
    frames = (bench.reference or {}).get("frames")
    return frames if isinstance(frames, int) and not isinstance(frames, bool) and frames > 0 else None


def _write_drift(bench: BenchResult, path: Path, eval_images: np.ndarray, eval_labels: np.ndarray | None,
                 reference_maps: np.ndarray | None, root: Path, ignore_index: int | None = None) -> Path | None:
    """drift.png at ``path`` when the frames, the reference's maps and some row's maps agree in shape; else None."""
    results = list(bench.rows)
    reference = reference_row(results)
    if reference_maps is None and reference is not None:
        reference_maps = _preview_maps(reference, root)
    if reference_maps is None:
        return None
    reference_maps = np.asarray(reference_maps)
    images = np.asarray(eval_images)
    k = min(len(images), len(reference_maps), MAX_DRIFT_FRAMES)
    if k == 0 or images.shape[1:3] != reference_maps.shape[1:3]:
        return None
    rows, table = _drift_rows(results, reference, reference_maps, k, root)
    if not rows:
        return None
    labels = None
    if eval_labels is not None and np.shape(eval_labels)[1:3] == reference_maps.shape[1:3] \
            and len(eval_labels) >= k:
        labels = np.asarray(eval_labels)[:k]
    return drift_picture(images[:k], reference_maps[:k], rows, path, labels=labels, table_agreement=table,
                         eval_frames=_eval_frames(bench), ignore_index=ignore_index)


def write_plots(bench: BenchResult, out_dir: str | os.PathLike[str], class_names: list[str],
                eval_images: np.ndarray | None = None, eval_labels: np.ndarray | None = None,
                reference_maps: np.ndarray | None = None, maps_root: str | os.PathLike[str] | None = None, *,
                max_miou_drop: float | None = None, ignore_index: int | None = None) -> list[Path]:
    """Write latency_vs_miou.png, per_class_iou.png and, when possible, drift.png into ``out_dir``.

    ``latency_vs_miou`` draws the Keras line at the reference ``exporter.drift`` names (the stored Keras
    outputs' mIoU), and the budget line ``max_miou_drop`` points below it. The drift picture needs ``eval_images`` (K×H×W×3) and ok rows whose ``preview_maps`` files exist under
    ``maps_root`` (default: ``out_dir``). ``reference_maps`` defaults to the reference row's preview maps;
    ``eval_labels`` (K×H×W), if given, adds a label row. Beside each artifact the drift picture also shows its
    row's ``agreement_vs_reference`` from the bench (over the ``reference.frames`` evaluation frames);
    ``ignore_index`` (the labels' "don't care" value) leaves those pixels out of its agreements, as the bench does.
    Returns the paths written.
    """
    out_dir = Path(out_dir)
    results = list(bench.rows)
    written = [latency_vs_miou(results, out_dir / "latency_vs_miou.png", reference_miou=reference_of(bench).miou,
                               max_miou_drop=max_miou_drop),
               per_class_iou_heatmap(results, class_names, out_dir / "per_class_iou.png")]
    if eval_images is None:
        return written
    root = Path(maps_root) if maps_root is not None else out_dir
    drift = _write_drift(bench, out_dir / "drift.png", eval_images, eval_labels, reference_maps, root, ignore_index)
    return written if drift is None else [*written, drift]
