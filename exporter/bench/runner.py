"""Plan and run a benchmark: one worker process per (artifact, runtime, device, threads)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from exporter.bench.environment import describe
from exporter.bench.tables import fmt_ms, fmt_num
from exporter.bench.worker import MARKER, Timing, WorkerJob
from exporter.contracts.bench_json import BenchResult, BenchRow
from exporter.contracts.checks import ContractError
from exporter.contracts.pack import BenchTarget, PackedArtifact
from exporter.errors import UserError
from exporter.runtimes.base import DEVICES


@dataclass(frozen=True)
class BenchSettings:
    """What to measure and how long: the options of ``unet-bench run`` (and the pipeline's bench stage)."""

    runtimes: tuple[str, ...] | None = None  # None: every runtime that reads the artifact's format
    devices: tuple[str, ...] = ("cpu",)
    threads: tuple[int, ...] | None = None  # None: every core (os.cpu_count(), recorded as such)
    batch_sizes: tuple[int, ...] = (1,)
    warmup: int = 3
    min_runs: int = 20
    min_seconds: float = 2.0
    timeout: float = 900.0  # seconds per worker process
    label: str | None = None

    def __post_init__(self) -> None:
        from exporter.runtimes import RUNTIMES, runtime_names
        from exporter.runtimes.base import expand_runtimes

        if self.runtimes:
            object.__setattr__(self, "runtimes", expand_runtimes(self.runtimes))
        unknown = [r for r in self.runtimes or () if r not in RUNTIMES]
        if unknown:
            raise UserError(f"unknown runtime(s) {', '.join(unknown)}; known: {', '.join(runtime_names())} "
                            "(web: every browser runtime)")
        bad = [d for d in self.devices if d not in DEVICES]
        if bad or not self.devices:
            raise UserError(f"--devices: unknown device(s) {', '.join(bad) or '(none)'} ({', '.join(DEVICES)})")
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes) or \
                (self.threads is not None and (not self.threads or any(t < 1 for t in self.threads))):
            raise UserError("--batch-sizes and --threads must be ≥ 1")
        if self.warmup < 0 or self.min_runs < 1 or self.min_seconds < 0 or self.timeout <= 0:
            raise UserError("--warmup ≥ 0, --min-runs ≥ 1, --min-seconds ≥ 0 and --timeout > 0")

    @property
    def timing(self) -> Timing:
        return Timing(self.warmup, self.min_runs, self.min_seconds)

    @property
    def thread_counts(self) -> tuple[int, ...]:
        return self.threads or (os.cpu_count() or 1,)


def plan(target: BenchTarget, runtimes: tuple[str, ...] | None = None) -> list[tuple[PackedArtifact, str]]:
    """(artifact, runtime) pairs: each artifact on every requested runtime (default: every registered one, in
    their default order) that reads its format."""
    from exporter.runtimes import runtimes_for

    return [(a, r) for a in target.artifacts for r in runtimes_for(a.entry.format, runtimes)]


def run_worker(job: WorkerJob, timeout: float) -> list[BenchRow] | str:
    """Run one worker process; its rows (checked against the contract), or the reason it produced none."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    try:
        proc = subprocess.run([sys.executable, "-m", "exporter.bench.worker"], input=json.dumps(job.to_dict()),
                              capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return f"timed out after {timeout:.0f}s"
    try:
        rows = [BenchRow.from_dict(json.loads(line[len(MARKER):]), "worker row")
                for line in proc.stdout.splitlines() if line.startswith(MARKER)]
    except (json.JSONDecodeError, ContractError) as exc:
        return f"worker wrote a malformed row ({exc})"[:300]
    if rows:
        return rows
    tail = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    return f"worker exited with code {proc.returncode}: {tail[-1][:300] if tail else 'no output'}"


def run_bench(target: BenchTarget, work_dir: str | Path, settings: BenchSettings | None = None,
              progress: Callable[[str], None] | None = None) -> BenchResult:
    """Measure every planned (artifact, runtime) on each device and thread count (default settings if None)."""
    from exporter.runtimes import RUNTIMES

    settings = settings or BenchSettings()
    progress = progress or (lambda message: None)
    work_dir = Path(work_dir)
    reference = reference_scores(target.eval_path)  # also checks the frames before minutes of measuring
    results: list[BenchRow] = []
    jobs = [(a, r, d, t) for a, r in plan(target, settings.runtimes) for d in settings.devices
            for t in settings.thread_counts]
    missing_runtimes = {r: RUNTIMES[r].available() for r in dict.fromkeys(job[1] for job in jobs)}
    for runtime, missing in missing_runtimes.items():
        if missing:  # one line per runtime not installed here, not one per artifact
            count = sum(1 for job in jobs if job[1] == runtime) * len(settings.batch_sizes)
            hint = f" ({RUNTIMES[runtime].install_hint()} to bench it)" if missing.endswith("not installed") else ""
            progress(f"{runtime}: {missing}, skipping its {count} row{'s' if count != 1 else ''}{hint}")
    for number, (artifact, runtime, device, n_threads) in enumerate(jobs, 1):
        where = f"[{number}/{len(jobs)}] {artifact.name} on {runtime}/{device}" + (
            f" threads={n_threads}" if n_threads else "")
        entry = artifact.entry
        identity = BenchRow(artifact=artifact.name, status="failed", format=entry.format, precision=entry.precision,
                            runtime=runtime, device=device, threads=n_threads, size_bytes=entry.size_bytes)
        missing = missing_runtimes[runtime]
        if missing:
            rows = [replace(identity, batch_size=b, status="skipped", reason=missing) for b in settings.batch_sizes]
        else:
            progress(f"{where} …")
            preview = work_dir / "previews" / f"{artifact.name}.{runtime}.{device}.{n_threads or 'default'}.npz"
            job = WorkerJob(artifact_path=str(artifact.file), identity=identity,
                            batch_sizes=settings.batch_sizes, timing=settings.timing,
                            eval_path=str(target.eval_path), preview_path=str(preview))
            outcome = run_worker(job, settings.timeout)
            if isinstance(outcome, str):
                rows = [replace(identity, batch_size=b, reason=outcome) for b in settings.batch_sizes]
            else:
                rows = outcome
        rows = [replace(r, preview_maps=f"previews/{r.preview_maps}") if r.preview_maps else r for r in rows]
        if entry.validation is not None:  # what the same file scored when it was exported, to compare with
            rows = [replace(r, export_agreement=entry.validation.pixel_agreement) for r in rows]
        results += rows
        if missing:  # said once above
            continue
        first = rows[0]
        if first.ok:
            progress(f"{where}: p50 {fmt_ms(first.p50)} ms, mIoU {fmt_num(first.score('miou'), 4)}, "
                     f"agreement {fmt_num(first.score('agreement_vs_reference'), 4)}")
        else:
            progress(f"{where}: {first.status} ({first.reason})")
    return BenchResult(environment=describe(settings.label), rows=tuple(results), labels=tuple(target.labels),
                       reference=reference)


def reference_scores(eval_path: Path) -> dict:
    """Scores of the Keras reference outputs stored with the evaluation frames: what drift is measured from.

    Lets a device without TensorFlow (no Keras row) still report each artifact's mIoU drop.
    """
    from exporter import metrics
    from exporter.contracts.evaldata import load_eval

    evaldata = load_eval(eval_path)
    scores = metrics.score(evaldata.labels, evaldata.reference_map, evaldata.n_classes,
                           ignore_index=evaldata.ignore_index)
    return {"source": "Keras outputs stored with the evaluation frames", "frames": int(len(evaldata.labels)),
            "pixel_accuracy": scores.pixel_accuracy, "miou": scores.miou, "per_class_iou": scores.per_class_iou}
