"""Pictures a person reads: label placement, distinct names, the budget line, legible drift text, curve titles."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from exporter.contracts.bench_json import BenchResult
from exporter.figures import common, label_layout
from exporter.figures import drift_picture as drift
from exporter.figures import latency_vs_miou as latency

RUNTIMES = {"tflite": ("litert",), "onnx": ("onnxruntime", "openvino")}
MIOU = {"fp32": 0.612, "fp16": 0.611, "int8": 0.571, "int8_floathead": 0.598, "int8_uint8io": 0.569}


def _row(artifact, runtime, p50, miou, threads=4, device="cpu", status="ok") -> dict:
    fmt = artifact.rsplit(".", 1)[-1]
    row = {"artifact": artifact, "format": fmt, "runtime": runtime, "device": device, "threads": threads,
           "batch_size": 1, "status": status}
    if status == "ok":
        row["latency_ms"] = {"p50": p50, "p90": p50, "p99": p50, "mean": p50, "std": 0.0, "min": p50, "max": p50,
                             "n": 10}
        row["accuracy"] = {"miou": miou, "pixel_accuracy": 0.9, "agreement_vs_reference": 0.95}
    else:
        row["reason"] = "GPU delegate not available" if status == "skipped" else "NOT_IMPLEMENTED"
    return row


def demo_rows() -> list:
    """25 ok rows like a demo run (5 tflite + 4 onnx artifacts on their runtimes, 4 and 1 threads) + 3 not ok."""
    rows = [_row("unet.keras", "keras", 48.0, 0.612), _row("unet.keras", "keras", 131.0, 0.612, threads=1)]
    for k, precision in enumerate(MIOU):
        lat = 21.5 if precision.startswith("fp") else 7.0 + 0.3 * k
        rows.append(_row(f"unet_{precision}.tflite", "litert", lat, MIOU[precision]))
        rows.append(_row(f"unet_{precision}.tflite", "litert", lat * 2.9, MIOU[precision], threads=1))
    for k, precision in enumerate(("fp32", "fp16", "int8", "int8_floathead")):
        lat = 15.2 + 2 * k if precision.startswith("fp") else 6.1 + 0.5 * k
        rows.append(_row(f"unet_{precision}.onnx", "onnxruntime", lat, MIOU[precision] + 0.0003))
        rows.append(_row(f"unet_{precision}.onnx", "onnxruntime", lat * 3.1, MIOU[precision] + 0.0003, threads=1))
    for k, precision in enumerate(("fp32", "int8", "int8_floathead")):
        rows.append(_row(f"unet_{precision}.onnx", "openvino", 0.6 + 0.05 * k, MIOU[precision] - 0.0004))
    rows.append(_row("unet_fp32.tflite", "openvino", 1.3, 0.612))
    rows.append(_row("unet_int8.tflite", "openvino", 0.72, 0.5705))
    rows += [_row("unet_fp16.tflite", "litert", 0, 0, device="gpu", status="skipped"),
             _row("unet_int8_uint8io.onnx", "onnxruntime", 0, 0, status="failed"),
             _row("unet_int8_uint8io.onnx", "openvino", 0, 0, status="failed")]
    return list(BenchResult.from_dict({"environment": {}, "results": rows}).rows)


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


# ---------------------------------------------------------------- pure helpers


def test_distinct_labels_keep_similar_artifact_names_apart():
    names = ["unet_int8_floathead.tflite", "unet_int8_fullint.tflite", "unet_int8.tflite", "unet_int8.tflite"]
    # the old middle shortening made the first two the same label
    assert common.shorten_middle(names[0], 16) == common.shorten_middle(names[1], 16)
    labels = common.distinct_labels(names, 16)
    assert labels[0] != labels[1]
    assert all(len(label) <= 16 for label in labels)
    assert labels[2] == labels[3] == "unet_int8.tflite"  # fits: kept; the same name stays the same label
    assert "floathead"[:4] in labels[0] and "fullint"[:4] in labels[1]
    # names that only differ deep inside a long common prefix and suffix
    long = [f"unet_int8_floathead_calibrated_{v}_per_channel.tflite" for v in ("v2", "v3", "v10")]
    labels = common.distinct_labels(long, 20)
    assert len(set(labels)) == 3 and all(len(label) <= 20 for label in labels)
    assert all(v in label for v, label in zip(("v2", "v3", "v10"), labels, strict=True))
    assert common.distinct_labels(["a", "b"], 16) == ["a", "b"]


def test_distinct_labels_last_resort_numbers():
    # differing parts too long for the width: shortened in their middle, then numbered where still equal
    names = ["x" * 10 + "A" + "y" * 30 + "B", "x" * 10 + "C" + "y" * 30 + "D"]
    labels = common.distinct_labels(names, 12)
    assert len(set(labels)) == 2


@pytest.mark.parametrize("label_size", [(16.0, 13.0), (22.0, 13.0)])
def test_place_labels_25_points_do_not_overlap(label_size):
    # 25 points as in a demo: rows of nearly equal mIoU, clusters of nearly equal latency
    rng = np.random.default_rng(0)
    points = []
    for y in (60.0, 62.0, 300.0, 420.0, 421.0):
        for x in (40.0, 230.0, 240.0, 420.0, 600.0):
            points.append((x + rng.normal(0, 4), y + rng.normal(0, 3)))
    points[7] = points[6]  # two rows at exactly the same place
    bounds = (0.0, 0.0, 720.0, 480.0)
    obstacle = (10.0, 180.0, 260.0, 196.0)  # e.g. the budget line's label
    spots = label_layout.place_labels(points, [label_size] * len(points), bounds, marker=6.0, obstacles=[obstacle])
    boxes = [s.box for s in spots]
    marks = [(x - 6, y - 6, x + 6, y + 6) for x, y in points]
    for a, b in itertools.combinations(boxes, 2):
        assert not _overlap(a, b), (a, b)
    for box in boxes:
        assert not any(_overlap(box, m) for m in marks)
        assert not _overlap(box, obstacle)
        assert bounds[0] <= box[0] and box[2] <= bounds[2] and bounds[1] <= box[1] and box[3] <= bounds[3]
        assert box[2] - box[0] == pytest.approx(label_size[0]) and box[3] - box[1] == pytest.approx(label_size[1])
    leaders = [s.leader for s in spots if s.leader is not None]
    for (p, q), (r, s) in itertools.combinations(leaders, 2):
        assert not label_layout.segments_cross(p, q, r, s)
    for i, spot in enumerate(spots):
        if spot.leader is None:  # right beside its point, and nearer to it than to any other point
            own = label_layout._box_distance(points[i], spot.box)
            assert own <= (6 + 2) * 2**0.5 + 1e-6  # ring 0: beside or diagonally beside
            assert all(label_layout._box_distance(points[j], spot.box) >= own for j in range(len(points))
                       if points[j] != points[i])
        else:
            p, q = spot.leader
            assert p == points[i]
            assert not any(label_layout.segment_hits_box(p, q, b) for j, b in enumerate(boxes) if j != i)


def test_segment_helpers():
    assert label_layout.segments_cross((0, 0), (10, 10), (0, 10), (10, 0))
    assert not label_layout.segments_cross((0, 0), (10, 10), (10, 10), (20, 0))  # a shared end point
    assert not label_layout.segments_cross((0, 0), (10, 0), (0, 5), (10, 5))
    assert label_layout.segment_hits_box((0, 0), (10, 10), (4, 4, 6, 6))
    assert not label_layout.segment_hits_box((0, 0), (10, 0), (4, 4, 6, 6))


def test_not_plotted_note_in_plain_words():
    rows = demo_rows()
    assert latency.not_plotted_note(rows) == ("3 of 28 rows not plotted: 2 failed, 1 was skipped "
                                            "(the bench table says why).")
    assert latency.not_plotted_note([r for r in rows if r.ok]) is None


def test_agreement_lines_say_which_frames():
    lines = drift.agreement_lines(3, 0.96482, 0.95113, 24)
    assert lines[1].strip() == "on these 3 frames: 96.48%"
    assert lines[2].strip() == "on all 24 eval frames: 95.11%"
    assert len(drift.agreement_lines(1, 0.9)) == 2 and "these 1 frame:" in drift.agreement_lines(1, 0.9)[1]
    assert drift.agreement_lines(3, 0.99999)[1].endswith(">99.99%")  # never a rounded 100 % that is not
    assert drift.agreement_lines(3, 0.9, 0.8)[2].strip() == "on all eval frames: 80.00%"


# ---------------------------------------------------------------- figures


def _texts(fig) -> list:
    return [t for t in fig.findobj(lambda a: a.__class__.__name__ in ("Text", "Annotation")) if t.get_text()]


def test_latency_figure_budget_line_key_and_footnote():
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    built = latency.latency_vs_miou_figure(demo_rows(), reference_miou=0.612, max_miou_drop=1.0)
    try:
        lines = {line.get_gid(): line for line in built.ax.get_lines() if line.get_gid()}
        assert set(lines) == {"budget", "reference"}
        assert lines["budget"].get_ydata()[0] == pytest.approx(0.602)
        assert lines["budget"].get_linestyle() == "--"
        assert lines["reference"].get_ydata()[0] == pytest.approx(0.612)
        assert built.budget_miou == pytest.approx(0.602)
        words = [t.get_text() for t in _texts(built.fig)]
        assert "budget: \u22121.0 pt mIoU vs Keras (0.602)" in words
        assert "Keras reference: 0.612" in words
        assert "3 of 28 rows not plotted: 2 failed, 1 was skipped (the bench table says why)." in words
        assert not any("ok rows" in w for w in words)
        assert built.ax.get_xscale() == "log" and "ms" in built.ax.get_xlabel()
        assert built.ax.get_ylabel().startswith("mIoU")
        # 25 numbered points, numbers 1..25 in latency order, each explained by a line of the key
        assert len(built.rows) == 25
        assert [r.p50 for r in built.rows] == sorted(r.p50 for r in built.rows)
        key = [w for w in words if w.lstrip()[:2].strip().isdigit() and "unet" in w]
        assert len(key) == 25 and "unet_int8_floathead.tflite" in " ".join(key)
        # the numbers as drawn: no two overlap, none sits on a marker or on a line's label
        renderer = built.fig.canvas.get_renderer()
        numbers = [t for t in built.ax.texts if t.get_text().isdigit()]
        assert sorted(int(t.get_text()) for t in numbers) == list(range(1, 26))
        boxes = [tuple(t.get_window_extent(renderer).extents) for t in numbers]
        for a, b in itertools.combinations(boxes, 2):
            assert not _overlap(a, b)
        line_labels = [tuple(t.get_window_extent(renderer).extents) for t in built.ax.texts
                       if not t.get_text().isdigit()]
        assert len(line_labels) == 2 and not any(_overlap(a, b) for a in boxes for b in line_labels)
        # legible at 100 %: every text at least 9 pt at 100 dpi
        assert built.fig.dpi >= 100
        assert min(t.get_fontsize() for t in _texts(built.fig)) >= 9
    finally:
        plt.close(built.fig)

    only_reference = latency.latency_vs_miou_figure(demo_rows(), reference_miou=0.612)
    assert {line.get_gid() for line in only_reference.ax.get_lines() if line.get_gid()} == {"reference"}
    assert only_reference.budget_miou is None
    plt.close(only_reference.fig)
    neither = latency.latency_vs_miou_figure(demo_rows())
    assert not [line for line in neither.ax.get_lines() if line.get_gid()]
    assert not any("vs Keras" in t.get_text() for t in _texts(neither.fig))
    plt.close(neither.fig)


def test_latency_png_gpu_rows_linear_axis_and_nothing_to_plot(tmp_path):
    pytest.importorskip("matplotlib")
    rows = [r for r in demo_rows() if r.ok and r.runtime == "litert"][:4]
    gpu = BenchResult.from_dict({"environment": {}, "results": [
        _row("unet_fp16.tflite", "litert", 9.0, 0.611, device="gpu")]}).rows
    path = latency.latency_vs_miou([*rows, *gpu], tmp_path / "few.png", reference_miou=0.612, max_miou_drop=0.5)
    assert path.stat().st_size > 2_000
    built = latency.latency_vs_miou_figure([*rows, *gpu])
    assert built.ax.get_xscale() == "linear"  # 7 to 62 ms: less than 10x
    assert any("(GPU)" in t.get_text() for t in built.ax.get_legend().get_texts())
    nothing = latency.latency_vs_miou_figure([r for r in demo_rows() if not r.ok])
    assert nothing.ax is None and "3 of 3 rows not plotted" in nothing.note
    common.save_png(nothing.fig, tmp_path / "none.png")


def _capture_figures(monkeypatch) -> list:
    figures = []
    save = common.save_png

    def capture(fig, path, dpi=common.DPI):
        figures.append((fig, dpi))
        return save(fig, path, dpi=dpi)

    monkeypatch.setattr(drift, "save_png", capture)
    return figures


def test_drift_picture_distinct_names_and_legible_text(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    figures = _capture_figures(monkeypatch)
    k, h, w = 3, 96, 128
    reference = np.repeat(np.where(np.arange(h)[:, None] < 40, 13, 7) * np.ones((1, w), np.uint8), k, 0)
    reference = reference.reshape(k, h, w).astype(np.uint8)
    rng = np.random.default_rng(0)
    rows = []
    for name, flip in (("unet_int8_floathead.tflite@litert/cpu", 0.04), ("unet_int8_fullint.tflite@litert/cpu", 0.06),
                       ("unet_fp32.onnx@onnxruntime/cpu t1", 0.0)):
        maps = reference.copy()
        noise = rng.random(maps.shape) < flip
        maps[noise] = 1
        rows.append((name, maps))
    images = rng.random((k, h, w, 3))
    drift.drift_picture(images, reference, rows, tmp_path / "drift.png", labels=reference,
                        table_agreement=[0.9511, 0.93, None], eval_frames=24)
    fig, dpi = figures[-1]
    words = [t.get_text() for t in _texts(fig)]
    text = "\n".join(words)
    assert "unet_int8_floathead.tflite" in words and "unet_int8_fullint.tflite" in words
    assert "on litert/cpu" in text and "on onnxruntime/cpu t1" in text
    shown = 100 * float(np.mean(rows[0][1] == reference))
    assert f"on these 3 frames: {shown:.2f}%" in text
    assert "on all 24 eval frames: 95.11%" in text and "on all 24 eval frames: 93.00%" in text
    assert text.count("eval frames") == 2  # the third row has no table value
    assert "overall" not in text
    assert dpi >= 100 and min(t.get_fontsize() for t in _texts(fig)) >= 9
    # at 100 dpi the whole picture fits a screen's width and each map is drawn at least at its own size
    width_px = fig.get_figwidth() * dpi
    assert width_px <= 1000
    panel = min(ax.get_position().width * width_px for ax in fig.axes)
    assert panel >= w
    with pytest.raises(Exception, match="table agreements"):
        drift.drift_picture(images, reference, rows, tmp_path / "bad.png", table_agreement=[0.9])


def test_training_curves_titles_labels_and_integer_epochs(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    from exporter.train import plot_curves

    kept = []
    monkeypatch.setattr(plt, "close", kept.append)
    history = [{"epoch": e, "loss": 2.0 / e, "val_loss": 2.1 / e, "pixel_accuracy": 0.5 + e / 20,
                "val_pixel_accuracy": 0.45 + e / 20, "val_miou": 0.2 + e / 30 - (e == 5) * 0.05}
               for e in range(1, 6)]
    plot_curves(history, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    loss, acc = kept[-1].axes
    assert loss.get_title() == "loss (train vs validation)" and acc.get_title() == "pixel accuracy and mIoU"
    assert loss.get_ylabel() and acc.get_ylabel() and loss.get_xlabel() == acc.get_xlabel() == "epoch"
    assert [t.get_text() for t in loss.get_legend().get_texts()] == ["train loss", "validation loss"]
    legend = [t.get_text() for t in acc.get_legend().get_texts()]
    assert legend[:3] == ["train pixel accuracy", "validation pixel accuracy", "validation mIoU"]
    assert legend[3] == "best validation mIoU: 0.333 (epoch 4)"
    for ax in (loss, acc):
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks == [1, 2, 3, 4, 5]
    plot_curves(history[:1], tmp_path / "one.png")
    ticks = kept[-1].axes[0].get_xticks()
    assert list(ticks) == [1]
    for fig in kept:
        fig.clf()
