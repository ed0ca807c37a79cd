"""``--auto-fallback``: int8 that meets a budget by keeping the layers that add the most error in float.

Quantize everything; while the budget is missed, keep one more layer float: of the ``candidates_per_step``
convolutions adding the most error in the last attempt (its quantization report) and the classifier head, the
one whose attempt agrees best with Keras. Each attempt is printed (drop, agreement, size). The first one within
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


class _Search:
    """The attempts of one search, each written to a scratch folder and validated."""

    def __init__(self, ctx: ExportContext, spec: ExportSpec, budget: Budget, calibration_samples: int,
                 scratch: Path) -> None:
        self.ctx, self.spec, self.budget = ctx, spec, budget
        self.calibration_samples, self.scratch = calibration_samples, scratch
        self.steps: list[FallbackStep] = []

    def attempt(self, layers: list[str]) -> tuple[Path, ValidationResult]:
        """The spec with ``layers`` float, converted and validated (not recorded)."""
        spec = replace(self.spec, float_scope=FloatScope(tuple(layers), self.spec.float_scope.head))
        path = self.scratch / f"{'_'.join(layers) or 'none'}.{spec.format.value}"
        self.ctx.write_unrecorded(spec, path, self.calibration_samples)
        return path, self.ctx.validate(path, f"float: {', '.join(layers) or '(none)'}")

    def record(self, layers: list[str], path: Path, result: ValidationResult) -> bool:
        """Note the attempt as a step and print it; whether it is within the budget."""
        problems = drift.validation_problems(result, self.budget)
        size = path.stat().st_size
        self.steps.append(FallbackStep(tuple(layers), result.miou_drop_points, result.pixel_agreement, size,
                                       not problems))
        self.ctx.log(f"fallback step {len(self.steps)}: float {', '.join(layers) or '(none)'}: mIoU drop "
                     f"{result.miou_drop_points:.2f} pt, agreement {result.pixel_agreement:.4f}, "
                     f"{size / 1e6:.2f} MB" + ("  → within the budget" if not problems else ""))
        return not problems

    def candidates(self, path: Path, chosen: list[str], frames: int, count: int) -> list[str]:
        """The convolutions adding the most error in this attempt (its quantization report), and the classifier
        head (its output step decides argmax ties), less those already float."""
        from exporter.export import quant_report

        rep = quant_report.report(self.ctx.model, path, self.ctx.validation.images[:frames])
        found = [layer.name for layer in rep.worst(count) if layer.name not in chosen]
        if rep.head.precision == "int8" and rep.head.name not in chosen + found:
            found.append(rep.head.name)
        return found

    def best_step(self) -> FallbackStep:
        return max(self.steps, key=lambda step: (step.agreement, -step.miou_drop))


def export_with_fallback(ctx: ExportContext, spec: ExportSpec, out: str | Path | None = None,
                         budget: Budget = NO_BUDGET, calibration_samples: int = CALIBRATION_SAMPLES,
                         options: FallbackOptions = FallbackOptions()) -> ExportResult:
    """Int8 within ``budget`` by the search of the module docstring; the written artifact."""
    if spec.quantization is not Quantization.INT8:
        raise UserError("--auto-fallback needs --quantize int8")
    if not budget.is_set:
        raise UserError("--auto-fallback needs a budget: --max-miou-drop and/or --min-agreement")
    final = check_writable(Path(out) if out else ctx.run.path / spec.file_name_with("autofallback"))
    with tempfile.TemporaryDirectory(prefix="unet-export-fallback-") as tmp:
        search = _Search(ctx, spec, budget, calibration_samples, Path(tmp))
        chosen = list(spec.float_scope.layers)
        path, result = search.attempt(chosen)
        first = path
        while not search.record(chosen, path, result):
            if len(chosen) - len(spec.float_scope.layers) >= options.max_float_layers:
                best = search.best_step()
                raise CheckFailed(
                    f"{final.name}: no attempt within the budget ({budget.describe()}) keeping up to "
                    f"{options.max_float_layers} layer(s) float; best: float "
                    f"{', '.join(best.float_layers) or '(none)'}, mIoU drop {best.miou_drop:.2f} pt, agreement "
                    f"{best.agreement:.4f} (nothing written)", measured=(final.name, "int8", result))
            candidates = search.candidates(path, chosen, options.report_frames, options.candidates_per_step)
            if not candidates:
                raise CheckFailed(f"{final.name}: every convolution is float already and the budget "
                                  f"({budget.describe()}) is still missed (nothing written)",
                                  measured=(final.name, "int8", result))
            trials = [(name, *search.attempt([*chosen, name])) for name in candidates]
            name, path, result = max(trials, key=lambda t: (t[2].pixel_agreement, -t[2].miou_drop_points))
            chosen.append(name)
        reason = (f"kept float one at a time, each the best of the most error-adding layers, until "
                  f"{budget.describe()} was met on {ctx.validation.images.shape[0]} held-out frames")
        kept = replace(spec, float_scope=FloatScope(tuple(chosen), spec.float_scope.head))
        written = ctx.export(kept, final, budget, calibration_samples,
                             fallback=FallbackRecord(tuple(chosen), reason, tuple(search.steps)))
        # the cost of the layers kept float, against the first attempt still on disk (no second conversion)
        latency = (ctx.latency_ms(first), ctx.latency_ms(written.path)) if options.measure_latency else None
    return replace(written, fallback_latency_ms=latency)
