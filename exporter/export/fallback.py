"""``--auto-fallback``: int8 that meets a budget by keeping the layers that add the most error in float, or with
``--integer-only`` in int16 islands (their output tensors int16 from producer to readers; the file stays integer).

Quantize everything; while the budget is missed, keep one more *tensor* wider: of the ``candidates_per_step``
convolutions adding the most error in the last attempt (its quantization report) and the classifier head, the
one whose attempt agrees best with Keras. A tensor kept wider is its producer's output and its readers' input:
in float, the producer and the convolutions reading it directly are kept float together; with ``--integer-only``
(or ``--int16``), an int16 island spans them (``tflite_islands``, ``onnx_graph.island_tensors``). Each attempt
is printed (drop, agreement, size). The first one within
the budget is written and recorded with a ``FallbackRecord`` (layers kept float, why, every step), and its
latency is measured against the first attempt's (``ExportResult.fallback_latency_ms``); none within
``max_float_layers`` → CheckFailed with the best attempt's numbers, nothing written under the final name.

Host side.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from exporter import drift
from exporter.contracts.export_spec import ExportSpec, FloatScope
from exporter.contracts.manifest import FallbackRecord, FallbackStep, ValidationResult
from exporter.drift import NO_BUDGET, Budget
from exporter.errors import CheckFailed, UserError
from exporter.export.api import ExportContext, ExportResult
from exporter.fileio import check_writable
from exporter.parameters import CALIBRATION_SAMPLES, REPORT_FRAMES, Quantization


@dataclass(frozen=True)
class FallbackOptions:
    """How far the search goes and what it measures."""

    max_float_layers: int = 4
    report_frames: int = REPORT_FRAMES  # held-out frames each attempt's quantization report compares
    candidates_per_step: int = 3
    measure_latency: bool = True


def keeps_int16(spec: ExportSpec) -> bool:
    """Whether a search from ``spec`` keeps tensors in int16 islands (never float)."""
    return spec.integer_only or bool(spec.int16_layers)


class _Search:
    """The attempts of one search, each written to a scratch folder and validated."""

    def __init__(self, ctx: ExportContext, spec: ExportSpec, budget: Budget, calibration_samples: int,
                 scratch: Path) -> None:
        self.ctx, self.spec, self.budget = ctx, spec, budget
        self.calibration_samples, self.scratch = calibration_samples, scratch
        self.steps: list[FallbackStep] = []

    @property
    def integer(self) -> bool:
        return keeps_int16(self.spec)

    @property
    def wider(self) -> str:
        """What the chosen layers are kept in."""
        return "int16" if self.integer else "float"

    def kept(self, layers: list[str]) -> ExportSpec:
        """The spec with ``layers`` kept wider (float, or int16 islands)."""
        if self.integer:
            return replace(self.spec, int16_layers=tuple(layers))
        return replace(self.spec, float_scope=FloatScope(tuple(layers), self.spec.float_scope.head))

    def tensor(self, chosen: list[str], name: str) -> list[str]:
        """``chosen`` and the layers keeping ``name``'s output tensor wider. An int16 island spans the tensor's
        readers by itself (tflite_islands); float needs them named: a float layer's output is quantized again
        by an int8 reader, with the same damage."""
        if self.integer:
            return [*chosen, name]
        from exporter.export.layers import conv_readers

        return list(dict.fromkeys([*chosen, name, *conv_readers(self.ctx.model, name)]))

    def attempt(self, layers: list[str]) -> tuple[Path, ValidationResult]:
        """The spec with ``layers`` kept wider, converted and validated (not recorded)."""
        spec = self.kept(layers)
        path = self.scratch / f"{'_'.join(layers) or 'none'}.{spec.format.value}"
        self.ctx.write_unrecorded(spec, path, self.calibration_samples)
        return path, self.ctx.validate(path, f"{self.wider}: {', '.join(layers) or '(none)'}")

    def record(self, layers: list[str], path: Path, result: ValidationResult) -> bool:
        """Note the attempt as a step and print it; whether it is within the budget."""
        problems = drift.validation_problems(result, self.budget)
        size = path.stat().st_size
        self.steps.append(FallbackStep(tuple(layers), result.miou_drop_points, result.pixel_agreement, size,
                                       not problems))
        self.ctx.log(f"fallback step {len(self.steps)}: {self.wider} {', '.join(layers) or '(none)'}: mIoU drop "
                     f"{result.miou_drop_points:.2f} pt, agreement {result.pixel_agreement:.4f}, "
                     f"{size / 1e6:.2f} MB" + ("  → within the budget" if not problems else ""))
        return not problems

    def candidates(self, path: Path, chosen: list[str], frames: int, count: int) -> list[str]:
        """The convolutions adding the most error in this attempt (its quantization report), and the classifier
        head (its output step decides argmax ties), less those already float."""
        from exporter.export import quant_report

        model = self.ctx.model_for(self.spec, self.calibration_samples)
        rep = quant_report.report(model, path, self.ctx.validation.images[:frames])
        found = [layer.name for layer in rep.worst(count) if layer.name not in chosen]
        if rep.head.precision == "int8" and rep.head.name not in chosen + found:  # int16 islands count as wider
            found.append(rep.head.name)
        return found

    def best_step(self) -> FallbackStep:
        return max(self.steps, key=lambda step: (step.agreement, -step.miou_drop))

    def gave_up(self, final: Path, options: FallbackOptions, result: ValidationResult) -> CheckFailed:
        """The error when no attempt within ``options.max_float_layers`` met the budget: the best one's numbers."""
        best = self.best_step()
        return CheckFailed(
            f"{final.name}: no attempt within the budget ({self.budget.describe()}) keeping up to "
            f"{options.max_float_layers} layer(s) {self.wider}; best: {self.wider} "
            f"{', '.join(best.float_layers) or '(none)'}, mIoU drop {best.miou_drop:.2f} pt, agreement "
            f"{best.agreement:.4f} (nothing written)", measured=(final.name, "int8", result))


def export_with_fallback(ctx: ExportContext, spec: ExportSpec, out: str | Path | None = None,
                         budget: Budget = NO_BUDGET, calibration_samples: int = CALIBRATION_SAMPLES,
                         options: FallbackOptions = FallbackOptions()) -> ExportResult:
    """Int8 within ``budget`` by the search of the module docstring; the written artifact."""
    if spec.quantization is not Quantization.INT8:
        raise UserError("--auto-fallback needs --quantize int8")
    if not budget.is_set:
        raise UserError("--auto-fallback needs a budget: --max-miou-drop and/or --min-agreement")
    integer = keeps_int16(spec)
    final = check_writable(Path(out) if out else ctx.run.path / spec.file_name_with("autoint16" if integer
                                                                                     else "autofallback"))
    with tempfile.TemporaryDirectory(prefix="unet-export-fallback-") as tmp:
        search = _Search(ctx, spec, budget, calibration_samples, Path(tmp))
        chosen = list(spec.int16_layers if integer else spec.float_scope.layers)
        given = len(chosen)
        path, result = search.attempt(chosen)
        first = path
        while not search.record(chosen, path, result):
            if len(chosen) - given >= options.max_float_layers:
                raise search.gave_up(final, options, result)
            candidates = search.candidates(path, chosen, options.report_frames, options.candidates_per_step)
            if not candidates:
                raise CheckFailed(f"{final.name}: every convolution is {search.wider} already and the budget "
                                  f"({budget.describe()}) is still missed (nothing written)",
                                  measured=(final.name, "int8", result))
            fitting = [name for name in candidates
                       if len(search.tensor(chosen, name)) - given <= options.max_float_layers]
            if not fitting:  # each candidate tensor would take more layers than --max-float-layers allows
                raise search.gave_up(final, options, result)
            trials = [(name, *search.attempt(search.tensor(chosen, name))) for name in fitting]
            name, path, result = max(trials, key=lambda t: (t[2].pixel_agreement, -t[2].miou_drop_points))
            chosen = search.tensor(chosen, name)
        how = "in int16 islands (each tensor from its producer to its readers)" if integer else "float"
        reason = (f"kept {how} one at a time, each the best of the most error-adding layers, until "
                  f"{budget.describe()} was met on {ctx.validation.images.shape[0]} held-out frames")
        written = ctx.export(search.kept(chosen), final, budget, calibration_samples,
                             fallback=FallbackRecord(tuple(chosen), reason, tuple(search.steps), search.wider))
        # the cost of the layers kept float, against the first attempt still on disk (no second conversion)
        latency = (ctx.latency_ms(first), ctx.latency_ms(written.path)) if options.measure_latency else None
    return replace(written, fallback_latency_ms=latency)
