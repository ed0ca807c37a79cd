"""Format tests written once, run for every export format through its backend (export/backend.py)."""

from __future__ import annotations

import pytest

from conftest import fp32_tolerance
from exporter.contracts.export_spec import ExportSpec, FloatScope
from exporter.drift import Budget
from exporter.errors import CheckFailed, UserError
from exporter.export.formats import backend_for
from exporter.export.layers import keras_layers
from exporter.parameters import ArtifactFormat

FORMATS = ArtifactFormat.values()


@pytest.fixture(scope="module")
def ctx(tiny_run, blocks_dir):
    from exporter.export.api import ExportContext

    return ExportContext.open(tiny_run / "model.keras", blocks_dir, validation_samples=10, log=None)


@pytest.mark.parametrize("fmt", FORMATS)
def test_fp32_is_the_keras_model_within_fp32_rounding_and_records_its_spec(ctx, tmp_path, fmt):
    result = ctx.export(ExportSpec(fmt), tmp_path / f"m.{fmt}")
    v = result.validation
    assert v.pixel_agreement >= 0.999 and v.max_abs_error <= fp32_tolerance(ctx.reference_logits), v
    entry = next(a for a in ctx.run.manifest().artifacts if a.path == result.entry.path)
    assert entry.spec == result.entry.spec and entry.spec.format.value == fmt and entry.format == fmt
    assert entry.sha256 == result.entry.sha256 and entry.validation == v


@pytest.mark.parametrize("fmt", FORMATS)
def test_int8_float_scope_keeps_exactly_the_layers_it_names_float(ctx, tmp_path, fmt):
    layers = keras_layers(ctx.model)
    first_conv = next(layer for layer in layers if layer.kind == "conv")
    scope = FloatScope((first_conv.name,), head=True)
    result = ctx.export(ExportSpec(fmt, "int8", float_scope=scope), tmp_path / f"m.{fmt}", calibration_samples=20)
    assert result.validation.pixel_agreement >= 0.9
    read = backend_for(fmt).read_layers(result.path, layers, ctx.validation.images[:1])
    float_convs = {layer.name for layer, precision in zip(layers, read.precisions, strict=True)
                   if layer.kind == "conv" and precision == "float"}
    head = max((layer for layer in layers if layer.kind == "conv"), key=lambda layer: layer.index)
    assert float_convs == {first_conv.name, head.name}
    assert all(o.shape[1:] == layer.shape for o, layer in zip(read.outputs, layers, strict=True))


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_float_scope_naming_no_convolution_is_refused(ctx, tmp_path, fmt):
    pool = next(layer.name for layer in keras_layers(ctx.model) if layer.kind == "pool")
    for name in (pool, "no_such_layer"):
        with pytest.raises(UserError, match=f"float layers: {name} not a convolution of the model"):
            ctx.export(ExportSpec(fmt, "int8", float_scope=FloatScope((name,))), tmp_path / f"m.{fmt}",
                       calibration_samples=20)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fmt", FORMATS)
def test_over_budget_raises_check_failed_and_writes_nothing(ctx, tmp_path, fmt):
    before = ctx.run.manifest()
    with pytest.raises(CheckFailed, match="pixel agreement .* < budget 1 \\(artifact not written\\)") as info:
        ctx.export(ExportSpec(fmt, "int8"), tmp_path / f"x.{fmt}", Budget(min_agreement=1.0), calibration_samples=20)
    name, precision, measured = info.value.measured
    assert name == f"x.{fmt}" and precision == "int8" and measured.pixel_agreement < 1.0
    assert list(tmp_path.iterdir()) == [] and ctx.run.manifest() == before
