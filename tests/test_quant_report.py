"""quant-report and --auto-fallback on the tiny model, and on a copy made fragile on purpose."""

import json
import math
import shutil

import pytest
from click.testing import CliRunner

from exporter.cli.main import cli

FAST = ["--calibration-samples", "20", "--validation-samples", "8"]


@pytest.fixture(scope="module")
def fragile_run(tiny_run, tmp_path_factory):
    """The tiny model with one head channel whose range dwarfs the rest (bias -1000 on a class the data lacks):
    the float model's class map is unchanged, but a full-int8 head output step of ~4 flips close logits."""
    import keras

    run = tmp_path_factory.mktemp("fragile") / "run"
    shutil.copytree(tiny_run, run)
    (run / "manifest.json").unlink(missing_ok=True)
    model = keras.saving.load_model(run / "model.keras", compile=False)
    head = model.get_layer(head_name(run))
    kernel, bias = head.get_weights()
    bias[22] = -1000.0
    head.set_weights([kernel, bias])
    model.save(run / "model.keras")
    return run


def head_name(run) -> str:
    """The classifier head's layer name (Keras numbers layers per process: conv2d_19 in one run, not another)."""
    import keras

    model = keras.saving.load_model(run / "model.keras", compile=False)
    return [layer.name for layer in model.layers if isinstance(layer, keras.layers.Conv2D)][-1]


@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_report_lists_every_quantized_layer_with_finite_numbers(tiny_run, blocks_dir, tmp_path, fmt):
    out = tmp_path / "report"
    result = CliRunner().invoke(cli, ["quant-report", "--model", str(tiny_run / "model.keras"), "--data",
                                      str(blocks_dir), "--format", fmt, "--frames", "4", "--sensitivity", "1",
                                      "--out", str(out), *FAST])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "quant_report.json").read_text())
    layers = report["layers"]
    assert [layer["index"] for layer in layers] == list(range(32))  # 19 convs, 4 up-convs, 4 pools, 4 concats, head
    assert [layer["kind"] for layer in layers].count("conv") == 20 and layers[-1]["stage"] == "head"
    assert {layer["stage"] for layer in layers} == {"encoder", "bottleneck", "decoder", "head"}
    for layer in layers:
        assert layer["name"] and layer["op"] and layer["precision"] == "int8"
        assert math.isfinite(layer["sqnr_db"]) and 5 < layer["sqnr_db"] < 80, layer
        assert 0 <= layer["relative_rmse"] < 0.5 and layer["added_db"] >= 0
        if layer["kind"] in ("conv", "transposed conv"):
            assert layer["weight_sqnr_db"] > 30  # per-channel int8 weights
    assert sum(layer["flops_share"] for layer in layers) == pytest.approx(1.0)
    assert len(report["sensitivity"]) == 1 and 0 < report["sensitivity"][0]["agreement"] <= 1
    assert (out / "quant_report.md").read_text().count("\n|") >= 33
    assert (out / "quant_report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "◀" in result.output  # the worst layers are marked in the terminal table


def test_auto_fallback_finds_the_fragile_layer_and_records_it(fragile_run, blocks_dir):
    from exporter.contracts.export_spec import ExportSpec
    from exporter.export.api import ExportContext

    ctx = ExportContext.open(fragile_run / "model.keras", blocks_dir, 8, log=None)
    full = ctx.validate(ctx.write_unrecorded(ExportSpec("tflite", "int8"), fragile_run / "probe.tflite", 20))
    (fragile_run / "probe.tflite").unlink()
    assert full.pixel_agreement < 0.97  # the fragile head really breaks full int8

    result = CliRunner().invoke(cli, ["tflite", "--model", str(fragile_run / "model.keras"), "--data", str(blocks_dir),
                                      "--quantize", "--auto-fallback", "--max-miou-drop", "1", "--min-agreement",
                                      "0.97", *FAST])
    assert result.exit_code == 0, result.output
    assert "fallback step 1: float (none)" in result.output and "→ within the budget" in result.output
    assert "p50 here, one frame: full int8" in result.output
    entry = next(a for a in json.loads((fragile_run / "manifest.json").read_text())["artifacts"]
                 if a["path"] == "unet_int8_autofallback.tflite")
    assert entry["fallback"]["float_layers"] == [head_name(fragile_run)] and entry["validation"]["pixel_agreement"] >= 0.97
    assert [step["within"] for step in entry["fallback"]["steps"]] == [False, True]
    assert "until mIoU drop ≤ 1 point" in entry["fallback"]["reason"]
    from exporter.contracts.rundir import RunDir
    from exporter.run_report import fallback_lines

    lines = fallback_lines(RunDir(fragile_run).current_artifacts())
    assert lines == [f"- `unet_int8_autofallback.tflite` keeps {head_name(fragile_run)} in float: {entry['fallback']['reason']}."]


def test_impossible_budget_exits_1_and_writes_nothing(fragile_run, blocks_dir, tmp_path):
    out = tmp_path / "never.onnx"
    result = CliRunner().invoke(cli, ["onnx", "--model", str(fragile_run / "model.keras"), "--data", str(blocks_dir),
                                      "--quantize", "int8", "--auto-fallback", "--min-agreement", "1.0",
                                      "--max-float-layers", "1", "--out", str(out), *FAST])
    assert result.exit_code == 1, result.output
    assert "no attempt within the budget" in result.output and "(nothing written)" in result.output
    assert not out.exists() and not list(tmp_path.iterdir())
    no_budget = CliRunner().invoke(cli, ["onnx", "--model", str(fragile_run / "model.keras"), "--data",
                                         str(blocks_dir), "--quantize", "int8", "--auto-fallback", *FAST])
    assert no_budget.exit_code == 2 and "needs a budget" in no_budget.output
