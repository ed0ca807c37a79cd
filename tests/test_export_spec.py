"""ExportSpec, the float scope and the table of formats: pure records, checked once, stored whole in the manifest."""

from __future__ import annotations

from dataclasses import replace

import pytest

from exporter.contracts.checks import ContractError
from exporter.contracts.export_spec import FORMAT_OPTIONS, HEAD, ExportSpec, FloatScope
from exporter.contracts.manifest import ArtifactEntry
from exporter.errors import UserError
from exporter.parameters import ArtifactFormat, Quantization

# The file names report.md used to list by hand, best first, as the app to embed (before the spec was stored).
MOBILE_PREFERENCE = (
    "unet_int8_floathead_uint8io_argmax_b1.tflite", "unet_int8_uint8io_argmax_b1.tflite",
    "unet_int8_floathead_uint8io_b1.tflite", "unet_int8_uint8io_b1.tflite", "unet_int8_floathead_b1.tflite",
    "unet_int8_b1.tflite", "unet_fp16_b1.tflite", "unet_fp32_b1.tflite")


def test_every_format_takes_exactly_its_options():
    every_option = {"io": "uint8", "argmax": True, "metadata": False, "static_batch": 1, "opset": 17,
                    "int8_scheme": "reduce-range", "float_scope": HEAD}
    for fmt, table in FORMAT_OPTIONS.items():
        for option, value in every_option.items():
            spec = {"format": fmt, "quantization": "int8", option: value}
            if option in table.options:
                assert getattr(ExportSpec(**spec), option) == value
            else:
                with pytest.raises(UserError, match=f"for {'ONNX' if fmt is ArtifactFormat.TFLITE else 'TFLite'} only"):
                    ExportSpec(**spec)
        for quantization in Quantization:
            if quantization in table.quantizations:
                assert ExportSpec(fmt, quantization).quantization is quantization
            else:
                with pytest.raises(UserError, match=f"export supports .*not {quantization.value}"):
                    ExportSpec(fmt, quantization)


def test_spec_checks_its_combination():
    with pytest.raises(UserError, match="--float-head needs --quantize int8"):
        ExportSpec("tflite", "fp16", float_scope=HEAD)
    with pytest.raises(UserError, match="keeping layers float needs --quantize int8"):
        ExportSpec("onnx", "fp32", float_scope=FloatScope(("conv2d",)))
    with pytest.raises(UserError, match="needs full-integer quantization"):
        ExportSpec("tflite", "fp16", io="uint8")
    with pytest.raises(UserError, match="calibration feeds one frame"):
        ExportSpec("tflite", "int8", static_batch=4)
    with pytest.raises(UserError, match="quantization: expected one of fp32, fp16"):
        ExportSpec("tflite", "int4")


def test_file_names_and_round_trip():
    specs = [ExportSpec("tflite", "int8", io="uint8", argmax=True, float_scope=HEAD, static_batch=1),
             ExportSpec("onnx", "int8", int8_scheme="u8u8", float_scope=FloatScope(("conv2d_3",))),
             ExportSpec("tflite", "fp16", metadata=False)]
    assert [s.file_name for s in specs] == ["unet_int8_floathead_uint8io_argmax_b1.tflite",
                                            "unet_int8_fallback_u8u8.onnx", "unet_fp16.tflite"]
    for spec in specs:
        assert ExportSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ContractError, match=r"spec\.float_scope\.layers\[0\]: expected a string"):
        ExportSpec.from_dict({**specs[1].to_dict(), "float_scope": {"layers": [3]}})
    with pytest.raises(ContractError, match="spec: --io is for TFLite only"):
        ExportSpec.from_dict({**specs[1].to_dict(), "io": "uint8"})


def test_an_entry_from_before_the_spec_was_stored_gets_it_back():
    """Manifests and packs written by the previous version kept six spec fields beside the entry."""
    old = {"path": "unet_int8_floathead_fallback_uint8io_b1.tflite", "format": "tflite", "precision": "int8",
           "size_bytes": 10, "sha256": "0" * 64, "io": "uint8", "argmax": False, "float_head": True,
           "static_batch": 1, "fallback": {"float_layers": ["conv2d_9"], "reason": "r", "steps": []}}
    entry = ArtifactEntry.from_dict(old)
    assert entry.spec == ExportSpec("tflite", "int8", io="uint8", static_batch=1,
                                    float_scope=FloatScope(("conv2d_9",), head=True))
    assert entry.spec.file_name == old["path"]
    assert "io" not in entry.extra and "spec" in entry.to_dict() and "float_head" not in entry.to_dict()
    onnx = ArtifactEntry.from_dict({"path": "m.onnx", "format": "onnx", "precision": "int8", "size_bytes": 1,
                                    "sha256": "x", "opset": 17, "int8_scheme": "reduce-range"})
    assert onnx.spec == ExportSpec("onnx", "int8", opset=17, int8_scheme="reduce-range")
    keras = ArtifactEntry.from_dict({"path": "model.keras", "format": "keras", "precision": "fp32", "size_bytes": 1,
                                     "sha256": "x"})
    assert keras.spec is None


def test_app_preference_ranks_the_files_apps_embed():
    """The spec derives what report.md once hand-listed by file name; only files with a fixed batch are for apps
    (GPU delegates, LiteRT.js and MediaPipe's GPU path take static shapes only)."""
    specs = [ExportSpec("tflite", "int8", io="uint8", argmax=True, float_scope=HEAD, static_batch=1),
             ExportSpec("tflite", "int8", io="uint8", argmax=True, static_batch=1),
             ExportSpec("tflite", "int8", io="uint8", float_scope=HEAD, static_batch=1),
             ExportSpec("tflite", "int8", io="uint8", static_batch=1),
             ExportSpec("tflite", "int8", float_scope=HEAD, static_batch=1),
             ExportSpec("tflite", "int8", static_batch=1),
             ExportSpec("tflite", "fp16", static_batch=1),
             ExportSpec("tflite", "fp32", static_batch=1)]
    assert tuple(s.file_name for s in specs) == MOBILE_PREFERENCE
    assert sorted(reversed(specs), key=ExportSpec.app_preference) == specs
    assert all(s.embeds_in_apps for s in specs)
    assert not any(replace(s, static_batch=None).embeds_in_apps for s in specs)
    assert not ExportSpec("onnx", "int8").embeds_in_apps
    assert not ExportSpec("tflite", "int8", float_scope=FloatScope(("conv2d_3",)), static_batch=1).embeds_in_apps


def test_loose_inputs_are_refused_or_read_as_meant():
    with pytest.raises(UserError, match="--opset 5: expected 13 to 21"):
        ExportSpec("onnx", opset=5)
    assert FloatScope(layers="conv2d_3").layers == ("conv2d_3",)  # one name, not its characters
    with pytest.raises(ContractError, match="float_scope: expected an object"):
        ExportSpec.from_dict({"format": "onnx", "float_scope": []})
    entry = {"path": "m.tflite", "format": "tflite", "precision": "int8", "size_bytes": 1, "sha256": "x",
             "spec": ExportSpec("onnx", "int8").to_dict()}
    with pytest.raises(ContractError, match="says onnx int8, the entry tflite int8"):
        ArtifactEntry.from_dict(entry)
    old = {**entry, "spec": None, "io": "uint9"}
    with pytest.raises(ContractError, match=r"its fields \(format, precision, io\) do not describe"):
        ArtifactEntry.from_dict(old)


def test_files_apps_cannot_take_are_never_the_one_to_embed():
    for spec in (ExportSpec("tflite", "int8", io="int8", static_batch=1),  # MediaPipe takes no int8 input (no metadata)
                 ExportSpec("tflite", "int8", argmax=True, static_batch=1),  # a class map from float input
                 ExportSpec("tflite", "int8", io="uint8", metadata=False, static_batch=1),
                 ExportSpec("tflite", "int8", io="uint8", argmax=True)):  # dynamic batch: GPU delegates refuse it
        assert not spec.embeds_in_apps, spec.file_name


def test_backend_of_names_the_file_it_cannot_read():
    from exporter.export.formats import backend_of

    assert backend_of("a/b/unet_int8.onnx").format is ArtifactFormat.ONNX
    with pytest.raises(UserError, match=r"^run/model\.keras: not an exported artifact \(\.tflite, \.onnx\)$"):
        backend_of("run/model.keras")
