"""One rule for drift (exporter.drift): the reference, the drop, the budget, used alike by the gate and report.md."""

from __future__ import annotations

import pytest

from exporter import drift
from exporter.contracts.bench_json import BenchResult, BenchRow
from exporter.drift import Budget
from exporter.errors import CheckFailed
from exporter.metrics import SegmentationScores


def row(artifact: str, fmt: str, miou: float, agreement: float, status: str = "ok", runtime: str = "litert",
        precision: str = "fp32") -> BenchRow:
    from exporter.contracts.bench_json import Latency

    ok = status == "ok"
    return BenchRow(artifact=artifact, status=status, format=fmt, precision=precision, runtime=runtime,
                    device="cpu", threads=2, batch_size=1, size_bytes=1_000_000,
                    latency=Latency.from_values([5.0, 6.0]) if ok else None, throughput_fps=180.0 if ok else None,
                    accuracy=SegmentationScores(0.9, miou, [miou], agreement) if ok else None,
                    reason=None if ok else "not installed")


def bench_with(stored_miou: float | None) -> BenchResult:
    """A Keras row at mIoU 0.600 and stored Keras outputs at ``stored_miou``: two candidate references."""
    rows = (row("model.keras", "keras", 0.600, 0.9990, runtime="keras"),
            row("unet_fp32.tflite", "tflite", 0.598, 0.9990),
            row("unet_int8.tflite", "tflite", 0.585, 0.9800, precision="int8"),
            row("unet_fp32.onnx", "onnx", 0.0, 0.0, status="skipped", runtime="onnxruntime"))
    reference = None if stored_miou is None else {"source": "stored", "frames": 24, "miou": stored_miou}
    return BenchResult(environment={}, rows=rows, reference=reference)


def test_the_reference_is_the_stored_keras_outputs_else_the_keras_row():
    stored = drift.reference_of(bench_with(0.640))
    assert stored.miou == 0.640 and "stored with the 24 evaluation frames" in stored.source
    assert stored.row.artifact == "model.keras"
    fallback = drift.reference_of(bench_with(None))
    assert fallback.miou == 0.600 and fallback.source == "model.keras on keras/cpu"
    nothing = drift.reference_of(BenchResult(environment={}, rows=bench_with(None).rows[1:]))
    assert nothing.miou is None and nothing.row is None


def test_drop_budget_and_verdicts():
    assert drift.miou_drop_points(0.585, 0.600) == pytest.approx(1.5)
    assert drift.miou_drop_points(None, 0.6) is None and drift.miou_drop_points(0.6, None) is None
    budget = Budget(max_miou_drop=1.0, min_agreement=0.99)
    assert budget.violations(1.5, 0.98) == ["mIoU drop 1.50 points > budget 1", "pixel agreement 0.9800 < budget 0.99"]
    assert budget.violations(None, None) == ["mIoU drop not measured > budget 1",
                                             "pixel agreement not measured < budget 0.99"]
    assert Budget().violations(50.0, 0.0) == [] and not Budget().is_set
    assert budget.describe() == "mIoU drop ≤ 1 point, pixel agreement ≥ 99% vs Keras"
    verdicts = drift.judge(bench_with(None), budget)
    assert verdicts[-1] is None  # skipped: not judged
    assert [v.within for v in verdicts[:3]] == [True, True, False]
    assert verdicts[2].miou_drop == pytest.approx(1.5)
    failed = drift.judge_row(row("x.tflite", "tflite", 0, 0, status="failed"), drift.reference_of(bench_with(None)),
                             Budget())
    assert failed.problems == ("failed to run",) and not failed.within


def test_check_names_the_rows_over_budget_in_one_line():
    with pytest.raises(CheckFailed) as info:
        drift.check(bench_with(0.640), Budget(max_miou_drop=1.0))
    assert str(info.value).startswith("3 of 3 rows outside the budget (mIoU drop ≤ 1 point vs Keras): ")
    assert "\n" not in str(info.value)
    drift.check(bench_with(None), Budget(max_miou_drop=2.0))  # within: no exception


def test_report_and_gate_give_the_same_verdict_when_keras_row_and_stored_reference_disagree():
    """The stored Keras outputs say 0.640, the Keras row 0.600: judged by one rule, both say the same."""
    from exporter.run_report import comparison_rows

    bench, budget = bench_with(0.640), Budget(max_miou_drop=1.0)
    gate = {v.row.artifact: v.within for v in drift.judge(bench, budget) if v is not None}
    report = {r.row.artifact: r.within for r in comparison_rows(bench, budget)}
    assert report == gate == {"model.keras": False, "unet_fp32.tflite": False, "unet_int8.tflite": False}
    # the Keras row alone (a file without stored outputs) would have passed the fp32 file: the files differ
    assert {v.row.artifact: v.within for v in drift.judge(bench_with(None), budget) if v}["unet_fp32.tflite"]


def test_beyond_export_flags_kernels_not_the_model():
    ok = BenchRow(**{**row("unet_int8.tflite", "tflite", 0.58, 0.951).__dict__, "export_agreement": 0.986})
    note = drift.beyond_export(ok, [ok], "Cortex-A72, neon int8 dot product")
    assert "95.10% here against 98.60% when the file was exported" in note
    assert "this runtime's kernels on this CPU (Cortex-A72, neon int8 dot product), not the model" in note
    close = BenchRow(**{**ok.__dict__, "accuracy": SegmentationScores(0.9, 0.58, [0.58], 0.984)})
    assert drift.beyond_export(close) is None


def test_bench_gate_and_report_md_agree_on_a_real_run_whose_keras_row_and_stored_outputs_disagree(
        exported_run, tmp_path):
    """`unet-bench run --max-miou-drop` and report.md on the same bench file: the same verdict for every row.

    The stored Keras outputs are replaced by perfect ones (the labels), so they score mIoU 1.0 while the Keras
    row scores what the model scores: the two candidate references disagree by tens of points."""
    import shutil

    import numpy as np
    from click.testing import CliRunner

    from exporter.cli.bench import cli as bench_cli
    from exporter.contracts.evaldata import load_eval, save_eval
    from exporter.contracts.rundir import RunDir
    from exporter.pipeline import PipelineOptions
    from exporter.run_report import write_report

    run = RunDir(tmp_path / "run")
    shutil.copytree(exported_run[0], run.path)
    evaldata = load_eval(run.eval_path)
    perfect = np.eye(evaldata.n_classes, dtype=np.float32)[evaldata.labels] * 10
    save_eval(run.eval_path, evaldata.images, evaldata.labels, perfect, list(evaldata.stems))
    out = run.bench_dir / "bench.json"
    result = CliRunner().invoke(bench_cli, ["run", str(run.path), "--runtimes", "keras,litert", "--warmup", "0",
                                            "--min-runs", "1", "--min-seconds", "0", "--threads", "1",
                                            "--max-miou-drop", "1", "--json", str(out)])
    assert result.exit_code == 1, result.output
    gate = {line.split()[0]: line.split()[-2] for line in result.output.splitlines()
            if line.split() and line.split()[0] in ("model.keras", "unet_fp32.tflite", "unet_int8_uint8io_argmax.tflite")
            and line.split()[-2] in ("within", "OVER")}
    write_report(run, PipelineOptions(budget=drift.Budget(max_miou_drop=1.0)), {}, {"stages": {}})
    table = [line.split("|") for line in run.report.read_text().splitlines() if line.startswith("| ")]
    report = {cells[1].strip(): cells[-2].strip() for cells in table if cells[-2].strip() in ("✓", "✗")}
    assert set(gate) == {"model.keras", "unet_fp32.tflite", "unet_int8_uint8io_argmax.tflite"} == set(report)
    for artifact, verdict in gate.items():
        assert verdict == "OVER", (artifact, verdict)  # 1.0 mIoU is out of reach: every row is over budget
        assert report[artifact] == "✗"
    frames = len(evaldata.labels)  # the exported run's last pack decides how many
    assert f"Keras outputs stored with the {frames} evaluation frames (mIoU 1.0000)" in run.report.read_text()
