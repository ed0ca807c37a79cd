"""Timing: warm-up, then at least ``min_runs`` and at least ``min_seconds`` (both floors); raw samples kept.

Statistics are derived from the samples by ``exporter.contracts.bench_json.Latency.from_values``.
"""

from __future__ import annotations

import time
from collections.abc import Callable


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
