"""Validate an artifact against the Keras model: agreement, mIoU of both, max |Δlogit|; the drift gate."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from exporter import metrics
from exporter.errors import CheckFailed


@dataclass(frozen=True)
class ValidationResult:
    """How an artifact's outputs compare with the Keras model's on held-out frames."""

    pixel_agreement: float
    miou: float
    miou_reference: float
    max_abs_error: float | None
    samples: int
    pixel_accuracy: float
    pixel_accuracy_reference: float

    @property
    def miou_drop_points(self) -> float:
        """Keras mIoU minus the artifact's, in points (percentage points of IoU)."""
        return 100.0 * (self.miou_reference - self.miou)

    def to_dict(self) -> dict:
        return {**asdict(self), "miou_drop_points": self.miou_drop_points}


def compare_outputs(output: np.ndarray, reference_logits: np.ndarray, labels: np.ndarray,
                    n_classes: int) -> ValidationResult:
    """Score an artifact's output (logits or class map) and the reference logits against labels."""
    ours = metrics.score(labels, output, n_classes, reference=reference_logits)
    ref = metrics.score(labels, reference_logits, n_classes)
    return ValidationResult(
        pixel_agreement=ours.agreement_vs_reference,
        miou=ours.miou,
        miou_reference=ref.miou,
        max_abs_error=ours.max_abs_logit_error,
        samples=int(len(labels)),
        pixel_accuracy=ours.pixel_accuracy,
        pixel_accuracy_reference=ref.pixel_accuracy,
    )


def run_artifact(path, runtime_name: str, images: np.ndarray, batch_size: int = 8) -> np.ndarray:
    """Run an artifact on float frames with a runtime adapter, batch by batch."""
    from exporter.runtimes import get_runtime

    runtime = get_runtime(runtime_name)
    runtime.load(path, device="cpu")
    return np.concatenate([runtime.predict(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])


def budget_violations(result: ValidationResult, max_miou_drop: float | None,
                      min_agreement: float | None) -> list[str]:
    """What exceeds the drift budget (empty if within it or no budget is set)."""
    problems = []
    if max_miou_drop is not None and result.miou_drop_points > max_miou_drop:
        problems.append(f"mIoU drop {result.miou_drop_points:.2f} points > budget {max_miou_drop:g}")
    if min_agreement is not None and result.pixel_agreement < min_agreement:
        problems.append(f"pixel agreement {result.pixel_agreement:.4f} < budget {min_agreement:g}")
    return problems


def enforce_budget(name: str, result: ValidationResult, max_miou_drop: float | None,
                   min_agreement: float | None) -> None:
    """Raise CheckFailed naming the artifact and every budget it exceeds."""
    problems = budget_violations(result, max_miou_drop, min_agreement)
    if problems:
        raise CheckFailed(f"{name}: " + "; ".join(problems) + " (artifact not written)")


def format_table(rows: list[tuple[str, str, ValidationResult]]) -> str:
    """A short text table: artifact, precision, agreement, mIoU, Keras mIoU, drop, max |Δlogit|, samples."""
    header = f"{'artifact':<34} {'precision':<9} {'agree':>7} {'mIoU':>7} {'keras':>7} {'drop pt':>8} " \
             f"{'max|Δlogit|':>11} {'n':>4}"
    lines = [header, "-" * len(header)]
    for name, precision, r in rows:
        err = "-" if r.max_abs_error is None else f"{r.max_abs_error:.4f}"
        lines.append(f"{name:<34} {precision:<9} {r.pixel_agreement:>7.4f} {r.miou:>7.4f} {r.miou_reference:>7.4f} "
                     f"{r.miou_drop_points:>8.2f} {err:>11} {r.samples:>4}")
    return "\n".join(lines)
