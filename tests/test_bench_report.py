"""The unet-bench report layer: terminal table, CSV, Markdown, load/validate, compare, plots."""

from __future__ import annotations

import copy
import csv
import io
import json
import sys

import numpy as np
import pytest

from exporter.bench import compare as compare_mod
from exporter.bench import tables
from exporter.classes import class_names
from exporter.contracts.bench_json import BenchResult, load_bench
from exporter.errors import UserError
from exporter.figures import bench as bench_figures
from exporter.figures.drift_picture import drift_picture
from exporter.figures.latency_vs_miou import latency_vs_miou
from exporter.figures.per_class_iou import per_class_iou_heatmap

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_PNG_BYTES = 200_000
N_CLASSES = 23
PRESENT = (1, 2, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 18)  # 14 classes with IoU, the rest null


def _per_class(rng, base: float) -> list[float | None]:
    values: list[float | None] = [None] * N_CLASSES
    for c in PRESENT:
        values[c] = float(np.clip(base + rng.normal(0, 0.15), 0.0, 1.0))
    return values


def _row(artifact, fmt, precision, runtime, p50, miou, agreement, device="cpu", threads=4, batch=1,
         size=7_760_000, rng=None, base=None, previews=None) -> dict:
    rng = rng or np.random.default_rng(abs(hash((artifact, runtime, device))) % 2**32)
    return {
        "artifact": artifact, "format": fmt, "precision": precision, "runtime": runtime,
        "runtime_version": "1.0", "device": device, "threads": threads, "batch_size": batch,
        "status": "ok", "reason": None, "size_bytes": size, "cold_start_ms": 40 * p50,
        "latency_ms": {"p50": p50, "p90": p50 * 1.1, "p99": p50 * 1.3, "mean": p50 * 1.05, "std": p50 * 0.05,
                       "min": p50 * 0.9, "max": p50 * 1.5, "n": 50},
        "throughput_fps": 1000.0 * batch / p50, "peak_rss_mb": 180.0, "providers": [],
        "inference_precision": None,
        "accuracy": {"pixel_accuracy": 0.85 + (miou - 0.5) / 5, "miou": miou,
                     "per_class_iou": _per_class(rng, base if base is not None else miou),
                     "agreement_vs_reference": agreement,
                     "max_abs_logit_error": None if fmt == "keras" else round(1 - agreement, 4) * 10},
        "preview_maps": previews,
    }


def _not_ok(artifact, fmt, precision, runtime, status, reason, device="cpu") -> dict:
    return {
        "artifact": artifact, "format": fmt, "precision": precision, "runtime": runtime,
        "runtime_version": "1.0", "device": device, "threads": None, "batch_size": 1, "status": status,
        "reason": reason, "size_bytes": 7_760_000, "cold_start_ms": None, "latency_ms": None,
        "throughput_fps": None, "peak_rss_mb": None, "providers": [], "inference_precision": None,
        "accuracy": None, "preview_maps": None,
    }


@pytest.fixture
def bench() -> dict:
    rng = np.random.default_rng(0)
    reference = _row("unet.keras", "keras", "fp32", "keras", 48.0, 0.612, 1.0, rng=rng,
                     previews="previews/unet.keras.npz")
    results = [
        reference,
        _row("unet_fp32.tflite", "tflite", "fp32", "litert", 21.5, 0.612, 0.9995, rng=rng, base=0.612,
             previews="previews/unet_fp32.tflite.npz"),
        _row("unet_fp16.tflite", "tflite", "fp16", "litert", 20.9, 0.611, 0.9981, rng=rng, base=0.611,
             previews="previews/unet_fp16.tflite.npz"),
        _row("unet_int8.tflite", "tflite", "int8", "litert", 7.3, 0.571, 0.9412, size=2_010_000, rng=rng,
             base=0.55, previews="previews/unet_int8.tflite.npz"),
        _row("unet_int8.tflite", "tflite", "int8", "litert", 3.1, 0.571, 0.9412, threads=1, size=2_010_000,
             rng=rng, base=0.55),
        _row("unet.onnx", "onnx", "fp32", "onnxruntime", 15.2, 0.612, 0.9998, rng=rng, base=0.612,
             previews="previews/unet.onnx.npz"),
        _row("unet.onnx", "onnx", "fp32", "openvino", 0.95, 0.612, 0.9997, rng=rng, base=0.612),
        _not_ok("unet_fp16.tflite", "tflite", "fp16", "litert", "skipped",
                "GPU delegate not available on this machine (no OpenCL driver found in /usr/lib)", device="gpu"),
        _not_ok("unet_int8.onnx", "onnx", "int8", "onnxruntime", "failed",
                "ONNXRuntimeError: [ONNXRuntimeError] : 9 : NOT_IMPLEMENTED : Could not find an implementation "
                "for ConvInteger(10) node with name 'conv2d/Conv_quant'\nTraceback (most recent call last): ..."),
    ]
    environment = {
        "cpu": "Intel(R) Core(TM) i7-1185G7 @ 3.00GHz", "cpu_flags": ["avx2", "avx512f", "fma"], "cores": 8,
        "os": "Linux-6.8.0-x86_64", "python": "3.11.9", "host": "laptop-7", "label": "laptop",
        "runtime_versions": {"litert": "2.3.0", "onnxruntime": "1.32.0", "keras": "3.15.1"},
        "timestamp": "2026-02-03T10:11:12Z",
    }
    return {"environment": environment, "results": results}


def _result(bench: dict) -> BenchResult:
    return BenchResult.from_dict(bench)


def _rows(bench: dict) -> list:
    return list(_result(bench).rows)


# ---------------------------------------------------------------- report


def test_terminal_table_one_line_per_row_with_reasons(bench):
    table = tables.terminal_table(_rows(bench))
    lines = table.splitlines()
    measured = [r for r in bench["results"] if r["status"] != "skipped"]
    assert len(lines) == 2 + len(measured) + 1  # header, rule, one line per row, one line per skipped group
    assert lines[0].split()[:3] == ["artifact", "runtime", "device"]
    assert lines[-1] == ("skipped litert/gpu (1 row): GPU delegate not available on this machine "
                         "(no OpenCL driver found in /usr/lib)")
    failed = next(line for line in lines if "failed" in line)
    assert "failed: ONNXRuntimeError" in failed and failed.rstrip().endswith("...")
    assert "Traceback" not in table  # only the first line of the reason, shortened
    keras = next(line for line in lines if line.startswith("unet.keras"))
    assert "48.0" in keras and "100.00%" in keras and "0.6120" in keras
    openvino = next(line for line in lines if "openvino" in line)
    assert "0.95" in openvino and "7.76" in openvino
    cells = failed.split()
    assert cells[3] == "-"  # threads null
    assert cells.count("-") == 6  # threads, p50, p90, fps, mIoU, agreement
    # aligned: the status column starts at the same offset on every row
    offset = lines[0].index("status")
    assert all(line[offset:].split()[0] in ("ok", "failed:") for line in lines[2:-1])


def test_missing_runtime_is_one_line_not_one_row_per_artifact(bench):
    rows = [r for r in bench["results"] if r["status"] == "ok"]
    for name in ("a", "b", "c"):
        for runtime in ("onnxruntime", "openvino"):
            rows.append(_not_ok(f"unet_{name}.onnx", "onnx", "fp32", runtime, "skipped",
                                f"{runtime} is not installed"))
    bench["results"] = rows
    lines = tables.terminal_table(_rows(bench)).splitlines()
    assert lines[-2:] == ["skipped onnxruntime/cpu (3 rows): onnxruntime is not installed",
                          "skipped openvino/cpu (3 rows): openvino is not installed"]
    assert len(lines) == 2 + 7 + 2
    markdown = tables.to_markdown(_result(bench))
    assert "- skipped openvino/cpu (3 rows): openvino is not installed" in markdown
    assert markdown.count("| unet_a.onnx") == 0


def test_budget_columns_and_gate(bench):
    from exporter import drift as gate
    from exporter.drift import Budget
    from exporter.errors import CheckFailed

    result = _result(bench)
    budget = Budget(max_miou_drop=1.0, min_agreement=0.98)
    verdicts = gate.judge(result, budget)
    # no stored reference in this file: the Keras row's mIoU (0.612) is what drift is measured from
    by_row = {(v.row.artifact, v.row.runtime, v.row.threads): v for v in verdicts if v is not None}
    assert by_row[("unet.keras", "keras", 4)].within and by_row[("unet.keras", "keras", 4)].miou_drop == 0
    int8 = by_row[("unet_int8.tflite", "litert", 4)]
    assert int8.miou_drop == pytest.approx(4.1) and not int8.within
    assert int8.problems == ("mIoU drop 4.10 points > budget 1", "pixel agreement 0.9412 < budget 0.98")
    assert not by_row[("unet_int8.onnx", "onnxruntime", None)].within  # failed to run
    assert verdicts[[r["status"] for r in bench["results"]].index("skipped")] is None

    table = tables.terminal_table(list(result.rows), verdicts)
    header = table.splitlines()[0].split()
    assert header[-3:] == ["drop", "budget", "status"]
    int8_line = next(line for line in table.splitlines() if line.startswith("unet_int8.tflite"))
    assert "4.10" in int8_line and "OVER" in int8_line
    keras_line = next(line for line in table.splitlines() if line.startswith("unet.keras"))
    assert "within" in keras_line
    assert "| budget |" in tables.to_markdown(result, verdicts=verdicts).replace("  ", " ").replace("  ", " ")

    with pytest.raises(CheckFailed) as info:
        gate.check(result, budget)
    message = str(info.value)
    assert message.startswith("3 of 8 rows outside the budget (mIoU drop ≤ 1 point, pixel agreement ≥ 98% vs Keras): ")
    assert "unet_int8.tflite on litert/cpu (4t×1b): mIoU drop 4.10 points > budget 1" in message
    assert "unet_int8.onnx on onnxruntime/cpu (-t×1b): failed to run" in message
    assert "\n" not in message
    with pytest.raises(CheckFailed, match=r"^1 of 8 rows .*unet_int8.onnx on onnxruntime/cpu \(-t×1b\): failed to run$"):
        gate.check(result, Budget(max_miou_drop=5.0))  # a row that did not run is never within a budget
    bench["results"] = [r for r in bench["results"] if r["status"] != "failed"]
    gate.check(_result(bench), Budget(max_miou_drop=5.0))  # within: returns, no exception
    gate.check(result, Budget())  # no budget: no gate


def test_csv_round_trips_with_flattened_fields(bench):
    text = tables.to_csv(_rows(bench))
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == len(bench["results"])
    for key in ("artifact", "runtime", "device", "threads", "batch_size", "status", "reason", "size_bytes",
                "latency_p50_ms", "latency_p90_ms", "latency_p99_ms", "latency_n", "throughput_fps",
                "pixel_accuracy", "miou", "agreement_vs_reference", "max_abs_logit_error", "per_class_iou"):
        assert key in rows[0], key
    int8 = rows[3]
    assert int8["artifact"] == "unet_int8.tflite"
    assert float(int8["latency_p50_ms"]) == pytest.approx(7.3)
    assert int(int8["latency_n"]) == 50
    assert float(int8["agreement_vs_reference"]) == pytest.approx(0.9412)
    assert json.loads(int8["per_class_iou"]) == bench["results"][3]["accuracy"]["per_class_iou"]
    failed = rows[-1]
    assert failed["status"] == "failed" and failed["latency_p50_ms"] == "" and failed["miou"] == ""
    assert failed["reason"] == bench["results"][-1]["reason"]  # full reason, newline included


def test_markdown_has_environment_table_and_reasons(bench):
    text = tables.to_markdown(BenchResult.from_dict(bench), title="pi results")
    assert text.startswith("# pi results")
    assert "Intel(R) Core(TM) i7-1185G7" in text and "- label: laptop" in text
    assert "onnxruntime 1.32.0" in text
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert len(table) == 2 + len([r for r in bench["results"] if r["status"] != "skipped"])
    assert table[0].startswith("| artifact") and set(table[1]) <= set("|-: ")
    assert all(line.count("|") == table[0].count("|") for line in table)
    assert "## Skipped and failed" in text
    assert "GPU delegate not available on this machine (no OpenCL driver found in /usr/lib)" in text
    assert "ConvInteger(10)" in text


def test_rows_are_typed_records_and_unknown_keys_survive_a_round_trip(bench):
    bench["results"][1]["energy_mj"] = 12.5  # a newer writer's field
    result = BenchResult.from_dict(bench)
    row = result.rows[1]
    assert row.ok and row.p50 == 21.5 and row.stat("p90") == pytest.approx(23.65) and row.score("miou") == 0.612
    assert row.key == ("unet_fp32.tflite", "litert", "cpu", 4, 1) and row.extra == {"energy_mj": 12.5}
    skipped = result.rows[-2]
    assert not skipped.ok and skipped.p50 is None and skipped.score("miou") is None
    assert result.to_dict() == bench
    assert "energy_mj" in tables.to_csv(list(result.rows)).splitlines()[0]


def test_json_round_trips_through_write_reports_and_load_bench(bench, tmp_path):
    paths = tables.write_reports(BenchResult.from_dict(bench), json_path=tmp_path / "b.json", csv_path=tmp_path / "out/b.csv",
                                 markdown_path=tmp_path / "b.md")
    assert paths == [tmp_path / "b.json", tmp_path / "out/b.csv", tmp_path / "b.md"]
    assert all(p.stat().st_size > 0 for p in paths)
    assert load_bench(tmp_path / "b.json").to_dict() == bench
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.json", "b.md", "out"]  # no temp files left
    assert tables.write_reports(BenchResult.from_dict(bench)) == []


@pytest.mark.parametrize("content, why", [
    ("{not json", "invalid JSON"),
    ("[1, 2]", "expected an object"),
    ('{"results": []}', "environment"),
    ('{"environment": {}, "results": {}}', "results"),
    ('{"environment": {}, "results": [{"x": 1}]}', "results[0]"),
    ('{"environment": {}, "results": [{"artifact": "a", "status": "done"}]}', "results[0].status"),
    ('{"environment": {}, "results": [{"artifact": "a", "status": "ok", "threads": "4"}]}',
     "results[0].threads: expected an integer, got str"),
    ('{"environment": {}, "results": [{"artifact": "a", "status": "ok", "latency_ms": {"p50": 1}}]}',
     "results[0].latency_ms: missing p90"),
    ('{"environment": {}, "results": [{"artifact": "a", "status": "ok", "accuracy": {"miou": true}}]}',
     "results[0].accuracy.miou: expected a number, got bool"),
])
def test_load_bench_rejects_garbage(tmp_path, content, why):
    path = tmp_path / "garbage.json"
    path.write_text(content)
    with pytest.raises(UserError, match="not a unet-bench result file") as info:
        load_bench(path)
    assert str(path) in str(info.value) and why in str(info.value)


def test_load_bench_rejects_missing_and_binary_files(tmp_path):
    with pytest.raises(UserError, match="missing.json.*no such file"):
        load_bench(tmp_path / "missing.json")
    binary = tmp_path / "model.tflite"
    binary.write_bytes(b"\x00\xff\xfe" * 100)
    with pytest.raises(UserError, match="model.tflite: not a unet-bench result file"):
        load_bench(binary)


# ---------------------------------------------------------------- compare


@pytest.fixture
def pi_bench(bench) -> dict:
    pi = copy.deepcopy(bench)
    pi["environment"]["label"] = "pi4"
    pi["results"] = [r for r in pi["results"] if r["runtime"] != "openvino"]  # missing on the Pi
    for r in pi["results"]:
        if r["latency_ms"]:
            r["latency_ms"]["p50"] *= 6.0
    pi["results"][3]["latency_ms"]["p50"] = 31.0  # int8, 4 threads
    return pi


def _table(text: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in text.splitlines()
            if line.startswith("|")]


def test_compare_default_baseline_ratios(bench, pi_bench):
    text = compare_mod.compare([("laptop-file", _result(bench)), ("pi-file", _result(pi_bench))])
    assert "Baseline: unet.keras/keras/cpu (4t×1b) in run 'laptop' (48.0 ms/frame)" in text
    table = _table(text)
    header = table[0]
    assert header[3:] == ["laptop ms/frame", "laptop threads×batch", "laptop mIoU", "laptop vs baseline",
                          "pi4 ms/frame", "pi4 threads×batch", "pi4 mIoU", "pi4 vs baseline"]
    rows = {(r[0], r[1], r[2]): r for r in table[2:]}
    # one line per artifact × runtime × device: int8 at 1 and 4 threads is one line, the skipped GPU row none
    assert len(table) == 2 + 7
    keras = rows[("unet.keras", "keras", "cpu")]
    assert keras[6] == "1.00x" and keras[10] == f"{48.0 * 6 / 48.0:.2f}x"
    int8 = rows[("unet_int8.tflite", "litert", "cpu")]
    assert int8[3:7] == ["3.10", "1t×1b (best of 2)", "0.5710", f"{3.1 / 48.0:.3f}x"]
    assert int8[7:] == [f"{3.1 * 6:.1f}", "1t×1b (best of 2)", "0.5710", f"{3.1 * 6 / 48.0:.2f}x"]
    openvino = rows[("unet.onnx", "openvino", "cpu")]
    assert openvino[6] == f"{0.95 / 48.0:.3f}x" == "0.020x" and openvino[7:] == ["-", "-", "-", "-"]
    failed = rows[("unet_int8.onnx", "onnxruntime", "cpu")]
    assert failed[3] == "failed" and failed[6] == "-"
    assert "No partner in the other run: 1 row only in 'laptop': unet.onnx/openvino/cpu" in text
    assert "skipped" not in text

    data = compare_mod.comparison([("a", _result(bench)), ("b", _result(pi_bench))])
    key = ("unet_int8.tflite", "litert", "cpu")
    assert data.ratios[("pi4", key)] == pytest.approx(3.1 * 6 / 48.0)
    assert data.unpaired == {"laptop": [("unet.onnx", "openvino", "cpu")]}


def test_compare_pairs_different_threads_and_batches_per_frame(bench):
    """The README's recipe: a Pi at 1 thread, batch 1 and 4, against a laptop at 2 threads, batch 1."""
    laptop, pi = copy.deepcopy(bench), copy.deepcopy(bench)
    laptop["results"] = [_row("unet_int8.tflite", "tflite", "int8", "litert", 8.0, 0.57, 0.94, threads=2),
                         _row("unet_fp32.tflite", "tflite", "fp32", "litert", 20.0, 0.61, 0.999, threads=2)]
    pi["environment"]["label"] = "pi4"
    pi["results"] = [_row("unet_int8.tflite", "tflite", "int8", "litert", 60.0, 0.57, 0.94, threads=1),
                     _row("unet_int8.tflite", "tflite", "int8", "litert", 200.0, 0.57, 0.94, threads=1, batch=4),
                     _row("unet_fp32.tflite", "tflite", "fp32", "litert", 150.0, 0.61, 0.999, threads=1, batch=4),
                     _row("unet_fp32.tflite", "tflite", "fp32", "litert", 140.0, 0.61, 0.999, threads=1)]
    text = compare_mod.compare([("l", _result(laptop)), ("p", _result(pi))])
    rows = {r[0]: r for r in _table(text)[2:]}
    assert len(rows) == 2 and "No partner" not in text
    assert rows["unet_int8.tflite"][3:5] == ["8.00", "2t×1b"]
    assert rows["unet_int8.tflite"][7:] == ["50.0", "1t×4b (best of 2)", "0.5700", f"{50.0 / 8.0:.2f}x"]
    assert rows["unet_fp32.tflite"][7:9] == ["37.5", "1t×4b (best of 2)"]  # 150 ms for 4 frames
    # a baseline can name one configuration: threads and batch
    data = compare_mod.comparison([("l", _result(laptop)), ("p", _result(pi))],
                                  baseline="pi4:unet_int8.tflite/litert/cpu/1/1")
    assert data.baseline_ms == pytest.approx(60.0) and data.baseline_row.batch_size == 1
    assert data.ratios[("laptop", ("unet_int8.tflite", "litert", "cpu"))] == pytest.approx(8.0 / 60.0)


def test_compare_named_baseline_and_file_stem_labels(bench, pi_bench):
    del bench["environment"]["label"]
    text = compare_mod.compare([("run-a", _result(bench)), ("pi-file", _result(pi_bench))],
                               baseline="unet_int8.tflite/litert/cpu/4")
    assert "Baseline: unet_int8.tflite/litert/cpu (4t×1b) in run 'run-a' (7.30 ms/frame)" in text
    rows = {(r[0], r[1], r[2]): r for r in _table(text)[2:]}
    assert _table(text)[0][3] == "run-a ms/frame"
    assert rows[("unet.keras", "keras", "cpu")][6] == f"{48.0 / 7.3:.2f}x" == "6.58x"
    # the baseline run's cell is the baseline configuration itself, not its fastest one
    assert rows[("unet_int8.tflite", "litert", "cpu")][3:7] == ["7.30", "4t×1b (best of 2)", "0.5710", "1.00x"]
    assert rows[("unet_int8.tflite", "litert", "cpu")][10] == f"{3.1 * 6 / 7.3:.2f}x"
    # a run prefix takes the baseline from that run
    data = compare_mod.comparison([("run-a", _result(bench)), ("p", _result(pi_bench))], baseline="pi4:unet.keras/keras/cpu")
    assert data.baseline_label == "pi4" and data.baseline_ms == pytest.approx(288.0)
    assert data.ratios[("run-a", data.baseline_key)] == pytest.approx(48.0 / 288.0)


def test_compare_rejects_unknown_baseline(bench, pi_bench):
    with pytest.raises(UserError, match="unknown baseline 'nope.tflite/litert/cpu'") as info:
        compare_mod.compare([("a", _result(bench)), ("b", _result(pi_bench))], baseline="nope.tflite/litert/cpu")
    assert "unet.keras/keras/cpu" in str(info.value) and "unet_int8.tflite/litert/cpu" in str(info.value)
    with pytest.raises(UserError, match="no ok row"):
        compare_mod.compare([("a", _result(bench))], baseline="unet_int8.onnx/onnxruntime/cpu")
    with pytest.raises(UserError):
        compare_mod.compare([])


def test_compare_same_label_twice_is_disambiguated(bench):
    text = compare_mod.compare([("a", _result(bench)), ("b", _result(bench))])
    assert "laptop ms/frame" in text and "laptop#2 ms/frame" in text


# ---------------------------------------------------------------- plots


def _png_size(path, max_bytes: int = MAX_PNG_BYTES) -> tuple[int, int]:
    from PIL import Image

    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert 2_000 < len(data) < max_bytes, len(data)
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        return image.size


def test_latency_vs_miou_png(bench, tmp_path):
    pytest.importorskip("matplotlib")
    path = latency_vs_miou(_rows(bench), tmp_path / "lat.png")
    width, height = _png_size(path)
    assert width > height
    budget = latency_vs_miou(_rows(bench), tmp_path / "budget.png", reference_miou=0.612, max_miou_drop=1.0)
    assert _png_size(budget)[1] == height and _png_size(budget)[0] >= width  # + a "vs Keras" column
    # nothing to plot still gives a picture saying so
    empty = latency_vs_miou(_rows(bench)[-2:], tmp_path / "empty.png")
    assert empty.read_bytes()[:8] == PNG_SIGNATURE


def test_per_class_iou_png(bench, tmp_path):
    pytest.importorskip("matplotlib")
    path = per_class_iou_heatmap(_rows(bench), class_names(N_CLASSES), tmp_path / "iou.png")
    width, height = _png_size(path)
    assert width > height
    # without a Keras reference row: the IoU panel alone
    no_reference = per_class_iou_heatmap(_rows(bench)[1:], class_names(N_CLASSES), tmp_path / "iou1.png")
    assert _png_size(no_reference)[0] < width


def _synthetic_maps(k=3, h=96, w=128, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    images = np.stack([np.stack([xx / w, yy / h, np.full((h, w), 0.3 + 0.2 * i)], -1) for i in range(k)])
    reference = np.where(yy < h * 0.4, 13, np.where(yy > h * 0.7, 7, 1)).astype(np.uint8)
    reference = np.repeat(reference[None], k, axis=0)
    reference[:, 50:70, 20:40] = 10
    reference[:, 40:60, 90:95] = 5
    rows = []
    for i, flip in enumerate((0.0, 0.002, 0.01, 0.05, 0.08, 0.12, 0.2)):
        maps = reference.copy()
        noise = rng.random(maps.shape) < flip
        maps[noise] = rng.integers(0, 23, noise.sum())
        rows.append((f"unet_variant_{i}.tflite@litert/cpu", maps))
    return images, reference, rows


def test_drift_picture_png(tmp_path):
    pytest.importorskip("matplotlib")
    images, reference, rows = _synthetic_maps()
    path = drift_picture(images, reference, rows[:3], tmp_path / "drift.png", labels=reference)
    width, height = _png_size(path)
    assert 600 < width <= 1000  # a row per artifact, a column per frame: fits a screen at 100 %
    # more than 6 artifacts: the 6 with the lowest agreement, one row each
    many = drift_picture(images, reference, rows, tmp_path / "drift_many.png")
    assert _png_size(many)[1] > height and _png_size(many)[0] == width
    # noisy photographs compress badly: still under the size limit
    noisy = np.clip(images + np.random.default_rng(1).normal(0, 0.3, images.shape), 0, 1)
    _png_size(drift_picture(noisy, reference, rows, tmp_path / "noisy.png", labels=reference))
    with pytest.raises(UserError, match="do not match"):
        drift_picture(images, reference, [("bad", reference[:, :10])], tmp_path / "bad.png")


def test_drift_picture_leaves_dont_care_pixels_out_of_its_agreements(tmp_path):
    pytest.importorskip("matplotlib")
    from exporter.figures import drift_picture as picture

    images, reference, _ = _synthetic_maps()
    labels = reference.astype(np.int32).copy()
    labels[:, :, :8] = 255  # a "don't care" band on the left
    maps = reference.copy()
    maps[:, :, :8] = (maps[:, :, :8] + 1) % 23  # every difference falls in the band
    counted = labels[:3] != 255
    (scored,), subtitle = picture._chosen([("x.tflite@litert/cpu", maps)], reference[:3], None, counted)
    assert scored.shown == 1.0 and "don't care" in subtitle
    row = picture._artifact_rows([scored], reference[:3], None, counted)[0]
    assert row.titles == ["100.00% agree"] * 3 and tuple(row.pictures[0][0, 0]) == picture.IGNORED_GREY
    (counting_all,), _ = picture._chosen([("x.tflite@litert/cpu", maps)], reference[:3], None)
    assert counting_all.shown == pytest.approx(1 - 8 / reference.shape[2])
    assert drift_picture(images, reference, [("x.tflite@litert/cpu", maps)], tmp_path / "d.png", labels=labels,
                         ignore_index=255).is_file()
    with pytest.raises(UserError, match="labels .* do not match the maps"):
        drift_picture(images, reference, [("x", maps)], tmp_path / "e.png", labels=labels[:, :10], ignore_index=255)
    counted[0] = False
    assert picture._artifact_rows([scored], reference[:3], None, counted)[0].titles[0] == "all don't care"


def test_write_plots_with_previews(bench, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    images, reference, rows = _synthetic_maps()
    previews = tmp_path / "run" / "previews"
    previews.mkdir(parents=True)
    np.savez_compressed(previews / "unet.keras.npz", maps=reference)
    for row, (_, maps) in zip(bench["results"][1:4], rows[1:4], strict=True):
        np.savez_compressed(tmp_path / "run" / row["preview_maps"], maps=maps)
    calls = {}

    def spy(name):
        real = getattr(bench_figures, name)

        def call(*args, **kwargs):
            calls[name] = kwargs
            return real(*args, **kwargs)
        return call

    for name in ("latency_vs_miou", "drift_picture"):
        monkeypatch.setattr(bench_figures, name, spy(name))
    bench["reference"] = {"frames": 24, "miou": 0.612}
    # unet.onnx's previews file is missing: that row is left out of the drift picture
    written = bench_figures.write_plots(_result(bench), tmp_path / "plots", class_names(N_CLASSES),
                                        eval_images=images, eval_labels=reference, maps_root=tmp_path / "run",
                                        max_miou_drop=1.0)
    assert [p.name for p in written] == ["latency_vs_miou.png", "per_class_iou.png", "drift.png"]
    for path in written:
        _png_size(path)
    assert calls["latency_vs_miou"] == {"reference_miou": 0.612, "max_miou_drop": 1.0}
    # the drift picture gets each row's agreement from the bench table, over all 24 evaluation frames
    assert calls["drift_picture"]["table_agreement"] == [0.9995, 0.9981, 0.9412]
    assert calls["drift_picture"]["eval_frames"] == 24
    # without eval data: only the two summary plots
    written = bench_figures.write_plots(_result(bench), tmp_path / "plots2", class_names(N_CLASSES))
    assert [p.name for p in written] == ["latency_vs_miou.png", "per_class_iou.png"]


def test_plots_without_matplotlib(bench, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(UserError, match="matplotlib is not installed"):
        latency_vs_miou(_rows(bench), tmp_path / "x.png")
    with pytest.raises(UserError, match=r"unet-export\[plots\]"):
        bench_figures.write_plots(_result(bench), tmp_path, class_names(N_CLASSES))
    assert not list(tmp_path.iterdir())


def test_report_modules_import_only_device_side_packages():
    import subprocess

    code = ("import sys; import exporter.bench.tables, exporter.bench.compare, exporter.figures.bench, "
            "exporter.contracts.bench_json; "
            "bad = [m for m in ('matplotlib', 'tensorflow', 'keras', 'onnxruntime', 'openvino', "
            "'ai_edge_litert', 'PIL') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_drift_far_beyond_the_export_validation_is_flagged(bench):
    from exporter.drift import beyond_export

    onnx_ort = _row("unet_int8.onnx", "onnx", "int8", "onnxruntime", 6.0, 0.571, 0.951)
    onnx_ov = _row("unet_int8.onnx", "onnx", "int8", "openvino", 3.0, 0.600, 0.985)
    for row in (onnx_ort, onnx_ov):
        row["export_agreement"] = 0.986
    bench["results"] += [onnx_ort, onnx_ov]
    result = _result(bench)
    rows = list(result.rows)
    flagged = [r for r in rows if beyond_export(r, rows)]
    assert [(r.artifact, r.runtime) for r in flagged] == [("unet_int8.onnx", "onnxruntime")]
    note = beyond_export(flagged[0], rows, "vpmaddubsw int8 dot product")
    assert "95.10% here against 98.60% when the file was exported" in note
    assert "(vpmaddubsw int8 dot product), not the model; the same file on openvino: 98.50%" in note
    assert "drift: unet_int8.onnx on onnxruntime/cpu" in tables.terminal_table(rows)
    bench["environment"].update(int8_dot_product="vpmaddubsw", cpu="AMD EPYC 7B13")
    markdown = tables.to_markdown(_result(bench))
    assert "## Drift beyond the export-time validation" in markdown
    assert "on this CPU (AMD EPYC 7B13, vpmaddubsw int8 dot product)" in markdown
    assert "on this CPU (AMD EPYC 7B13" in tables.terminal_table(rows, environment=bench["environment"])
    # the export agreement survives the JSON and the CSV
    again = BenchResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert [r.export_agreement for r in again.rows][-2:] == [0.986, 0.986]
    assert "export_agreement" in tables.to_csv(rows).splitlines()[0]
