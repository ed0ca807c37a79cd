"""Calibration frames: class-balanced, deterministic by seed, framework-neutral (one iterable of frames)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CalibrationSet:
    """Float32 frames N×H×W×3 in [0, 1] plus the coverage of the classes present in the source data."""

    frames: np.ndarray
    indices: tuple[int, ...]
    classes_in_data: tuple[int, ...]
    classes_covered: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.frames)

    def __iter__(self) -> Iterator[np.ndarray]:
        """One 1×H×W×3 frame at a time; the first carries exact 0 and 1 pixels to pin the input range."""
        for i, frame in enumerate(self.frames):
            sample = frame[None].astype(np.float32, copy=True)
            if i == 0:
                # Pin the calibrated input range to exactly [0, 1] so a uint8 input gets scale 1/255,
                # zero point 0, and camera bytes map straight in (two pixels of one frame; no effect elsewhere).
                sample[0, 0, 0, :] = 0.0
                sample[0, 0, 1, :] = 1.0
            yield sample

    def tflite_representative_dataset(self):
        """Adapter for ``TFLiteConverter.representative_dataset``."""

        def generator():
            for sample in self:
                yield [sample]

        return generator

    def onnx_reader(self, input_name: str):
        """Adapter for ONNX Runtime's ``CalibrationDataReader``."""
        from onnxruntime.quantization import CalibrationDataReader

        samples = iter(self)

        class Reader(CalibrationDataReader):
            def get_next(self):
                sample = next(samples, None)
                return None if sample is None else {input_name: sample}

        return Reader()

    @property
    def missing_classes(self) -> tuple[int, ...]:
        return tuple(sorted(set(self.classes_in_data) - set(self.classes_covered)))

    def summary(self) -> dict:
        """What the manifest records of it."""
        return {"samples": len(self), "classes_in_data": len(self.classes_in_data),
                "classes_covered": len(self.classes_covered)}


def balanced_pick(has_class: np.ndarray, count: int, seed: int = 0) -> tuple[list[int], list[int], list[int]]:
    """(chosen frames, classes in the data, classes the chosen cover) from an N × C "frame shows class"
    matrix — from masks in memory, or from the data check's histograms without loading a frame."""
    n = len(has_class)
    count = min(count, n)
    rng = np.random.default_rng(seed)
    classes = [int(c) for c in np.flatnonzero(has_class.any(0))]
    chosen: list[int] = []
    taken = np.zeros(n, dtype=bool)
    # Round-robin over classes from rarest to most common; each turn adds an unseen frame showing it.
    by_rarity = sorted(classes, key=lambda c: has_class[:, c].sum())
    while len(chosen) < count:
        added = False
        for c in by_rarity:
            candidates = np.flatnonzero(has_class[:, c] & ~taken)
            if len(candidates) == 0:
                continue
            pick = int(rng.choice(candidates))
            taken[pick] = True
            chosen.append(pick)
            added = True
            if len(chosen) == count:
                break
        if not added:
            break
    covered = [int(c) for c in np.flatnonzero(has_class[chosen].any(0))] if chosen else []
    return chosen, classes, covered
