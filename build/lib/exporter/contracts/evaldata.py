"""Evaluation frames with labels and the Keras reference outputs: eval.npz, numpy only, no pickles."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from exporter.errors import UserError
from exporter.fileio import atomic_path

EVAL_FILE = "eval.npz"


@dataclass(frozen=True)
class EvalData:
    """images float32 N×H×W×3 in [0,1]; labels uint8 N×H×W; Keras reference logits and class map."""

    images: np.ndarray
    labels: np.ndarray
    reference_logits: np.ndarray
    reference_map: np.ndarray
    stems: np.ndarray

    @property
    def n_classes(self) -> int:
        return int(self.reference_logits.shape[-1])


def save_eval(path: str | Path, images: np.ndarray, labels: np.ndarray, reference_logits: np.ndarray,
              stems: list[str]) -> Path:
    """Write eval.npz atomically; logits stored as float32, so max |Δlogit| is not blurred by rounding."""
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez_compressed(
            tmp, images=images.astype(np.float32), labels=labels.astype(np.uint8),
            reference_logits=reference_logits.astype(np.float32),
            reference_map=np.argmax(reference_logits, axis=-1).astype(np.uint8), stems=np.array(stems, dtype=str))
    return Path(path)


def load_eval(path: str | Path) -> EvalData:
    """Read eval.npz with pickles refused; shapes checked against each other."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = EvalData(**{k: npz[k] for k in ("images", "labels", "reference_logits", "reference_map", "stems")})
    except FileNotFoundError:
        raise UserError(f"{path}: evaluation frames not found") from None
    except (KeyError, ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise UserError(f"{path}: not a valid evaluation file ({exc.__class__.__name__}: {exc})"[:300]) from None
    if data.labels.ndim != 3 or data.reference_logits.ndim != 4 or data.stems.ndim != 1 or len(data.labels) == 0 \
            or data.reference_logits.shape[-1] < 2:
        raise UserError(f"{path}: evaluation arrays have the wrong number of dimensions")
    n, h, w = data.labels.shape
    if data.images.shape != (n, h, w, 3) or data.reference_map.shape != (n, h, w) or \
            data.reference_logits.shape[:3] != (n, h, w) or len(data.stems) != n:
        raise UserError(f"{path}: evaluation arrays disagree in shape")
    if data.labels.dtype != np.uint8 or int(data.labels.max()) >= data.n_classes:
        raise UserError(f"{path}: labels are not class ids below {data.n_classes}")
    return data
