"""Int8 that stays integer: cross-layer equalization, int16 islands, tensor-aware fallback, and the file read back
op by op (issue 22), on the tiny model and on a copy whose channel ranges are made to differ widely."""

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from exporter.cli.main import cli

FAST = ["--calibration-samples", "20", "--validation-samples", "8"]
FACTOR = 1000.0  # the imbalance: one channel of one conv's output scaled up, its reader's input scaled down


def _entry(run, name: str) -> dict:
    return next(a for a in json.loads((run / "manifest.json").read_text())["artifacts"] if a["path"] == name)


def _export(run, blocks_dir, *args):
    result = CliRunner().invoke(cli, ["tflite", "--model", str(run / "model.keras"), "--data", str(blocks_dir),
                                      "--quantize", *args, *FAST])
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def imbalanced_run(tiny_run, tmp_path_factory):
    """The tiny model with one conv → ReLU → conv pair made imbalanced: the producer's widest output channel ×1000,
    its reader's input channel ÷1000 (the float function kept: ReLU(1000·x) = 1000·ReLU(x)). Returns (run, the
    producer's name, its reader's name)."""
    import keras

    from exporter.export.equalize import find_pairs

    run = tmp_path_factory.mktemp("imbalanced") / "run"
    shutil.copytree(tiny_run, run)
    (run / "manifest.json").unlink(missing_ok=True)
    model = keras.saving.load_model(run / "model.keras", compile=False)
    pair = [p for p in find_pairs(model)[0] if len(p.consumers) == 1 and p.consumers[0][1] == 0][2]  # encoder block 2
    producer, reader = model.get_layer(pair.producer), model.get_layer(pair.consumers[0][0])
    frames = np.random.default_rng(0).random((4, 32, 32, 3)).astype(np.float32)
    before = np.asarray(model(frames))
    kernel, bias = producer.get_weights()
    channel = int(np.argmax(np.abs(kernel).max(axis=(0, 1, 2))))
    kernel[..., channel] *= FACTOR
    bias[channel] *= FACTOR
    producer.set_weights([kernel, bias])
    weights = reader.get_weights()
    weights[0][:, :, channel, :] /= FACTOR
    reader.set_weights(weights)
    after = np.asarray(model(frames))
    assert np.abs(after - before).max() < 1e-3 * np.abs(before).max()  # the same function
    model.save(run / "model.keras")
    return run, producer.name, reader.name


def test_equalization_keeps_the_float_model_and_finds_every_valid_pair(tiny_artifacts):
    import keras

    from exporter.export.equalize import equalize, find_pairs

    model = tiny_artifacts["model"]
    pairs, skipped = find_pairs(model)
    convs = [layer.name for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    transposed = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2DTranspose)]
    # every ReLU conv and transposed conv of the U-Net has conv readers (through pooling, dropout, concatenation);
    # the head is the model's output and is left
    assert len(pairs) == len(convs) + len(transposed) - 1 == 23
    assert skipped == {convs[-1]: f"{convs[-1]} is a model output"}
    concat_reads = [c for p in pairs for c in p.consumers if c[1] > 0]
    assert concat_reads, "skip connections are read at a channel offset of the concatenation"
    equalized, report = equalize(model, tiny_artifacts["frames"], bias_correction=False)
    assert report.float_change < 1e-5 and report.largest_ratio_after < min(report.largest_ratio_before, 1.5)
    frames = tiny_artifacts["frames"]
    np.testing.assert_allclose(np.asarray(equalized(frames)), tiny_artifacts["reference"], rtol=1e-4, atol=1e-4)
    assert any(not np.allclose(a, b) for a, b in zip(equalized.get_weights(), model.get_weights(), strict=True))
    np.testing.assert_allclose(np.asarray(model(frames)), tiny_artifacts["reference"], rtol=0, atol=1e-5)  # untouched
    _, corrected = equalize(model, frames)
    assert corrected.biases_corrected == len(convs)


def test_a_batch_norm_or_relu6_between_convs_is_left_with_the_reason():
    import keras

    from exporter.export.equalize import find_pairs

    inputs = keras.Input((16, 16, 3))
    a = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="a")(inputs)
    b = keras.layers.Conv2D(4, 3, padding="same", name="b")(a)
    b = keras.layers.BatchNormalization(name="bn")(b)
    c = keras.layers.Conv2D(4, 3, padding="same", activation="relu6", name="c")(b)
    d = keras.layers.Conv2D(2, 1, name="d")(c)
    pairs, skipped = find_pairs(keras.Model(inputs, d))
    assert [p.producer for p in pairs] == ["a"]
    assert "bn (BatchNormalization)" in skipped["b"] and "relu6" in skipped["c"] and "model output" in skipped["d"]


def test_equalization_restores_the_imbalanced_model_with_no_float_op(tiny_run, imbalanced_run, blocks_dir):
    from exporter.export.tflite_graph import float_ops

    run, producer, _ = imbalanced_run
    balanced_run = tiny_run.parent / "balanced_copy"
    shutil.copytree(tiny_run, balanced_run, dirs_exist_ok=True)
    (balanced_run / "manifest.json").unlink(missing_ok=True)
    name = "unet_int8_uint8io_argmax_b1.tflite"
    out = _export(balanced_run, blocks_dir, "--integer-only", "--argmax").output
    assert "integer-only, read back: QUANTIZE ×1 (uint8→int8), CONV_2D" in out
    balanced = _entry(balanced_run, name)["validation"]["pixel_agreement"]
    _export(run, blocks_dir, "--integer-only", "--argmax")
    broken = _entry(run, name)["validation"]["pixel_agreement"]
    result = _export(run, blocks_dir, "--integer-only", "--argmax", "--equalize")
    equalized = _entry(run, "unet_int8_eq_uint8io_argmax_b1.tflite")
    assert broken < balanced - 0.02, (broken, balanced)  # the imbalance really hurts int8
    assert equalized["validation"]["pixel_agreement"] >= balanced - 0.01, (equalized["validation"], balanced)
    assert equalized["spec"]["equalize"] and equalized["spec"]["integer_only"]
    assert "equalized 23 conv pair(s)" in result.output
    for artifact in (balanced_run / name, run / name, run / "unet_int8_eq_uint8io_argmax_b1.tflite"):
        assert float_ops(artifact.read_bytes()) == [], artifact
    recipe = json.loads((run / "unet_int8_eq_uint8io_argmax_b1.recipe.json").read_text())
    assert recipe["equalize"] is True and recipe["int16_layers"] == []


def test_integer_only_fallback_keeps_the_damaged_tensor_in_int16(imbalanced_run, blocks_dir, tmp_path):
    from exporter.export import tflite_graph

    run, producer, reader = imbalanced_run
    result = _export(run, blocks_dir, "--integer-only", "--argmax", "--auto-fallback", "--min-agreement", "0.96")
    assert "fallback step 1: int16 (none)" in result.output
    assert f"fallback step 2: int16 {producer}:" in result.output and "→ within the budget" in result.output
    name = "unet_int8_autoint16_uint8io_argmax_b1.tflite"
    entry = _entry(run, name)
    assert entry["spec"]["int16_layers"] == [producer] and entry["fallback"]["precision"] == "int16"
    assert entry["validation"]["pixel_agreement"] >= 0.96
    model_bytes = (run / name).read_bytes()
    assert tflite_graph.float_ops(model_bytes) == []
    wide = [op.op for op in tflite_graph.ops(model_bytes) if op.out.dtype == "int16"]
    assert wide.count("CONV_2D") == 2 and "QUANTIZE" in wide  # the producer and its reader, requantized around
    # the recipe beside it makes the same model again (the embedded metadata names the file, so not the same bytes)
    again = tmp_path / "again.tflite"
    redo = _export(run, blocks_dir, "--argmax", "--recipe", str(run / name.replace(".tflite", ".recipe.json")),
                   "--out", str(again))
    assert tflite_graph.op_table(again.read_bytes()) == tflite_graph.op_table(model_bytes)
    assert f"{entry['validation']['pixel_agreement']:.4f}" in redo.output.split("again.tflite", 2)[-1]


def test_float_fallback_keeps_the_tensor_float_with_its_reader(imbalanced_run, blocks_dir):
    run, producer, reader = imbalanced_run
    _export(run, blocks_dir, "--io", "uint8", "--argmax", "--auto-fallback", "--min-agreement", "0.96")
    entry = _entry(run, "unet_int8_autofallback_uint8io_argmax.tflite")
    # one step: the damaged tensor kept float from its producer to its reader (the producer alone is requantized)
    assert entry["fallback"]["float_layers"] == [producer, reader], entry["fallback"]
    assert [step["within"] for step in entry["fallback"]["steps"]] == [False, True]


def test_a_float_op_in_an_integer_only_file_is_caught(tiny_artifacts):
    from exporter.errors import UserError
    from exporter.export.tflite_backend import integer_only_note
    from exporter.export.tflite_graph import float_ops

    fp32 = (tiny_artifacts["dir"] / "fp32.tflite").read_bytes()
    assert any(op.startswith("CONV_2D (float32") for op in float_ops(fp32))
    int8 = (tiny_artifacts["dir"] / "int8.tflite").read_bytes()  # uint8 in, uint8 logits out: integer
    assert float_ops(int8) == [] and "CONV_2D ×20" in integer_only_note(int8, "int8.tflite")
    with pytest.raises(UserError, match=r"fp32.tflite: not integer-only: \d+ op\(s\) read or write float"):
        integer_only_note(fp32, "fp32.tflite")


@pytest.mark.parametrize(("args", "message"), [
    (["--integer-only", "--float-head"], "keep nothing float: drop --float-head"),
    (["--integer-only", "--io", "float32"], "--io uint8 (camera bytes) or --io int8"),
    (["--int16", "conv2d", "--static-batch", "1", "--io", "float32"], "take integer input"),
])
def test_contradictory_integer_options_exit_2_before_loading(tiny_run, args, message):
    result = CliRunner().invoke(cli, ["tflite", "--model", str(tiny_run / "model.keras"), "--quantize", *args])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_spec_rules_and_recipe_errors(tiny_run, tmp_path):
    from exporter.contracts.export_spec import ExportSpec
    from exporter.errors import UserError

    with pytest.raises(UserError, match="--equalize needs --quantize int8"):
        ExportSpec("tflite", "fp16", equalize=True)
    with pytest.raises(UserError, match="fixed batch"):
        ExportSpec("tflite", "int8", io="uint8", int16_layers=("conv2d",))
    with pytest.raises(UserError, match="--integer-only needs --quantize int8, not fp16"):
        ExportSpec("onnx", "fp16", integer_only=True)
    assert ExportSpec("onnx", "int8", int16_layers=("conv2d",)).file_name == "unet_int8_int16.onnx"  # no batch rule
    spec = ExportSpec("tflite", "int8", io="uint8", static_batch=1, int16_layers=("conv2d",), equalize=True)
    assert ExportSpec.from_dict(spec.to_dict()) == spec and spec.file_name == "unet_int8_int16_eq_uint8io_b1.tflite"
    bad = tmp_path / "bad.recipe.json"
    for text, problem in (("{", "not a JSON recipe"), ('{"kind": "other"}', "not a unet-export int8 recipe"),
                          ('{"kind": "unet-export int8 recipe", "int16": []}', "unknown field 'int16'")):
        bad.write_text(text)
        result = CliRunner().invoke(cli, ["tflite", "--model", str(tiny_run / "model.keras"), "--recipe", str(bad)])
        assert result.exit_code == 2 and f"{bad}: {problem}" in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1


def test_equalize_on_onnx_and_in_the_quant_report(imbalanced_run, blocks_dir, tmp_path):
    run, producer, _ = imbalanced_run
    result = CliRunner().invoke(cli, ["onnx", "--model", str(run / "model.keras"), "--data", str(blocks_dir),
                                      "--quantize", "int8", "--equalize", *FAST])
    assert result.exit_code == 0, result.output
    assert _entry(run, "unet_int8_eq.onnx")["spec"]["equalize"] is True
    reports = {}
    for flag in ([], ["--equalize"]):
        out = tmp_path / f"report{len(flag)}"
        result = CliRunner().invoke(cli, ["quant-report", "--model", str(run / "model.keras"), "--data",
                                          str(blocks_dir), "--frames", "4", "--sensitivity", "0", "--out", str(out),
                                          *flag, *FAST])
        assert result.exit_code == 0, result.output
        reports[len(flag)] = {layer["name"]: layer for layer in json.loads((out / "quant_report.json").read_text())["layers"]}
    # the imbalanced tensor's channels drown in one int8 step without equalization, not with it
    assert reports[1][producer]["channel_sqnr_db"] > reports[0][producer]["channel_sqnr_db"] + 10


def test_qat_fine_tunes_and_writes_a_full_integer_file_from_the_learned_ranges(tiny_run, blocks_dir, tmp_path):
    import keras

    from exporter.export.qat import to_qat
    from exporter.export.tflite_graph import float_ops

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "manifest.json").unlink(missing_ok=True)
    result = CliRunner().invoke(cli, ["qat", "--model", str(run / "model.keras"), "--data", str(blocks_dir),
                                      "--epochs", "1", "--validation-samples", "8"])
    assert result.exit_code == 0, result.output
    assert "qat: 1 epoch(s) on 72 frames" in result.output and "integer-only, read back" in result.output
    entry = _entry(run, "unet_int8_qat_uint8io_argmax_b1.tflite")
    assert entry["spec"]["qat"] is True and "calibration" not in entry  # no calibration: the learned ranges
    assert entry["validation"]["pixel_agreement"] > 0.9
    assert float_ops((run / "unet_int8_qat_uint8io_argmax_b1.tflite").read_bytes()) == []
    onnx_entry = _entry(run, "unet_int8_qat.onnx")
    assert onnx_entry["spec"]["qat"] is True and onnx_entry["validation"]["pixel_agreement"] > 0.9
    # the scheme's coverage: a model with a batch norm is refused in one line
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.BatchNormalization()(keras.layers.Conv2D(2, 1)(inputs)))
    from exporter.errors import UserError

    with pytest.raises(UserError, match="BatchNormalization layers are not covered"):
        to_qat(model)


def test_an_island_without_argmax_gives_uint8_logits_and_follows_every_producer(tiny_run, blocks_dir, tmp_path):
    from exporter.contracts.export_spec import ExportSpec
    from exporter.export import tflite_graph
    from exporter.export.api import ExportContext

    ctx = ExportContext.open(tiny_run / "model.keras", blocks_dir, 8, log=None)
    convs = [layer.name for layer in ctx.model.layers if type(layer).__name__ == "Conv2D"]
    # two producers, the second reading the first: both tensors and the second's reader come out int16
    spec = ExportSpec("tflite", "int8", io="uint8", static_batch=1, int16_layers=(convs[0], convs[1]))
    path = ctx.write_unrecorded(spec, tmp_path / "islands.tflite", 20)
    ops = tflite_graph.ops(path.read_bytes())
    wide = [op for op in ops if op.out.dtype == "int16" and op.op in ("CONV_2D", "MAX_POOL_2D", "CONCATENATION")]
    assert [op.op for op in wide][:2] == ["CONV_2D", "CONV_2D"] and len(wide) >= 4  # + pool, concat, readers
    assert ops[-1].op == "QUANTIZE" and ops[-1].out.dtype == "uint8"  # int8 logits out as uint8, like TF's files
    assert tflite_graph.float_ops(path.read_bytes()) == []
    assert ctx.validate(path).pixel_agreement > 0.9


def test_qat_exports_take_the_learned_ranges(tiny_artifacts):
    """A range set on the head's quantizer is the head's int8 range in both files (no calibration decides it)."""
    from onnx import numpy_helper

    from exporter.contracts.export_spec import ExportSpec
    from exporter.export.onnx_export import convert_onnx
    from exporter.export.qat import to_qat
    from exporter.export.tflite_export import convert_tflite

    qat = to_qat(tiny_artifacts["model"])
    head = [layer for layer in qat.layers if hasattr(layer, "output_quantizer")][-1]
    head.output_quantizer.low.assign(-7.0)
    head.output_quantizer.high.assign(9.0)
    step = 16.0 / 255
    model_bytes = convert_tflite(qat, ExportSpec("tflite", "int8", io="uint8", static_batch=1, qat=True))
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model_bytes)
    assert interpreter.get_output_details()[0]["quantization"][0] == pytest.approx(step, rel=1e-3)
    proto = convert_onnx(qat, ExportSpec("onnx", "int8", qat=True), tiny_artifacts["calibration"])
    constants = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    scales = [float(constants[n.input[1]]) for n in proto.graph.node
              if n.op_type == "QuantizeLinear" and constants[n.input[1]].size == 1]
    assert any(abs(scale - step) < 1e-3 * step for scale in scales), scales


def test_onnx_int16_islands_are_uint16_qdq_and_integer_only(imbalanced_run, blocks_dir):
    import onnx
    from onnx import numpy_helper

    from exporter.errors import UserError
    from exporter.export.onnx_backend import integer_only_note

    run, producer, _ = imbalanced_run
    result = CliRunner().invoke(cli, ["onnx", "--model", str(run / "model.keras"), "--data", str(blocks_dir),
                                      "--integer-only", "--int16", producer, *FAST])
    assert result.exit_code == 0, result.output
    assert "integer-only, read back: 32 compute nodes" in result.output
    entry = _entry(run, "unet_int8_int16.onnx")
    assert entry["spec"]["int16_layers"] == [producer] and entry["spec"]["opset"] == 21  # what was written
    proto = onnx.load(run / "unet_int8_int16.onnx")
    constants = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    types = [constants[n.input[2]].dtype.name for n in proto.graph.node if n.op_type == "QuantizeLinear"]
    assert types.count("uint16") == 1 and types.count("uint8") > 20  # the island's tensor, the rest 8-bit
    assert entry["validation"]["pixel_agreement"] > 0.95
    head = CliRunner().invoke(cli, ["onnx", "--model", str(run / "model.keras"), "--data", str(blocks_dir),
                                    "--quantize", "int8", "--float-head", *FAST])
    assert head.exit_code == 0, head.output
    with pytest.raises(UserError, match="not integer-only: 1 compute node"):
        integer_only_note(onnx.load(run / "unet_int8_floathead.onnx"))
