"""One rule for drift: what an artifact is compared with, how much it lost, and whether that is within budget.

Every judge uses this module: the export gate (``tflite``/``onnx --max-miou-drop/--min-agreement``), the bench
gate (``unet-bench run`` with the same flags), the pipeline's flags, ``report.md`` and the plots' Keras line.

- **The reference.** At export: the Keras model on the held-out frames (``ValidationResult``). On a bench
  result: the Keras model's outputs stored with the evaluation frames (``BenchResult.reference``), which every
  row's agreement is measured against too, so a device without TensorFlow is judged as the host is; only a
  result file without them (written by an older version) falls back on its Keras row (``reference_row``).
- **The drop.** Reference mIoU minus the row's, in points (``miou_drop_points``).
- **Within budget.** ``Budget``: the drop at most ``max_miou_drop`` and the pixel agreement at least
  ``min_agreement``. Skipped rows (a runtime not installed) are not judged; a row that failed to run is
  never within a budget.
- **Beyond its export.** A row whose agreement is far below what the same file scored when it was exported
  (``beyond_export``): the runtime's kernels on this CPU, not the model.

Standard library only; bench rows and results are read by their attributes (``exporter.contracts.bench_json``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from exporter.errors import CheckFailed

if TYPE_CHECKING:  # pragma: no cover
    from exporter.contracts.bench_json import BenchResult, BenchRow
    from exporter.contracts.manifest import ValidationResult


@dataclass(frozen=True)
class Budget:
    """How much drift is acceptable: mIoU drop in points, pixel agreement as a fraction; None = no limit."""

    max_miou_drop: float | None = None
    min_agreement: float | None = None

    @property
    def is_set(self) -> bool:
        return self.max_miou_drop is not None or self.min_agreement is not None

    def miou_drop_ok(self, miou_drop_points: float | None) -> bool:
        if self.max_miou_drop is None:
            return True
        return miou_drop_points is not None and miou_drop_points <= self.max_miou_drop

    def agreement_ok(self, agreement: float | None) -> bool:
        if self.min_agreement is None:
            return True
        return agreement is not None and agreement >= self.min_agreement

    def miou_floor(self, reference_miou: float | None) -> float | None:
        """The lowest mIoU within the budget: ``max_miou_drop`` points below the reference (None: no limit)."""
        if self.max_miou_drop is None or reference_miou is None:
            return None
        return reference_miou - self.max_miou_drop / 100.0

    def violations(self, miou_drop_points: float | None, agreement: float | None) -> list[str]:
        """What exceeds the budget, in words (empty if within it)."""
        problems = []
        if not self.miou_drop_ok(miou_drop_points):
            measured = "not measured" if miou_drop_points is None else f"{miou_drop_points:.2f} points"
            problems.append(f"mIoU drop {measured} > budget {self.max_miou_drop:g}")
        if not self.agreement_ok(agreement):
            measured = "not measured" if agreement is None else f"{agreement:.4f}"
            problems.append(f"pixel agreement {measured} < budget {self.min_agreement:g}")
        return problems

    def describe(self) -> str:
        parts = []
        if self.max_miou_drop is not None:
            parts.append(f"mIoU drop ≤ {self.max_miou_drop:g} point{'s' if self.max_miou_drop != 1 else ''}")
        if self.min_agreement is not None:
            parts.append(f"pixel agreement ≥ {self.min_agreement:.0%}")
        return ", ".join(parts) + " vs Keras" if parts else "no accuracy budget"


NO_BUDGET = Budget()
DEMO_BUDGET = Budget(max_miou_drop=1.0, min_agreement=0.98)


def miou_drop_points(miou: float | None, reference_miou: float | None) -> float | None:
    """How many mIoU points were lost against the reference (negative: it scored higher); None if unmeasured."""
    return None if miou is None or reference_miou is None else 100.0 * (reference_miou - miou)


def validation_problems(result: ValidationResult, budget: Budget) -> list[str]:
    """The export gate: what of an export's validation (against Keras on the held-out frames) exceeds ``budget``."""
    return budget.violations(result.miou_drop_points, result.pixel_agreement)


def reference_row(rows: Iterable[BenchRow]) -> BenchRow | None:
    """The Keras row of a bench run: the first ok Keras fp32 row, else the first ok Keras row."""
    keras = [r for r in rows if r.ok and r.format == "keras"]
    return next((r for r in keras if r.precision == "fp32"), keras[0] if keras else None)


@dataclass(frozen=True)
class Reference:
    """What a bench result's drift is measured from."""

    miou: float | None
    source: str
    row: BenchRow | None = None  # the run's Keras row, where it has one (its class maps, its per-class IoU)


def reference_of(bench: BenchResult) -> Reference:
    """The stored Keras outputs' scores; for a result file without them, its Keras row's."""
    row = reference_row(bench.rows)
    if bench.reference_miou is not None:
        frames = (bench.reference or {}).get("frames", "?")
        return Reference(bench.reference_miou, f"Keras outputs stored with the {frames} evaluation frames", row)
    if row is not None:
        return Reference(row.score("miou"), f"{row.artifact} on {row.runtime}/{row.device}", row)
    return Reference(None, "no Keras reference in this result")


@dataclass(frozen=True)
class Verdict:
    """One judged row: its mIoU drop and what (if anything) exceeds the budget."""

    row: BenchRow
    miou_drop: float | None
    problems: tuple[str, ...]

    @property
    def within(self) -> bool:
        return not self.problems

    @property
    def where(self) -> str:
        text = f"{self.row.artifact} on {self.row.runtime}/{self.row.device}"
        if self.row.threads is not None or self.row.batch_size is not None:
            text += f" ({self.row.threads or '-'}t×{self.row.batch_size or '-'}b)"
        return text


def judge_row(row: BenchRow, reference: Reference, budget: Budget) -> Verdict | None:
    """The verdict on one row (None for a skipped row: nothing ran to judge)."""
    if row.status == "skipped":
        return None
    if not row.ok:
        return Verdict(row, None, ("failed to run",))
    drop = miou_drop_points(row.score("miou"), reference.miou)
    return Verdict(row, drop, tuple(budget.violations(drop, row.score("agreement_vs_reference"))))


def judge(bench: BenchResult, budget: Budget) -> list[Verdict | None]:
    """A verdict for each row of ``bench`` (None for skipped rows), in row order."""
    reference = reference_of(bench)
    return [judge_row(row, reference, budget) for row in bench.rows]


MAX_NAMED_ROWS = 8


def check(bench: BenchResult, budget: Budget) -> None:
    """Raise ``CheckFailed`` (exit 1) naming the rows over ``budget``; nothing when every judged row is within."""
    if not budget.is_set:
        return
    judged = [v for v in judge(bench, budget) if v is not None]
    over = [v for v in judged if not v.within]
    if not over:
        return
    named = "; ".join(f"{v.where}: {', '.join(v.problems)}" for v in over[:MAX_NAMED_ROWS])
    more = f"; and {len(over) - MAX_NAMED_ROWS} more" if len(over) > MAX_NAMED_ROWS else ""
    raise CheckFailed(f"{len(over)} of {len(judged)} rows outside the budget ({budget.describe()}): {named}{more}",
                      measured=over)


BEYOND_EXPORT_FACTOR = 3.0   # a row disagreeing with Keras this many times more than at export...
BEYOND_EXPORT_POINTS = 0.01  # ...and by at least this much more, is flagged


def beyond_export(row: BenchRow, rows: Sequence[BenchRow] = (), cpu: str | None = None) -> str | None:
    """A note when ``row`` drifts far beyond the export-time validation of the same file: then the runtime's
    kernels on this CPU are the cause, not the model (an int8 file that agreed 98.6% at export and 95% here).
    ``rows``: the run's other rows, to name a runtime that runs the same file as exported; ``cpu``: the CPU and
    its int8 dot product ('Cortex-A72, neon int8 dot product'), named as the cause."""
    agreement = row.score("agreement_vs_reference")
    if not row.ok or row.export_agreement is None or agreement is None:
        return None
    here, there = 1.0 - agreement, 1.0 - row.export_agreement
    if here <= max(BEYOND_EXPORT_FACTOR * there, there + BEYOND_EXPORT_POINTS):
        return None
    fine = [r for r in rows if r.artifact == row.artifact and r.ok and r.runtime != row.runtime
            and beyond_export(r) is None and r.score("agreement_vs_reference") is not None]
    where = f" ({cpu})" if cpu else ""
    cause = f"this runtime's kernels on this CPU{where}"
    if row.browser:  # a web row: the runtime's backend in that browser (a silent wrong answer, not an error)
        backend = row.browser.get("backend") or (row.providers or ("?",))[0]
        software = " on SwiftShader (software)" if row.browser.get("software_rasterizer") and row.device == "gpu" else ""
        cause = f"{backend} in {row.browser.get('version') or row.browser.get('name')}{software}, with no error"
    note = (f"{row.artifact} on {row.runtime}/{row.device}: pixel agreement {agreement:.2%} here against "
            f"{row.export_agreement:.2%} when the file was exported: {cause}, not the model")
    if fine:
        note += f"; the same file on {fine[0].runtime}: {fine[0].score('agreement_vs_reference'):.2%}"
    return note
