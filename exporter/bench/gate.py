"""Judge bench rows against an accuracy budget: ``unet-bench run --max-miou-drop/--min-agreement`` exits 1.

Drift is measured from the Keras outputs stored with the evaluation frames (``BenchResult.reference``), so a
device without TensorFlow is judged the same way as the host; where a result file has no stored reference,
the Keras row stands in. Skipped rows (a runtime not installed) are not judged; a row that failed to run
cannot be within the budget.

Device side: the standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass

from exporter.budget import Budget
from exporter.contracts.bench_json import BenchResult, BenchRow, reference_row
from exporter.errors import CheckFailed

MAX_NAMED_ROWS = 8


def reference_miou(bench: BenchResult) -> float | None:
    """The mIoU drift is measured from: the stored Keras outputs', else the Keras row's."""
    if bench.reference_miou is not None:
        return bench.reference_miou
    keras = reference_row(bench.rows)
    return keras.score("miou") if keras is not None else None


def miou_drop_points(row: BenchRow, ref_miou: float | None) -> float | None:
    """How many mIoU points ``row`` lost against the reference (negative: it scored higher)."""
    miou = row.score("miou")
    return None if ref_miou is None or miou is None else 100.0 * (ref_miou - miou)


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


def judge(bench: BenchResult, budget: Budget) -> list[Verdict | None]:
    """A verdict for each row of ``bench`` (None for skipped rows), in row order."""
    ref = reference_miou(bench)
    verdicts: list[Verdict | None] = []
    for row in bench.rows:
        if row.status == "skipped":
            verdicts.append(None)
        elif not row.ok:
            verdicts.append(Verdict(row, None, ("failed to run",)))
        else:
            drop = miou_drop_points(row, ref)
            verdicts.append(Verdict(row, drop, tuple(budget.violations(drop, row.score("agreement_vs_reference")))))
    return verdicts


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


def beyond_export(row: BenchRow, rows: list[BenchRow] | tuple[BenchRow, ...] = (),
                  int8_dot_product: str | None = None) -> str | None:
    """A note when ``row`` drifts far beyond the export-time validation of the same file: then the runtime's
    kernels on this CPU are the cause, not the model (an int8 file that agreed 98.6% at export and 95% here).
    ``rows``: the run's other rows, to name a runtime that runs the same file as exported."""
    agreement = row.score("agreement_vs_reference")
    if not row.ok or row.export_agreement is None or agreement is None:
        return None
    here, there = 1.0 - agreement, 1.0 - row.export_agreement
    if here <= max(BEYOND_EXPORT_FACTOR * there, there + BEYOND_EXPORT_POINTS):
        return None
    fine = [r for r in rows if r.artifact == row.artifact and r.ok and r.runtime != row.runtime
            and beyond_export(r) is None and r.score("agreement_vs_reference") is not None]
    where = f" ({int8_dot_product} int8 dot product)" if int8_dot_product else ""
    note = (f"{row.artifact} on {row.runtime}/{row.device}: pixel agreement {agreement:.2%} here against "
            f"{row.export_agreement:.2%} when the file was exported: this runtime's kernels on this CPU{where}, "
            "not the model")
    if fine:
        note += f"; the same file on {fine[0].runtime}: {fine[0].score('agreement_vs_reference'):.2%}"
    return note
