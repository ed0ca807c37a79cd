"""unet-bench pictures: latency vs mIoU, per-class IoU vs the reference, and a drift picture of class maps.

matplotlib is optional on the device: it is imported inside the functions (Agg backend) and a missing one
is a UserError. Every PNG is written atomically, at dpi 80, and kept small (re-encoded with a 256-colour
palette when the plain PNG would be over ~190 KB).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

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


def _save(fig, path) -> Path:
    """Render ``fig`` to PNG atomically; palette-quantise it when the plain PNG is large."""
    plt = _pyplot()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
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


def _place_labels(fig, ax, xs, ys, labels, fontsize: float = 7.5) -> None:
    """Label each point, greedily picking the nearest free spot (right or left, stepping up and down) so that
    labels overlap neither each other nor the points and stay inside the axes; a thin leader line when moved."""
    renderer = fig.canvas.get_renderer()
    inside = ax.get_window_extent(renderer)
    points = [ax.transData.transform((x, y)) for x, y in zip(xs, ys, strict=True)]
    marks = [(px - 5, py - 5, px + 5, py + 5) for px, py in points]
    if ax.get_legend() is not None:
        bb = ax.get_legend().get_window_extent(renderer)
        marks.append((bb.x0, bb.y0, bb.x1, bb.y1))
    placed: list[tuple[float, float, float, float]] = []

    def clash(box) -> float:
        x0, y0, x1, y1 = box
        out = max(0.0, inside.x0 - x0) + max(0.0, x1 - inside.x1) + max(0.0, inside.y0 - y0) + max(0.0, y1 - inside.y1)
        hits = sum(max(0.0, min(x1, b[2]) - max(x0, b[0])) * max(0.0, min(y1, b[3]) - max(y0, b[1]))
                   for b in (*placed, *marks))
        return hits + 1000.0 * out

    order = sorted(range(len(labels)), key=lambda i: (points[i][0], points[i][1]))
    for i in order:
        text = ax.annotate(labels[i], (xs[i], ys[i]), xytext=(6, 0), textcoords="offset points",
                           fontsize=fontsize, va="center", ha="left")
        best = None
        for step in range(0, 16):
            for dy in ((0,) if step == 0 else (step * 9, -step * 9)):
                for dx, ha in ((6, "left"), (-6, "right")):
                    text.set_position((dx, dy))
                    text.set_ha(ha)
                    bb = text.get_window_extent(renderer)
                    box = (bb.x0 - 1, bb.y0 - 1, bb.x1 + 1, bb.y1 + 1)
                    cost = clash(box)
                    if best is None or cost < best[0] - 1e-9:
                        best = (cost, dx, dy, ha, box)
            if best[0] == 0:
                break
        _, dx, dy, ha, box = best
        text.set_position((dx, dy))
        text.set_ha(ha)
        if dy:
            ax.annotate("", (xs[i], ys[i]), xytext=(dx, dy), textcoords="offset points",
                        arrowprops=dict(arrowstyle="-", color="0.6", lw=0.6, shrinkA=0, shrinkB=3))
        placed.append(box)


def latency_vs_miou(results: list[BenchRow], path) -> Path:
    """Scatter of p50 latency (x; log scale when the range spans > 10x) vs mIoU (y), one labelled point per ok row."""
    plt = _pyplot()
    rows = [r for r in results if r.ok and r.p50 is not None and r.score("miou") is not None]
    if not rows:
        return _save(_message_figure(plt, "latency vs mIoU: no ok row has both a p50 latency and an mIoU"), path)
    x = np.array([r.p50 for r in rows])
    y = np.array([r.score("miou") for r in rows])
    labels = row_labels(rows)
    runtimes = list(dict.fromkeys(str(r.runtime) for r in rows))
    colours = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=DPI)
    for i, runtime in enumerate(runtimes):
        for marker, device in (("o", "cpu"), ("s", "gpu")):
            sel = [k for k, r in enumerate(rows) if str(r.runtime) == runtime and (r.device == "gpu") == (device == "gpu")]
            if sel:
                ax.scatter(x[sel], y[sel], s=40, marker=marker, color=colours(i % 10), zorder=3,
                           label=f"{runtime}/{device}")
    wide = x.min() > 0 and x.max() / x.min() > 10
    if wide:
        ax.set_xscale("log")
    pad_y = max(0.02, 0.3 * float(y.max() - y.min()))
    ax.set_ylim(float(y.min()) - pad_y, float(y.max()) + pad_y)
    if not wide:
        span = float(x.max() - x.min()) or float(x.max()) or 1.0
        ax.set_xlim(max(0.0, float(x.min()) - 0.08 * span), float(x.max()) + 0.35 * span)
    else:
        ax.set_xlim(float(x.min()) / 1.4, float(x.max()) * 3)
    ax.set(xlabel="p50 latency per batch (ms)" + (", log scale" if wide else ""), ylabel="mIoU",
           title="latency vs mIoU (ok rows)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    _place_labels(fig, ax, x, y, labels)
    return _save(fig, path)


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


def _shorten_middle(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width // 2 - 1] + "..." + text[-(width - width // 2 - 2):]


def drift_picture(images: np.ndarray, reference_maps: np.ndarray, rows: list[tuple[str, np.ndarray]], path,
                  labels: np.ndarray | None = None) -> Path:
    """Per frame (at most 3) a row: the frame, [the label map,] the reference class map, then per artifact its
    class map and the frame greyed with pixels disagreeing with the reference in red, titled with agreement %.

    ``images``: K×H×W×3 floats in [0, 1] (uint8 is accepted); maps: K×H×W class ids. At most 6 artifacts are
    drawn: with more, the 6 with the lowest agreement (said so in the title).
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
    images, reference_maps = images[:k], reference_maps[:k]
    scored = [(name, np.asarray(maps)[:k], float(np.mean(np.asarray(maps)[:k] == reference_maps)))
              for name, maps in rows]
    title = f"class maps vs the reference on {k} frame{'s' if k > 1 else ''}"
    if len(scored) > MAX_DRIFT_ARTIFACTS:
        chosen = sorted(range(len(scored)), key=lambda i: scored[i][2])[:MAX_DRIFT_ARTIFACTS]
        title += f" (the {MAX_DRIFT_ARTIFACTS} of {len(scored)} artifacts with the lowest agreement)"
        scored = [scored[i] for i in sorted(chosen)]
    with_labels = labels is not None
    lead = 3 if with_labels else 2
    cols = lead + 2 * len(scored)
    h, w = reference_maps.shape[1:]
    panel_w = 1.6
    panel_h = panel_w * h / w
    fig, axes = plt.subplots(k, cols, figsize=(cols * panel_w, k * (panel_h + 0.42) + 0.55), dpi=DPI,
                             squeeze=False)
    grey = images.mean(axis=-1, keepdims=True)
    for f in range(k):
        panels = [(images[f], "frame")]
        if with_labels:
            panels.append((colorize(np.asarray(labels)[f]), "labels"))
        panels.append((colorize(reference_maps[f]), "reference"))
        for name, maps, total in scored:
            agree = float(np.mean(maps[f] == reference_maps[f]))
            differ = maps[f] != reference_maps[f]
            overlay = np.repeat(0.25 + 0.5 * grey[f], 3, axis=-1)
            overlay[differ] = (1.0, 0.0, 0.0)
            head = name.split("@", 1)
            name_title = _shorten_middle(head[0], 24) + ("\n@" + _shorten_middle(head[1], 22) if len(head) > 1 else "")
            panels.append((colorize(maps[f]), name_title if f == 0 else ""))
            panels.append((overlay, (f"{100 * total:.2f}% overall\n" if f == 0 else "")
                           + f"agree {100 * agree:.2f}%"))
        for ax, (picture, text) in zip(axes[f], panels, strict=True):
            ax.imshow(picture, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if text:
                ax.set_title(text, fontsize=7, pad=2)
    fig.suptitle(title + "; red = pixel differs from the reference", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.97), h_pad=0.3, w_pad=0.2)
    return _save(fig, path)


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
                reference_maps=None, maps_root=None) -> list[Path]:
    """Write latency_vs_miou.png, per_class_iou.png and, when possible, drift.png into ``out_dir``.

    The drift picture needs ``eval_images`` (K×H×W×3) and ok rows whose ``preview_maps`` files exist under
    ``maps_root`` (default: ``out_dir``). ``reference_maps`` defaults to the reference row's preview maps;
    ``eval_labels`` (K×H×W), if given, adds a label column. Returns the paths written.
    """
    out_dir = Path(out_dir)
    results = list(bench.rows)
    written = [latency_vs_miou(results, out_dir / "latency_vs_miou.png"),
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
    rows, seen = [], set()
    candidates = [r for r in results if r.ok and r is not reference]
    names = row_labels(candidates)
    for r, name in zip(candidates, names, strict=True):
        key = r.key[:3]
        maps = maps_of(r)
        if key in seen or maps is None or maps.shape[1:] != reference_maps.shape[1:] or len(maps) < k:
            continue
        seen.add(key)
        rows.append((name, maps))
    if not rows:
        return written
    labels = None
    if eval_labels is not None and np.shape(eval_labels)[1:3] == reference_maps.shape[1:3] \
            and len(eval_labels) >= k:
        labels = np.asarray(eval_labels)[:k]
    written.append(drift_picture(images[:k], reference_maps[:k], rows, out_dir / "drift.png", labels=labels))
    return written
