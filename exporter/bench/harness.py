"""Timing: warm-up, then at least ``min_runs`` and at least ``min_seconds`` (both floors); raw samples kept."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Latency:
    """Statistics of raw latency samples, in milliseconds."""

    p50: float
    p90: float
    p99: float
    mean: float
    std: float
    min: float
    max: float
    n: int

    @classmethod
    def from_values(cls, samples_ms: list[float] | np.ndarray) -> Latency:
        values = np.asarray(samples_ms, dtype=np.float64)
        if values.size == 0:
            raise ValueError("no latency samples")
        p50, p90, p99 = np.percentile(values, [50, 90, 99])
        return cls(float(p50), float(p90), float(p99), float(values.mean()), float(values.std()),
                   float(values.min()), float(values.max()), int(values.size))

    def to_dict(self) -> dict:
        return asdict(self)


def time_calls(call: Callable[[], object], warmup: int = 3, min_runs: int = 20, min_seconds: float = 2.0,
               max_runs: int = 100_000, clock: Callable[[], float] = time.perf_counter) -> list[float]:
    """Run ``call`` ``warmup`` times untimed, then time each call until both floors are met; ms samples."""
    for _ in range(warmup):
        call()
    samples: list[float] = []
    started = clock()
    while len(samples) < max_runs and (len(samples) < min_runs or clock() - started < min_seconds):
        t0 = clock()
        call()
        samples.append((clock() - t0) * 1000.0)
    return samples
