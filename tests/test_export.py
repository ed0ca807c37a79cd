"""Every export mode on a tiny trained model, the drift gate, atomic writes, and bad inputs."""

import json
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import fp32_tolerance
from exporter.cli.main import cli
from exporter.contracts.export_spec import HEAD, ExportSpec, FloatScope
from exporter.errors import UserError
from exporter.export.api import ExportContext


@pytest.fixture(scope="module")
def ctx(tiny_run, blocks_dir):
    return ExportContext.open(tiny_run / "model.keras", blocks_dir, validation_samples=10, log=None)


def _tflite_details(path):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    return interpreter.get_input_details()[0], interpreter.get_output_details()[0]


@pytest.mark.parametrize("quantization,io,argmax,min_agree,in_dtype,out_dtype", [
    ("fp32", "float32", False, 0.999, np.float32, np.float32),
    ("fp16", "float32", False, 0.99, np.float32, np.float32),
    ("dynamic", "float32", False, 0.95, np.float32, np.float32),
    ("int8", "float32", False, 0.90, np.float32, np.float32),
    ("int8", "int8", False, 0.90, np.int8, np.int8),
    ("int8", "uint8", False, 0.90, np.uint8, np.uint8),
    ("int16x8", "float32", False, 0.95, np.float32, np.float32),
    ("fp32", "float32", True, 0.999, np.float32, np.uint8),
    ("int8", "uint8", True, 0.90, np.uint8, np.uint8),
])
def test_tflite_modes_are_written_validated_and_recorded(ctx, tmp_path, quantization, io, argmax, min_agree,
                                                         in_dtype, out_dtype):
    out = tmp_path / f"m_{quantization}_{io}_{argmax}.tflite"
    result = ctx.export(ExportSpec("tflite", quantization, io=io, argmax=argmax), out, calibration_samples=20)
    assert out.is_file() and result.entry.size_bytes == out.stat().st_size
    v = result.validation
    assert v.samples == 10 and v.pixel_agreement >= min_agree, v
    assert abs(v.miou_drop_points) < 100 * (1 - min_agree) + 5
    inp, outp = _tflite_details(out)
    assert inp["dtype"] == in_dtype and outp["dtype"] == out_dtype
    if io == "uint8":  # camera bytes go straight in
        assert inp["quantization"] == pytest.approx((1 / 255, 0))
    if argmax:
        assert len(outp["shape"]) == 3 and result.entry.output == "class_map" and v.max_abs_error is None
    else:
        assert outp["shape"][-1] == 23 and v.max_abs_error is not None
    if quantization == "fp32" and not argmax:  # the same function in another summation order: see conftest
        # (an argmax can then flip only where the top two logits are within 2 × that bound: a tie)
        assert v.max_abs_error <= fp32_tolerance(ctx.reference_logits), v
    manifest = json.loads((ctx.run.manifest_path).read_text())
    entry = next(a for a in manifest["artifacts"] if a["path"].endswith(out.name))
    assert entry["precision"] == quantization and entry["format"] == "tflite"
    assert entry["sha256"] == result.entry.sha256 and entry["size_bytes"] == result.entry.size_bytes
    assert set(entry["validation"]) >= {"pixel_agreement", "miou", "miou_reference", "max_abs_error", "samples"}


def _op_types(path) -> list[tuple[str, str]]:
    """(op name, dtype of its first output) of each op of a .tflite, in execution order."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    return [(op["op_name"], interpreter._get_tensor_details(op["outputs"][0], 0)["dtype"].__name__)
            for op in interpreter._get_ops_details()]


@pytest.mark.parametrize("io,argmax,out_dtype", [("float32", False, np.float32), ("uint8", False, np.float32),
                                                 ("uint8", True, np.uint8)])
def test_int8_float_head_keeps_only_the_classifier_conv_in_float(ctx, tmp_path, io, argmax, out_dtype):
    out = tmp_path / "fh.tflite"
    result = ctx.export(ExportSpec("tflite", "int8", io=io, argmax=argmax, float_scope=HEAD), out,
                        calibration_samples=20)
    ops = _op_types(out)
    convs = [dtype for name, dtype in ops if name == "CONV_2D"]
    assert convs[-1] == "float32" and set(convs[:-1]) == {"int8"}  # int8 body, float head
    assert not any(name == "QUANTIZE" for name, _ in ops[ops.index(("CONV_2D", "float32")):])  # no requantize
    inp, outp = _tflite_details(out)
    assert inp["dtype"] == (np.uint8 if io == "uint8" else np.float32) and outp["dtype"] == out_dtype
    if io == "uint8":
        assert inp["quantization"] == pytest.approx((1 / 255, 0))
    assert out.name == "fh.tflite" and result.validation.pixel_agreement >= 0.9
    entry = json.loads((ctx.run.manifest_path).read_text())["artifacts"][-1]
    assert entry["spec"]["float_scope"] == {"layers": [], "head": True} and entry["precision"] == "int8"


def test_float_head_needs_int8(tiny_run, blocks_dir, tmp_path):
    with pytest.raises(UserError, match="--float-head needs --quantize int8"):
        ExportSpec("tflite", "fp16", float_scope=HEAD)
    with pytest.raises(UserError, match="--float-head needs --quantize int8"):
        ExportSpec("onnx", float_scope=HEAD)
    result = CliRunner().invoke(cli, ["onnx", "--model", str(tiny_run / "model.keras"), "--data", str(blocks_dir),
                                      "--float-head", "--out", str(tmp_path / "x.onnx")])
    assert result.exit_code == 2 and "--float-head needs --quantize int8" in result.output
    assert list(tmp_path.iterdir()) == []


def test_quantized_files_are_smaller(ctx, tmp_path):
    sizes = {q: ctx.export(ExportSpec("tflite", q), tmp_path / f"{q}.tflite", calibration_samples=20).entry.size_bytes
             for q in ("fp32", "fp16", "int8")}
    assert sizes["int8"] < sizes["fp16"] < sizes["fp32"]


def test_embedded_metadata_reads_back(ctx, tmp_path):
    from exporter.export.tflite_metadata import read_metadata

    fp32 = ctx.export(ExportSpec("tflite"), tmp_path / "a.tflite").path
    meta = read_metadata(fp32.read_bytes())
    assert meta["labels"] == ctx.labels and meta["labels"][7] == "road"
    assert meta["normalization"]["std"][0] == 255.0 and "23 CARLA classes" in meta["description"]
    uint8 = ctx.export(ExportSpec("tflite", "int8", io="uint8"), tmp_path / "b.tflite", calibration_samples=20).path
    assert read_metadata(uint8.read_bytes())["normalization"] is None  # bytes are the quantized input
    bare = ctx.export(ExportSpec("tflite", metadata=False), tmp_path / "c.tflite").path
    assert read_metadata(bare.read_bytes()) is None


@pytest.mark.parametrize("quantization,io,float_head", [("fp32", "float32", False), ("int8", "uint8", False),
                                                        ("int8", "uint8", True)])
def test_mediapipe_image_segmenter_runs_the_exported_model(ctx, tmp_path, quantization, io, float_head):
    from conftest import mediapipe_category_mask
    from exporter.runtimes import get_runtime

    path = ctx.export(ExportSpec("tflite", quantization, io=io, float_scope=FloatScope(head=float_head)), tmp_path / "m.tflite",
                      calibration_samples=20).path
    runtime = get_runtime("litert")
    runtime.load(path)
    frames = np.round(ctx.validation.images[:4] * 255).astype(np.uint8)
    ours = np.argmax(runtime.predict(frames.astype(np.float32) / 255), axis=-1)
    for frame, expected in zip(frames, ours, strict=True):
        mask = mediapipe_category_mask(str(path), frame)
        assert np.mean(mask == expected) >= 0.999


@pytest.mark.parametrize("quantization,float_head", [("fp32", False), ("fp16", False), ("int8", False),
                                                     ("int8", True)])
def test_onnx_modes(ctx, tmp_path, quantization, float_head):
    import onnx

    out = tmp_path / f"m_{quantization}.onnx"
    result = ctx.export(ExportSpec("onnx", quantization, float_scope=FloatScope(head=float_head)), out, calibration_samples=20)
    model = onnx.load(out)
    onnx.checker.check_model(model)
    assert [i.name for i in model.graph.input] == ["image"] and [o.name for o in model.graph.output] == ["logits"]
    batch = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert not batch.HasField("dim_value")  # dynamic batch
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["labels"]) == ctx.labels and "255" in props["normalization"]
    assert result.validation.pixel_agreement >= {"fp32": 0.999, "fp16": 0.99, "int8": 0.9}[quantization]
    if quantization == "int8":
        assert any(n.op_type == "QuantizeLinear" for n in model.graph.node)
        # every conv's weights are int8 (dequantized), except the head's when the float head keeps it float
        producers = {o: n.op_type for n in model.graph.node for o in n.output}
        quantized = [producers.get(n.input[1]) == "DequantizeLinear" for n in model.graph.node if n.op_type == "Conv"]
        assert all(quantized[:-1]) and quantized[-1] is not float_head  # only the head is left float


def test_drift_gate_fails_with_exit_1_and_leaves_nothing(tiny_run, blocks_dir, tmp_path):
    out = tmp_path / "gated.tflite"
    args = ["tflite", "--model", str(tiny_run / "model.keras"), "--data", str(blocks_dir), "--out", str(out),
            "--validation-samples", "10", "--calibration-samples", "20"]
    failed = CliRunner().invoke(cli, [*args, "--quantize", "--min-agreement", "1.0"])
    assert failed.exit_code == 1, failed.output
    assert "pixel agreement" in failed.output and "< budget 1" in failed.output and "agree" in failed.output
    assert list(tmp_path.iterdir()) == []
    passed = CliRunner().invoke(cli, [*args, "--max-miou-drop", "0.5", "--min-agreement", "0.99"])
    assert passed.exit_code == 0, passed.output
    assert out.is_file() and "wrote" in passed.output


def test_a_file_its_runtime_cannot_run_is_one_line_and_not_written(tiny_run, blocks_dir, tmp_path, monkeypatch):
    from exporter.export import api
    from exporter.runtimes.base import ModelLoadError

    def cannot(path, runtime, images):
        raise ModelLoadError("Didn't find op for builtin opcode 'RESIZE_BILINEAR' version '4'\nRegistration failed.")

    monkeypatch.setattr(api, "run_artifact", cannot)
    out = tmp_path / "out" / "model.tflite"
    result = CliRunner().invoke(cli, ["tflite", "--model", str(tiny_run / "model.keras"), "--data", str(blocks_dir),
                                      "--out", str(out), "--validation-samples", "4"])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert result.output.strip().splitlines()[-1] == (
        f"error: {tiny_run / 'model.keras'}: model.tflite was converted, but litert cannot run it (Didn't find op "
        "for builtin opcode 'RESIZE_BILINEAR' version '4'); try another mode, or keep those layers float "
        "(--float-head, --auto-fallback)")
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def _truncated(tmp_path, tiny_run):
    path = tmp_path / "model.keras"
    data = (tiny_run / "model.keras").read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path, "not a Keras .keras model file"


def _text_file(tmp_path, tiny_run):
    path = tmp_path / "model.keras"
    path.write_text("hello")
    return path, "not a Keras .keras model file"


def _missing(tmp_path, tiny_run):
    return tmp_path / "absent.keras", "model file not found"


def _lambda_layer(tmp_path, tiny_run):
    import keras

    inputs = keras.Input((32, 32, 3))
    model = keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs))
    path = tmp_path / "lambda.keras"
    model.save(path)
    return path, "cannot load Keras model"


def _wrong_input_size(tmp_path, tiny_run):
    from exporter.model import build_unet

    path = tmp_path / "wide.keras"
    build_unet((32, 64, 3), 2, 23).save(path)
    return path, "model input 32x64 does not match the data"


@pytest.mark.parametrize("make_model", [_truncated, _text_file, _missing, _lambda_layer, _wrong_input_size])
def test_bad_model_exit_2_one_line(tmp_path, tiny_run, blocks_dir, make_model):
    path, problem = make_model(tmp_path, tiny_run)
    result = CliRunner().invoke(cli, ["tflite", "--model", str(path), "--data", str(blocks_dir)])
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and str(path) in result.output and problem in result.output


def test_data_without_usable_frames_and_unwritable_out(tiny_run, blocks_dir, tmp_path):
    (tmp_path / "empty" / "CameraRGB").mkdir(parents=True)
    (tmp_path / "empty" / "CameraMask").mkdir()
    with pytest.raises(UserError, match="no .png/.jpg frames"):
        ExportContext.open(tiny_run / "model.keras", tmp_path / "empty", log=None)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = CliRunner().invoke(cli, ["onnx", "--model", str(tiny_run / "model.keras"), "--data", str(blocks_dir),
                                      "--out", str(blocker / "m.onnx")])
    assert result.exit_code == 2 and "cannot create output folder" in result.output


def test_io_type_needs_int8():
    with pytest.raises(UserError, match="needs full-integer quantization"):
        ExportSpec("tflite", "fp16", io="uint8")
    with pytest.raises(UserError, match="TFLite options"):
        ExportSpec("onnx", "int8", io="uint8")
    with pytest.raises(UserError, match="ONNX export supports fp32, fp16, int8, not int16x8"):
        ExportSpec("onnx", "int16x8")


def test_calibration_is_class_balanced_and_deterministic():
    from conftest import select_calibration

    masks = np.zeros((50, 4, 4), np.uint8)
    masks[7, 0, 0] = 5  # one frame holds the rare class
    masks[20:, 1, 1] = 3
    images = np.random.default_rng(0).random((50, 4, 4, 3), dtype=np.float32)
    first = select_calibration(images, masks, 5, seed=1)
    assert 7 in first.indices and first.missing_classes == ()
    assert first.indices == select_calibration(images, masks, 5, seed=1).indices
    samples = list(first)
    assert samples[0].min() == 0.0 and samples[0].max() == 1.0 and samples[0].shape == (1, 4, 4, 3)
    assert np.array_equal(samples[1][0], images[first.indices[1]])


def test_a_zip_that_is_not_a_keras_archive_is_refused_with_one_line(tmp_path):
    bogus = tmp_path / "x.keras"
    with zipfile.ZipFile(bogus, "w") as z:
        z.writestr("config.json", "{}")
    with pytest.raises(UserError, match="cannot load Keras model"):
        from exporter.export.api import load_keras_model

        load_keras_model(bogus)


def test_exports_of_an_earlier_model_are_left_out_of_packs(tiny_run, blocks_dir, tmp_path):
    """After retraining, old artifacts still listed in the manifest must not be benchmarked as the new model's."""
    import shutil

    import keras

    from exporter.pack_builder import PackContents, build_pack

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "manifest.json").unlink(missing_ok=True)
    ExportContext.open(run / "model.keras", blocks_dir, 4, log=None).export(ExportSpec("tflite"), run / "old.tflite")
    model = keras.saving.load_model(run / "model.keras", compile=False)
    model.layers[-1].bias.assign(model.layers[-1].bias + 1.0)  # "retrained"
    model.save(run / "model.keras")
    warnings = []
    with pytest.raises(UserError, match="no exported artifacts"):
        build_pack(run, blocks_dir, tmp_path / "x.pack", PackContents(frames=4), log=warnings.append)
    assert any("old.tflite" in w and "earlier model.keras" in w for w in warnings)
    ExportContext.open(run / "model.keras", blocks_dir, 4, log=None).export(ExportSpec("tflite"), run / "new.tflite")
    build_pack(run, blocks_dir, tmp_path / "y.pack", PackContents(frames=4), log=None)
    with zipfile.ZipFile(tmp_path / "y.pack") as z:
        assert "artifacts/new.tflite" in z.namelist() and "artifacts/old.tflite" not in z.namelist()


def test_device_pack_leaves_model_keras_out_unless_asked(exported_run, blocks_dir, tmp_path):

    run, _ = exported_run
    light = CliRunner().invoke(cli, ["pack", str(run), "--data", str(blocks_dir), "--out", str(tmp_path / "d.pack"),
                                     "--frames", "3"])
    assert light.exit_code == 0, light.output
    full = CliRunner().invoke(cli, ["pack", str(run), "--data", str(blocks_dir), "--out", str(tmp_path / "h.pack"),
                                    "--frames", "3", "--with-keras"])
    assert full.exit_code == 0, full.output
    with zipfile.ZipFile(tmp_path / "d.pack") as z:
        names = z.namelist()
        assert "artifacts/model.keras" not in names and "eval.npz" in names
        assert "artifacts/unet_fp32.tflite" in names
    with zipfile.ZipFile(tmp_path / "h.pack") as z:
        assert "artifacts/model.keras" in z.namelist()
    assert (tmp_path / "d.pack").stat().st_size < (tmp_path / "h.pack").stat().st_size


def test_a_deleted_artifact_is_left_out_with_a_warning_and_prune_removes_it(exported_run, blocks_dir, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(exported_run[0], run)
    (run / "unet_fp32.onnx").unlink()
    result = CliRunner().invoke(cli, ["pack", str(run), "--data", str(blocks_dir), "--out", str(tmp_path / "x.pack"),
                                      "--frames", "3"])
    assert result.exit_code == 0, result.output
    assert "warning: unet_fp32.onnx: left out, listed in manifest.json but the file is gone" in result.output
    with zipfile.ZipFile(tmp_path / "x.pack") as z:
        assert "artifacts/unet_fp32.onnx" not in z.namelist() and "artifacts/unet_fp32.tflite" in z.namelist()

    before = (run / "manifest.json").read_text()
    dry = CliRunner().invoke(cli, ["prune", str(run), "--dry-run"])
    assert dry.exit_code == 0 and "would remove unet_fp32.onnx" in dry.output
    assert (run / "manifest.json").read_text() == before
    pruned = CliRunner().invoke(cli, ["prune", str(run)])
    assert pruned.exit_code == 0 and "removed unet_fp32.onnx (file not found)" in pruned.output
    listed = [a["path"] for a in json.loads((run / "manifest.json").read_text())["artifacts"]]
    assert "unet_fp32.onnx" not in listed and "unet_fp32.tflite" in listed
    again = CliRunner().invoke(cli, ["prune", str(run)])
    assert "0 entries removed" in again.output
    nothing = CliRunner().invoke(cli, ["prune", str(tmp_path / "nope")])
    assert nothing.exit_code == 2 and nothing.output.startswith("error: ") and nothing.output.count("\n") == 1


def test_onnx_int8_schemes_are_named_checked_and_recorded(ctx, tmp_path):
    assert ExportSpec("onnx", "int8", int8_scheme="reduce-range").file_name == "unet_int8_reducerange.onnx"
    assert ExportSpec("onnx", "int8", int8_scheme="u8u8").file_name == "unet_int8_u8u8.onnx"
    with pytest.raises(UserError, match="--int8-scheme is for ONNX"):
        ExportSpec("tflite", "int8", int8_scheme="u8u8")
    with pytest.raises(UserError, match="--int8-scheme is for ONNX"):
        ExportSpec("onnx", "fp16", int8_scheme="reduce-range")
    with pytest.raises(UserError, match="expected one of u8s8, reduce-range, u8u8"):
        ExportSpec("onnx", "int8", int8_scheme="s8s8")
    import onnx

    result = ctx.export(ExportSpec("onnx", "int8", int8_scheme="u8u8"), tmp_path / "m.onnx", calibration_samples=20)
    assert result.entry.spec.int8_scheme == "u8u8" and result.validation.pixel_agreement > 0.9
    weights = {init.name: init.data_type for init in onnx.load(result.path).graph.initializer}
    assert onnx.TensorProto.UINT8 in weights.values() and onnx.TensorProto.INT8 not in weights.values()


def test_onnx_u8s8_on_a_cpu_without_vnni_says_why_it_drifts(monkeypatch):
    import exporter.bench.environment as environment
    from exporter.export.formats import backend_for
    from exporter.export.onnx_backend import NO_VNNI_NOTE

    def _notes_before(spec):
        return backend_for(spec.format).notes(spec)

    monkeypatch.setattr(environment, "int8_dot_product", lambda: "vpmaddubsw")
    assert NO_VNNI_NOTE in _notes_before(ExportSpec("onnx", "int8"))
    assert NO_VNNI_NOTE not in _notes_before(ExportSpec("onnx", "int8", int8_scheme="reduce-range"))
    assert NO_VNNI_NOTE not in _notes_before(ExportSpec("tflite", "int8"))
    monkeypatch.setattr(environment, "int8_dot_product", lambda: "vnni")
    assert NO_VNNI_NOTE not in _notes_before(ExportSpec("onnx", "int8"))


def test_static_batch_gives_every_tensor_a_static_shape_and_runs_at_any_batch(ctx, tmp_path):
    """What LiteRT's GPU accelerator needs (it refuses dynamic-sized tensors); the runtimes chunk other batches."""
    from ai_edge_litert.interpreter import Interpreter

    from exporter.runtimes import get_runtime

    dynamic = ctx.export(ExportSpec("tflite"), tmp_path / "unet_fp32.tflite")
    spec = ExportSpec("tflite", "int8", io="uint8", argmax=True, static_batch=1)
    assert spec.file_name == "unet_int8_uint8io_argmax_b1.tflite"
    static = ctx.export(ExportSpec("tflite", static_batch=1), tmp_path / ExportSpec("tflite", static_batch=1).file_name)
    mobile = ctx.export(spec, tmp_path / spec.file_name, calibration_samples=20)
    assert static.entry.spec.static_batch == 1 and mobile.entry.spec.static_batch == 1 and dynamic.entry.spec.static_batch is None
    for result in (static, mobile):
        interpreter = Interpreter(model_path=str(result.path))
        assert [list(t["shape_signature"]) for t in interpreter.get_input_details()] == [[1, 32, 32, 3]]
        assert not [t["name"] for t in interpreter.get_tensor_details() if -1 in list(t["shape_signature"])]
    frames = ctx.validation.images[:3]
    reference = get_runtime("litert")
    reference.load(dynamic.path, threads=1)
    expected = reference.predict(frames)
    for name in ("litert", "openvino"):
        runtime = get_runtime(name)
        if runtime.available():
            continue
        runtime.load(static.path, threads=1)
        assert np.abs(runtime.predict(frames) - expected).max() < 1e-3  # batch 3 on a batch-1 model
    with pytest.raises(UserError, match="TFLite option"):
        ExportSpec("onnx", static_batch=1)
    with pytest.raises(UserError, match="calibration feeds one frame"):
        ExportSpec("tflite", "int8", static_batch=4)
