"""Validate an artifact against the Keras model: agreement, mIoU of both, max |Δlogit|."""

from __future__ import annotations

import numpy as np

from exporter import metrics
from exporter.contracts.manifest import ValidationResult
from exporter.text_table import align


def compare_outputs(output: np.ndarray, reference_logits: np.ndarray, labels: np.ndarray,
                    n_classes: int, ignore_index: int | None = None) -> ValidationResult:
    """Score an artifact's output (logits or class map) and the reference logits against labels (pixels labelled
    ``ignore_index`` left out)."""
    ours = metrics.score(labels, output, n_classes, reference=reference_logits, ignore_index=ignore_index)
    ref = metrics.score(labels, reference_logits, n_classes, ignore_index=ignore_index)
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
    from exporter.runtimes.base import predict_in_batches

    runtime = get_runtime(runtime_name)
    runtime.load(path, device="cpu")
    return predict_in_batches(runtime.predict, images, batch_size)


TABLE_HEADERS = ("artifact", "precision", "agree", "mIoU", "keras", "drop pt", "max|Δlogit|", "n")


def format_table(rows: list[tuple[str, str, ValidationResult]]) -> str:
    """A short text table: artifact, precision, agreement, mIoU, Keras mIoU, drop, max |Δlogit|, samples."""
    cells = [[name, precision, f"{r.pixel_agreement:.4f}", f"{r.miou:.4f}", f"{r.miou_reference:.4f}",
              f"{r.miou_drop_points:.2f}", "-" if r.max_abs_error is None else f"{r.max_abs_error:.4f}",
              str(r.samples)] for name, precision, r in rows]
    return align(TABLE_HEADERS, cells, set(TABLE_HEADERS[2:]))
