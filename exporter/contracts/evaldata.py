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
    ignore_index: int | None = None  # the label value left out of every score (None: all pixels count)

    @property
    def n_classes(self) -> int:
        return int(self.reference_logits.shape[-1])


def save_eval(path: str | Path, images: np.ndarray, labels: np.ndarray, reference_logits: np.ndarray,
              stems: list[str], ignore_index: int | None = None) -> Path:
    """Write eval.npz atomically; logits stored as float32, so max |Δlogit| is not blurred by rounding."""
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez_compressed(
            tmp, images=images.astype(np.float32), labels=labels.astype(np.uint8),
            reference_logits=reference_logits.astype(np.float32),
            reference_map=np.argmax(reference_logits, axis=-1).astype(np.uint8), stems=np.array(stems, dtype=str),
            ignore_index=np.array(-1 if ignore_index is None else ignore_index, dtype=np.int16))
    return Path(path)


def load_eval(path: str | Path) -> EvalData:
    """Read eval.npz with pickles refused; shapes checked against each other."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = EvalData(**{k: npz[k] for k in ("images", "labels", "reference_logits", "reference_map", "stems")},
                            ignore_index=_ignore_index(npz))
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
    counted = data.labels if data.ignore_index is None else data.labels[data.labels != data.ignore_index]
    if data.labels.dtype != np.uint8 or int(counted.max(initial=0)) >= data.n_classes:
        raise UserError(f"{path}: labels are not class ids below {data.n_classes}")
    return data


def _ignore_index(npz) -> int | None:
    """The stored ignore value (-1 or absent, as in files written before it existed: none)."""
    if "ignore_index" not in npz.files:
        return None
    value = npz["ignore_index"]
    if value.shape != () or value.dtype.kind not in "iu" or not -1 <= int(value) <= 255:
        raise ValueError("ignore_index is not one mask value")
    return None if int(value) < 0 else int(value)
