"""Your own model: the zoo (tests/zoo.py) through every command, as a user would bring it.

``make test`` runs the MobileNet-style model (the one whose ONNX int8 export used to crash) through the journey
and the 5-class model with palette masks, an ignore value and its own labels through the data and export
commands. ``make test-zoo`` (UNET_ZOO_FULL=1) runs every zoo model through every export mode, validation,
quant-report, --auto-fallback, pack and bench on LiteRT, ONNX Runtime and OpenVINO.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from exporter.cli.bench import cli as bench_cli
from exporter.cli.main import cli
from zoo import FIVE_CLASSES, IGNORE, MODES, ZOO, data_flags, mode_spec, train, write_data

pytestmark = pytest.mark.slow  # trains
FULL = os.environ.get("UNET_ZOO_FULL") == "1"
full_only = pytest.mark.skipif(not FULL, reason="the whole zoo × every mode: make test-zoo (UNET_ZOO_FULL=1)")
FAST = ["--calibration-samples", "24", "--validation-samples", "12"]
BENCH = ["--warmup", "0", "--min-runs", "1", "--min-seconds", "0", "--threads", "1"]


@pytest.fixture(scope="session")
def zoo(tmp_path_factory):
    """name → (ZooModel, its .keras file, its data folder), trained on first use."""
    root, made = tmp_path_factory.mktemp("zoo"), {}

    def get(name: str):
        if name not in made:
            zm = ZOO[name]
            data = write_data(zm, root / f"data_{name}")
            (root / name).mkdir()
            made[name] = (zm, train(zm, data, root / name / f"{name}.keras"), data)
        return made[name]

    return get


def _copy(model: Path, tmp_path: Path) -> Path:
    """The model alone in a folder of its own: exports and their manifest go beside it."""
    folder = tmp_path / "model"
    folder.mkdir()
    return Path(shutil.copy(model, folder / model.name))


def test_a_mobilenet_style_model_through_the_journey(zoo, tmp_path):
    """BatchNorm, ReLU6, depthwise convs, residual adds, bilinear upsampling: pipeline --model exports (ONNX int8
    included: its shape inference needed the fallback), packs, benches on every runtime and reports."""
    from exporter.bench.runner import BenchSettings
    from exporter.classes import class_names
    from exporter.contracts.export_spec import HEAD, ExportSpec
    from exporter.export.api import DataOptions
    from exporter.pipeline import PipelineOptions, run_pipeline

    zm, model, data = zoo("mobile")
    exports = (ExportSpec("tflite", "int8", io="uint8", argmax=True, static_batch=1), ExportSpec("onnx", "int8"),
               ExportSpec("onnx", "int8", float_scope=HEAD))
    options = PipelineOptions(data_dir=str(data), model=str(model), exports=exports, calibration_samples=24,
                              validation_samples=12, eval_frames=6,
                              bench=BenchSettings(min_runs=1, min_seconds=0.0, warmup=0, threads=(1,)))
    before = set(Path.cwd().iterdir())
    result = run_pipeline(tmp_path / "run", options, log=None, verbose=0)
    assert set(Path.cwd().iterdir()) == before  # ORT's shape-inference scratch files stay in a temp folder
    assert result.skipped_stages == [] and "model" in result.stage_seconds and "train" not in result.stage_seconds
    bench = json.loads((tmp_path / "run" / "bench" / "bench.json").read_text())
    assert bench["labels"] == class_names(zm.n_classes)  # no labels given: the defaults, named alike everywhere
    status = {(r["artifact"], r["runtime"]): r for r in bench["results"]}
    for spec in exports:
        runtimes = ("litert", "openvino") if spec.format.value == "tflite" else ("onnxruntime", "openvino")
        for runtime in runtimes:
            row = status[(spec.file_name, runtime)]
            assert row["status"] == "ok", row
            assert row["accuracy"]["agreement_vs_reference"] > 0.95, row
    report = result.report.read_text()
    assert "Supplied, not trained here" in report and "## Recommendation" in report

    # the same model with other class names: the exports (their metadata), the pack and the bench are redone
    names = tuple(f"thing_{i}" for i in range(zm.n_classes))
    again = run_pipeline(tmp_path / "run", replace(options, data=DataOptions(labels=names)), log=None, verbose=0)
    assert "export" not in again.skipped_stages and "pack" not in again.skipped_stages
    assert json.loads((tmp_path / "run" / "bench" / "bench.json").read_text())["labels"] == list(names)


def test_quant_report_matches_depthwise_and_batchnorm_layers(zoo, tmp_path):
    zm, model, data = zoo("mobile")
    model = _copy(model, tmp_path)
    result = CliRunner().invoke(cli, ["quant-report", "--model", str(model), *data_flags(zm, data), "--format",
                                      "onnx", "--frames", "2", "--sensitivity", "1", *FAST])
    assert result.exit_code == 0, result.output
    report = json.loads((model.parent / "quant_report.json").read_text())
    kinds = {layer["kind"] for layer in report["layers"]}
    assert {"conv", "depthwise conv", "concat"} <= kinds
    assert all(layer["weight_sqnr_db"] is None for layer in report["layers"] if layer["kind"] == "depthwise conv")
    assert sum(layer["precision"] == "int8" for layer in report["layers"]) > 20


def test_palette_masks_an_ignore_value_and_your_own_labels(zoo, tmp_path):
    """64×64, 5 classes, palette PNG masks in images/ + labels/ with a 255 "don't care" border."""
    from exporter.contracts.evaldata import load_eval
    from exporter.export.tflite_metadata import read_metadata

    zm, model, data = zoo("size64_5classes")
    flags = data_flags(zm, data)
    unlabelled = CliRunner().invoke(cli, ["data", "check", str(data), "--input-size", "64", "64", "--n-classes", "5",
                                          "--images-dir", "images", "--masks-dir", "labels"])
    assert unlabelled.exit_code == 2 and "class id 255 out of range (n_classes=5)" in unlabelled.output
    check = CliRunner().invoke(cli, ["data", "check", str(data), "--input-size", "64", "64", "--n-classes", "5",
                                     *flags[2:]])
    assert check.exit_code == 0 and "road" in check.output and "person" in check.output, check.output
    model = _copy(model, tmp_path)
    result = CliRunner().invoke(cli, ["tflite", "--model", str(model), *flags, "--quantize", "--io", "uint8",
                                      "--float-head", *FAST])
    assert result.exit_code == 0, result.output
    tflite = model.parent / "unet_int8_floathead_uint8io.tflite"
    meta = read_metadata(tflite.read_bytes())
    assert meta["labels"] == list(FIVE_CLASSES) and "into 5 classes" in meta["description"]
    assert "CARLA" not in meta["description"]
    onnx = CliRunner().invoke(cli, ["onnx", "--model", str(model), *flags, "--quantize", *FAST])
    assert onnx.exit_code == 0, onnx.output
    import onnx as onnx_lib

    props = {p.key: p.value for p in onnx_lib.load(model.parent / "unet_int8.onnx").metadata_props}
    assert json.loads(props["labels"]) == list(FIVE_CLASSES) and props["output"].startswith("NHWC logits")
    packed = CliRunner().invoke(cli, ["pack", str(model.parent), *flags, "--out", str(tmp_path / "m.pack"),
                                      "--frames", "4"])
    assert packed.exit_code == 0, packed.output
    evaldata = load_eval(model.parent / "eval.npz")
    assert evaldata.ignore_index == IGNORE and (evaldata.labels == IGNORE).any() and evaldata.n_classes == 5
    out = tmp_path / "bench.json"
    bench = CliRunner().invoke(bench_cli, ["run", str(tmp_path / "m.pack"), "--runtimes", "litert,onnxruntime",
                                           *BENCH, "--json", str(out)])
    assert bench.exit_code == 0, bench.output
    result = json.loads(out.read_text())
    assert result["labels"] == list(FIVE_CLASSES)
    assert all(r["status"] == "ok" and r["accuracy"]["agreement_vs_reference"] > 0.9 for r in result["results"])


def test_a_failed_export_leaves_nothing_behind(zoo, tmp_path, monkeypatch):
    """The gate refuses the file: nothing in the current folder (ORT's scratch files included) or the model's."""
    zm, model, data = zoo("mobile")
    model = _copy(model, tmp_path)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    before = set(model.parent.iterdir())
    result = CliRunner().invoke(cli, ["onnx", "--model", str(model), *data_flags(zm, data), "--quantize",
                                      "--min-agreement", "1.0", *FAST])
    assert result.exit_code == 1, result.output
    assert list(work.iterdir()) == [] and set(model.parent.iterdir()) == before

    # ONNX Runtime's quantizer itself gives up (a fault injected after its pre-processing wrote scratch files)
    import onnxruntime.quantization as ort_quantization

    def gives_up(*args, **kwargs):
        raise RuntimeError("Unable to find data for tensor 'x'")

    monkeypatch.setattr(ort_quantization, "quantize_static", gives_up)
    failed = CliRunner().invoke(cli, ["onnx", "--model", str(model), *data_flags(zm, data), "--quantize", *FAST])
    assert failed.exit_code == 2 and "Traceback" not in failed.output, failed.output
    assert failed.output.strip().splitlines()[-1].startswith(f"error: {model}: ONNX int8 conversion failed (Unable "
                                                             "to find data for tensor 'x')")
    assert list(work.iterdir()) == [] and set(model.parent.iterdir()) == before


def _saved(tmp_path: Path, name: str, build) -> Path:
    import keras

    path = tmp_path / f"{name}.keras"
    inputs, outputs = build(keras)
    keras.Model(inputs, outputs).save(path)
    return path


@pytest.mark.parametrize("name,build,problem", [
    ("two_outputs", lambda k: (i := k.Input((32, 32, 3)), [k.layers.Conv2D(3, 1)(i), k.layers.Conv2D(3, 1)(i)]),
     "expected one image input and one score output"),
    ("dynamic_size", lambda k: (i := k.Input((None, None, 3)), k.layers.Conv2D(3, 1)(i)),
     "height and width are not fixed"),
    ("pooled_output", lambda k: (i := k.Input((32, 32, 3)), k.layers.MaxPooling2D()(k.layers.Conv2D(3, 1)(i))),
     "per-pixel scores"),
    ("grey_input", lambda k: (i := k.Input((32, 32, 1)), k.layers.Conv2D(3, 1)(i)), "N×H×W×3"),
])
def test_a_model_that_is_not_a_segmenter_is_one_line(tmp_path, blocks_dir, name, build, problem):
    path = _saved(tmp_path, name, build)
    result = CliRunner().invoke(cli, ["tflite", "--model", str(path), "--data", str(blocks_dir)])
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert str(path) in result.output and problem in result.output


def test_a_layer_the_format_has_no_op_for_is_named_in_one_line_and_the_other_format_takes_it(tmp_path, blocks_dir):
    """Keras' area resizing is tf.ResizeArea, which LiteRT's built-in ops lack: the converter's pages of MLIR on
    stderr are not shown, the one line names the op and the layer; ONNX takes the same model."""
    import subprocess
    import sys

    def build(k):
        i = k.Input((32, 32, 3))
        x = k.layers.Resizing(16, 16, interpolation="area", name="area_pool")(k.layers.Conv2D(4, 3, padding="same")(i))
        return i, k.layers.Conv2D(23, 1)(k.layers.UpSampling2D()(x))

    path = _saved(tmp_path, "area", build)
    done = subprocess.run([sys.executable, "-c", "from exporter.cli.main import cli; cli()", "tflite", "--model",
                           str(path), "--data", str(blocks_dir), "--validation-samples", "4"], capture_output=True,
                          text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "0"}, timeout=600)
    assert done.returncode == 2 and done.stderr.strip() == (
        f"error: {path}: TFLite fp32 conversion failed: TFLite has no tf.ResizeArea (layer area_pool); replace that "
        "layer with one it has, or export the other format"), done.stderr[-3000:]
    assert not list(path.parent.glob("*.tflite"))
    onnx = CliRunner().invoke(cli, ["onnx", "--model", str(path), "--data", str(blocks_dir), "--validation-samples",
                                    "4"])
    assert onnx.exit_code == 0 and (path.parent / "unet_fp32.onnx").is_file(), onnx.output


# -- the whole zoo × every mode: make test-zoo -----------------------------------------------------------------

@full_only
@pytest.mark.parametrize("name", list(ZOO))
def test_every_zoo_model_in_every_mode_on_every_runtime(zoo, tmp_path, name):
    from exporter.export.api import DataOptions, ExportContext, read_labels
    from exporter.runtimes import get_runtime

    zm, model, data = zoo(name)
    model = _copy(model, tmp_path)
    options = DataOptions() if zm.carla else DataOptions("images", "labels", IGNORE,
                                                         tuple(read_labels(data / "labels.txt")))
    ctx = ExportContext.open(model, data, validation_samples=12, log=None, data=options)
    for mode in MODES:
        result = ctx.export(mode_spec(mode), calibration_samples=24)
        # float: the model itself; int16 activations and a float head: close; full int8 on a tiny model trained a
        # few epochs (close logits) can lose much (benchmarks/RESULTS.md): it must run and not be noise
        floor = 0.99 if "fp" in mode else 0.95 if "int16" in mode else 0.85 if "head" in mode else 0.4
        assert result.validation.pixel_agreement >= floor, (mode, result.validation)
        openvino = get_runtime("openvino")
        openvino.load(result.path, threads=1)
        out = openvino.predict(ctx.validation.images[:2])
        assert out.shape[:3] == (2, *zm.size), mode
    for fmt in ("tflite", "onnx"):
        report = CliRunner().invoke(cli, ["quant-report", "--model", str(model), *data_flags(zm, data), "--format",
                                          fmt, "--frames", "2", "--sensitivity", "1", *FAST])
        assert report.exit_code == 0, report.output
    fallback = CliRunner().invoke(cli, ["tflite", "--model", str(model), *data_flags(zm, data), "--quantize",
                                        "--auto-fallback", "--max-miou-drop", "50", "--min-agreement", "0.5", *FAST])
    assert fallback.exit_code == 0, fallback.output
    packed = CliRunner().invoke(cli, ["pack", str(model), *data_flags(zm, data), "--out", str(tmp_path / "z.pack"),
                                      "--frames", "4"])
    assert packed.exit_code == 0, packed.output
    out = tmp_path / "bench.json"
    bench = CliRunner().invoke(bench_cli, ["run", str(tmp_path / "z.pack"), *BENCH, "--json", str(out)])
    assert bench.exit_code == 0, bench.output
    rows = json.loads(out.read_text())["results"]
    failed = [(r["artifact"], r["runtime"], r["reason"]) for r in rows if r["status"] == "failed"]
    assert not [f for f in failed if not f[2]], failed  # a runtime that cannot run a file says why
    assert np.mean([r["status"] == "ok" for r in rows if r["runtime"] != "keras"]) > 0.8, failed


def test_a_model_built_on_a_list_of_inputs_exports_with_a_fixed_batch():
    """keras.Model(model.inputs, ...) keeps its input as a list of one; --static-batch cloned it wrongly."""
    from exporter.contracts.export_spec import ExportSpec
    from exporter.export.tflite_export import convert_tflite
    from exporter.export.tflite_graph import io_types

    zm = ZOO["softmax"]
    model = zm.build()
    assert isinstance(model.input, list)
    flat = convert_tflite(model, ExportSpec("tflite", static_batch=1))
    assert io_types(flat)[1] == "logits"
