"""TFLite metadata: written with MediaPipe's writers, read back, run by MediaPipe's ImageSegmenter.

The models are the suite's tiny model (conftest ``tiny_artifacts``) converted by the library: fp32, full
int8 with uint8 camera-byte input (uint8 out; int8 out via TensorFlow's I/O rewrite; float out with the
float head), and fp32 with the in-graph argmax.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import block_frames, mediapipe_category_mask
from exporter.classes import class_names
from exporter.export import mediapipe_compat
from exporter.export import tflite_metadata as tm

pytest.importorskip("mediapipe")

SIZE = 32
LABELS = class_names(23)


def run_litert(model: bytes, frame: np.ndarray) -> np.ndarray:
    """One uint8 H×W×3 frame through LiteRT: /255 floats for a float input, the bytes for a uint8 input."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    batch = frame[None].astype(np.float32) / 255.0 if inp["dtype"] == np.float32 else frame[None]
    interpreter.set_tensor(inp["index"], batch.astype(inp["dtype"]))
    interpreter.invoke()
    return interpreter.get_tensor(out["index"])[0].copy()


@pytest.fixture(scope="module")
def models(tiny_artifacts) -> dict[str, bytes]:
    import tensorflow as tf
    from tensorflow.lite.python import util as tflite_util

    from exporter.contracts.export_spec import HEAD, ExportSpec
    from exporter.export.tflite_export import convert_tflite

    folder, model, calibration = tiny_artifacts["dir"], tiny_artifacts["model"], tiny_artifacts["calibration"]
    int8_float_io = convert_tflite(model, ExportSpec("tflite", "int8"), calibration)
    return {
        "fp32": (folder / "fp32.tflite").read_bytes(),
        "int8_uint8_out": (folder / "int8.tflite").read_bytes(),
        "int8_int8_out": bytes(tflite_util.modify_model_io_type(int8_float_io, tf.uint8, tf.int8)),
        "int8_float32_out": convert_tflite(model, ExportSpec("tflite", "int8", io="uint8", float_scope=HEAD),
                                           calibration),
        "argmax_fp32": (folder / "argmax.tflite").read_bytes(),
    }


@pytest.fixture(scope="module")
def test_frames() -> np.ndarray:
    return block_frames(6, seed=5)[0]


def _with_metadata(model: bytes, **kwargs) -> bytes:
    from ai_edge_litert.interpreter import Interpreter

    uint8_input = Interpreter(model_content=model).get_input_details()[0]["dtype"] == np.uint8
    kwargs.setdefault("normalization", None if uint8_input else (0.0, 255.0))
    return tm.add_segmenter_metadata(model, LABELS, name="tiny-unet", description="Tiny test U-Net.", **kwargs)


def test_the_tiny_model_predicts_several_classes(models, test_frames):
    """Otherwise MediaPipe agreeing with LiteRT would prove little."""
    for name in ("fp32", "int8_uint8_out"):
        predicted = np.stack([run_litert(models[name], f).argmax(-1) for f in test_frames])
        assert len(np.unique(predicted)) >= 4, name
    inp = _input_details(models["int8_uint8_out"])
    assert inp["dtype"] == np.uint8
    assert inp["quantization"][0] == pytest.approx(1 / 255) and inp["quantization"][1] == 0


def _input_details(model: bytes) -> dict:
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_content=model).get_input_details()[0]


def test_metadata_round_trips_for_the_float_model(models):
    model = tm.add_segmenter_metadata(models["fp32"], LABELS, name="tiny-unet", description="A tiny U-Net.",
                                      version="7", author="tests")
    assert tm.read_metadata(model) == {
        "name": "tiny-unet", "description": "A tiny U-Net.", "version": "7", "author": "tests",
        "labels": LABELS, "normalization": {"mean": [0.0], "std": [255.0]},
        "min_parser_version": "1.0.0", "activation": None,
    }
    with zipfile.ZipFile(io.BytesIO(model)) as archive:
        assert archive.namelist() == [tm.LABELS_FILE]
        assert archive.read(tm.LABELS_FILE).decode() == "\n".join(LABELS)


def test_uint8_input_model_needs_no_normalisation(models):
    meta = tm.read_metadata(tm.add_segmenter_metadata(models["int8_uint8_out"], LABELS, name="q", description="d",
                                                      normalization=None))
    assert meta["normalization"] is None and meta["labels"] == LABELS
    assert (meta["version"], meta["author"], meta["min_parser_version"]) == ("1", "unet-export", "1.0.0")


def test_a_model_without_metadata_reads_none(models):
    assert tm.read_metadata(models["fp32"]) is None
    assert tm.read_metadata(models["int8_uint8_out"]) is None
    with pytest.raises(ValueError, match="TFL3"):
        tm.read_metadata(b"not a model at all")


def test_writing_again_replaces_the_metadata_and_labels(models):
    first = tm.add_segmenter_metadata(models["fp32"], LABELS, name="a", description="first")
    relabelled = [label.upper() for label in LABELS]
    second = tm.add_segmenter_metadata(first, relabelled, name="b", description="second", normalization=(127.5, 127.5))
    meta = tm.read_metadata(second)
    assert (meta["name"], meta["description"], meta["labels"]) == ("b", "second", relabelled)
    assert meta["normalization"] == {"mean": [127.5], "std": [127.5]}
    with zipfile.ZipFile(io.BytesIO(second)) as archive:
        assert archive.namelist() == [tm.LABELS_FILE]


@pytest.mark.parametrize("name", ["fp32", "int8_uint8_out"])
def test_metadata_leaves_litert_outputs_bit_identical(models, test_frames, name):
    tagged = _with_metadata(models[name])
    for frame in test_frames:
        before, after = run_litert(models[name], frame), run_litert(tagged, frame)
        assert before.dtype == after.dtype and np.array_equal(before, after)


@pytest.mark.parametrize("name", ["fp32", "int8_uint8_out", "int8_int8_out", "int8_float32_out"])
def test_mediapipe_category_mask_matches_litert_argmax(models, test_frames, tmp_path, name):
    """Observed: 100% of pixels agree on every frame, for all four models, ties included (a uint8 output
    ties often; MediaPipe, like numpy, takes the first maximum)."""
    tagged = _with_metadata(models[name])
    path = tmp_path / f"{name}.tflite"
    path.write_bytes(tagged)
    agreement = []
    for frame in test_frames:
        mask = mediapipe_category_mask(str(path), frame)
        assert mask.shape == (SIZE, SIZE) and mask.dtype == np.uint8
        agreement.append(np.mean(mask == run_litert(tagged, frame).argmax(-1)))
    assert min(agreement) >= 0.999, agreement


def test_softmax_activation_is_recorded_and_keeps_the_category_mask(models, test_frames, tmp_path):
    plain, softmax = tmp_path / "plain.tflite", tmp_path / "softmax.tflite"
    plain.write_bytes(_with_metadata(models["fp32"]))
    softmax.write_bytes(_with_metadata(models["fp32"], activation="softmax"))
    meta = tm.read_metadata(softmax.read_bytes())
    assert meta["activation"] == "softmax" and meta["min_parser_version"] == "1.5.0"
    assert np.array_equal(mediapipe_category_mask(str(plain), test_frames[0]),
                          mediapipe_category_mask(str(softmax), test_frames[0]))


def test_argmax_model_runs_in_mediapipe_but_its_category_mask_is_meaningless(models, test_frames, tmp_path):
    """Pins the finding in the module docstring: MediaPipe needs the logits; a class map comes back constant."""
    tagged = _with_metadata(models["argmax_fp32"])
    path = tmp_path / "argmax.tflite"
    path.write_bytes(tagged)
    frame = test_frames[0]
    class_map = run_litert(tagged, frame)
    assert class_map.shape == (SIZE, SIZE) and len(np.unique(class_map)) >= 3
    mask = mediapipe_category_mask(str(path), frame)
    assert len(np.unique(mask)) == 1
    assert np.mean(mask == class_map) < 0.5


def test_bad_inputs_are_refused(models, tmp_path, test_frames):
    with pytest.raises(ValueError, match="normalization"):
        tm.add_segmenter_metadata(models["fp32"], LABELS, name="n", description="d", normalization=None)
    with pytest.raises(ValueError, match="4 labels for 23 output channels"):
        tm.add_segmenter_metadata(models["fp32"], LABELS[:4], name="n", description="d")
    with pytest.raises(ValueError, match="single lines"):
        tm.add_segmenter_metadata(models["fp32"], ["a\nb", *LABELS[1:]], name="n", description="d")
    with pytest.raises(ValueError, match="activation"):
        tm.add_segmenter_metadata(models["fp32"], LABELS, name="n", description="d", activation="relu")
    path = tmp_path / "m.tflite"
    path.write_bytes(_with_metadata(models["fp32"]))
    with pytest.raises(ValueError, match="input size"):
        mediapipe_category_mask(str(path), np.zeros((16, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8 RGB"):
        mediapipe_category_mask(str(path), test_frames[0].astype(np.float32))


def test_min_parser_version_follows_the_schema_additions():
    fb = mediapipe_compat.generated("metadata_schema_py_generated")

    def version(**subgraph_fields) -> str:
        import flatbuffers

        subgraph = fb.SubGraphMetadataT()
        for key, value in subgraph_fields.items():
            setattr(subgraph, key, value)
        meta = fb.ModelMetadataT()
        meta.subgraphMetadata = [subgraph]
        builder = flatbuffers.Builder(0)
        builder.Finish(meta.Pack(builder), b"M001")
        return mediapipe_compat.min_parser_version(builder.Output())

    def file(**fields):
        f = fb.AssociatedFileT()
        f.name = "x.txt"
        for key, value in fields.items():
            setattr(f, key, value)
        return f

    def tensor(**fields):
        t = fb.TensorMetadataT()
        for key, value in fields.items():
            setattr(t, key, value)
        return t

    audio = fb.ContentT()
    audio.contentPropertiesType = fb.ContentProperties.AudioProperties
    audio.contentProperties = fb.AudioPropertiesT()
    normalization = fb.ProcessUnitT()
    normalization.optionsType = fb.ProcessUnitOptions.NormalizationOptions
    normalization.options = fb.NormalizationOptionsT()
    regex = fb.ProcessUnitT()
    regex.optionsType = fb.ProcessUnitOptions.RegexTokenizerOptions
    regex.options = fb.RegexTokenizerOptionsT()
    custom = fb.CustomMetadataT()
    custom.name = "X"

    assert version() == "1.0.0"
    labels = file(type=fb.AssociatedFileType.TENSOR_AXIS_LABELS)
    assert version(outputTensorMetadata=[tensor(associatedFiles=[labels], processUnits=[normalization])]) == "1.0.0"
    assert version(associatedFiles=[file(type=fb.AssociatedFileType.VOCABULARY)]) == "1.0.1"
    assert version(inputProcessUnits=[normalization]) == "1.1.0"
    assert version(outputTensorGroups=[fb.TensorGroupT()]) == "1.2.0"
    assert version(inputTensorMetadata=[tensor(processUnits=[regex])]) == "1.2.1"
    assert version(inputTensorMetadata=[tensor(content=audio)]) == "1.3.0"
    assert version(associatedFiles=[file(type=fb.AssociatedFileType.SCANN_INDEX_FILE)]) == "1.4.0"
    assert version(associatedFiles=[file(version="2")]) == "1.4.1"
    assert version(customMetadata=[custom], inputProcessUnits=[normalization]) == "1.5.0"


def test_the_version_stand_in_is_registered_only_for_the_missing_module(models):
    import importlib.util

    tm.add_segmenter_metadata(models["fp32"], LABELS, name="n", description="d")
    module = sys.modules[mediapipe_compat.VERSION_MODULE]
    if "Stand-in" in (module.__doc__ or ""):
        assert module.GetMinimumMetadataParserVersion is mediapipe_compat.min_parser_version
        assert importlib.util.find_spec("mediapipe.tasks.cc.other") is None  # no new importable modules


def test_read_metadata_needs_neither_tensorflow_nor_mediapipe(models, tmp_path):
    path = tmp_path / "m.tflite"
    path.write_bytes(_with_metadata(models["int8_uint8_out"]))
    code = (
        "import json, sys\n"
        "from exporter.export.tflite_metadata import read_metadata\n"
        f"meta = read_metadata(open({str(path)!r}, 'rb').read())\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'mediapipe', 'keras'})\n"
        "print(json.dumps([meta, heavy]))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).parents[1])
    meta, heavy = json.loads(result.stdout.strip().splitlines()[-1])
    assert heavy == []
    assert meta["labels"] == LABELS and meta["normalization"] is None and meta["name"] == "tiny-unet"
