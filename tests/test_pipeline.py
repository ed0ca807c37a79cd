"""The whole journey on a tiny configuration, and a re-run that redoes nothing."""

import json

import pytest
from click.testing import CliRunner

from exporter.bench.runner import BenchSettings
from exporter.cli.main import cli
from exporter.contracts.export_spec import ExportSpec
from exporter.pipeline import PipelineOptions, run_pipeline
from exporter.train import TrainConfig

pytestmark = pytest.mark.slow  # trains


def _tiny(min_runs: int = 2):
    return PipelineOptions(
        synth_count=24, training=TrainConfig(epochs=2, batch_size=8, n_filters=2, input_size=(32, 32), val_split=0.25),
        calibration_samples=12, validation_samples=6, eval_frames=4,
        bench=BenchSettings(runtimes=("litert", "onnxruntime"), min_runs=min_runs, min_seconds=0.0),
        exports=(ExportSpec("tflite", "fp32"), ExportSpec("tflite", "int8", io="uint8", argmax=True),
                 ExportSpec("onnx", "fp32")))


def test_pipeline_end_to_end_then_resumes_without_redoing(tmp_path):
    run = tmp_path / "run"
    first = run_pipeline(run, _tiny(), log=None, verbose=0)
    for name in ("data/CameraRGB", "model.keras", "training_curves.png", "manifest.json", "unet_fp32.tflite",
                 "unet_int8_uint8io_argmax.tflite", "unet_fp32.onnx", "unet.pack", "eval.npz",
                 "bench/bench.json", "bench/bench.md", "plots", "report.md"):
        assert (run / name).exists(), name
    assert first.skipped_stages == []
    report = (run / "report.md").read_text()
    for section in ("## Recommendation", "## Artifacts × runtimes", "## Export validation", "## Budgets",
                    "## Environment", "training_curves.png", "plots/"):
        assert section in report, section
    # no Keras row was benchmarked: drift is measured from the reference outputs stored with the frames
    assert "**Fastest within the accuracy budget**" in report and "No exported artifact" not in report
    bench = json.loads((run / "bench" / "bench.json").read_text())
    assert 0 < bench["reference"]["miou"] <= 1 and bench["reference"]["frames"] == 4
    assert {r["runtime"] for r in bench["results"] if r["status"] == "ok"} == {"litert", "onnxruntime"}
    model_mtime = (run / "model.keras").stat().st_mtime_ns

    first_times = {name: stage["seconds"] for name, stage in
                   json.loads((run / "pipeline.json").read_text())["stages"].items()}
    again = run_pipeline(run, _tiny(), log=None, verbose=0)
    assert again.skipped_stages == ["data", "train", "export", "pack", "bench"]
    assert (run / "model.keras").stat().st_mtime_ns == model_mtime
    # a re-run with nothing to do keeps each stage's time from when it ran, and says so
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in
             (run / "report.md").read_text().split("## Stage times")[1].splitlines()
             if line.startswith("| ") and "---" not in line]
    times = {row[0]: row for row in cells}
    assert times["train"][1] == f"{first_times['train']:.1f}" and first_times["train"] > 0
    assert times["train"][2].startswith("earlier run (up to date")
    assert float(times["total"][1]) >= sum(first_times.values()) - 0.5

    changed = run_pipeline(run, _tiny(min_runs=3), log=None, verbose=0)  # only the bench depends on it
    assert changed.skipped_stages == ["data", "train", "export", "pack"]


def test_pipeline_cli_reports_bad_data_with_exit_2(tmp_path):
    result = CliRunner().invoke(cli, ["pipeline", "--out", str(tmp_path / "run"), "--data", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "folder not found" in result.output
    (tmp_path / "empty" / "CameraRGB").mkdir(parents=True)
    (tmp_path / "empty" / "CameraMask").mkdir()
    result = CliRunner().invoke(cli, ["pipeline", "--out", str(tmp_path / "run2"), "--data", str(tmp_path / "empty")])
    assert result.exit_code == 2 and not (tmp_path / "run2").exists(), result.output


def test_pipeline_with_wrong_data_leaves_no_run_folder(tmp_path):
    result = CliRunner().invoke(cli, ["pipeline", "--out", str(tmp_path / "run"), "--data", str(tmp_path / "nope")])
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert not (tmp_path / "run").exists()
