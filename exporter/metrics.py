"""Segmentation metrics, numpy only (device side): confusion matrix → accuracy, IoU, agreement.

Pixels whose label is the data's ignore value ("don't care", e.g. 255) are left out of every score, agreement and
max |Δ| included: drift is measured where the labels say something.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, n_classes: int) -> np.ndarray:
    """n_classes × n_classes counts; rows are labels, columns predictions."""
    labels = np.asarray(labels, dtype=np.int64).ravel()
    predictions = np.asarray(predictions, dtype=np.int64).ravel()
    if labels.shape != predictions.shape:
        raise ValueError(f"labels {labels.shape} and predictions {predictions.shape} differ in size")
    index = labels * n_classes + np.clip(predictions, 0, n_classes - 1)
    return np.bincount(index, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def iou_per_class(confusion: np.ndarray) -> np.ndarray:
    """IoU per class; NaN for a class absent from both labels and predictions."""
    true_pos = np.diag(confusion).astype(np.float64)
    union = confusion.sum(0) + confusion.sum(1) - true_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, true_pos / np.maximum(union, 1), np.nan)


def mean_iou(confusion: np.ndarray) -> float:
    """Mean IoU over the classes present in labels or predictions."""
    iou = iou_per_class(confusion)
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")


def pixel_accuracy(confusion: np.ndarray) -> float:
    """Fraction of pixels whose predicted class equals the label."""
    total = confusion.sum()
    return float(np.trace(confusion) / total) if total else float("nan")


def agreement(class_map_a: np.ndarray, class_map_b: np.ndarray, counted: np.ndarray | None = None) -> float:
    """Fraction of pixels (of those ``counted``, default all) where two class maps agree."""
    a, b = np.asarray(class_map_a), np.asarray(class_map_b)
    if a.shape != b.shape:
        raise ValueError(f"class maps {a.shape} and {b.shape} differ in shape")
    same = a == b if counted is None else (a == b)[counted]
    return float(np.mean(same)) if same.size else float("nan")


def max_abs_error(logits_a: np.ndarray, logits_b: np.ndarray, counted: np.ndarray | None = None) -> float:
    """Largest |a − b| over all elements (of the pixels ``counted``, default all): max |Δlogit|."""
    diff = np.abs(np.asarray(logits_a, np.float64) - np.asarray(logits_b, np.float64))
    diff = diff if counted is None else diff[counted]
    return float(np.max(diff)) if diff.size else float("nan")


def to_class_map(output: np.ndarray) -> np.ndarray:
    """Logits N×H×W×C → class map N×H×W; a class map (N×H×W or N×H×W×1) passes through."""
    output = np.asarray(output)
    if output.ndim == 4 and output.shape[-1] == 1:
        return output[..., 0].astype(np.int64)
    if output.ndim == 4:
        return np.argmax(output, axis=-1)
    return output.astype(np.int64)


@dataclass(frozen=True)
class SegmentationScores:
    """Scores of one prediction set against labels (and optionally a reference prediction)."""

    pixel_accuracy: float
    miou: float
    per_class_iou: list[float | None]
    agreement_vs_reference: float | None = None
    max_abs_logit_error: float | None = None

    def to_dict(self) -> dict:
        """JSON-ready dict (NaN per-class IoU becomes None)."""
        return asdict(self)


def score(
    labels: np.ndarray,
    output: np.ndarray,
    n_classes: int,
    reference: np.ndarray | None = None,
    ignore_index: int | None = None,
) -> SegmentationScores:
    """Score logits or a class map against labels, and against a reference output if given; pixels labelled
    ``ignore_index`` are left out."""
    labels = np.asarray(labels)
    predicted = to_class_map(output)
    counted = None if ignore_index is None else labels != ignore_index
    if counted is None:
        confusion = confusion_matrix(labels, predicted, n_classes)
    else:
        confusion = confusion_matrix(labels[counted], predicted[counted], n_classes)
    iou = iou_per_class(confusion)
    agree = max_err = None
    if reference is not None:
        agree = agreement(predicted, to_class_map(reference), counted)
        reference = np.asarray(reference)
        if np.asarray(output).ndim == 4 and output.shape[-1] > 1 and reference.shape == np.shape(output):
            max_err = max_abs_error(output, reference, counted)
    return SegmentationScores(
        pixel_accuracy=pixel_accuracy(confusion),
        miou=mean_iou(confusion),
        per_class_iou=[None if np.isnan(v) else float(v) for v in iou],
        agreement_vs_reference=agree,
        max_abs_logit_error=max_err,
    )
