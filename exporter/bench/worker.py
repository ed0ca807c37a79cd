"""One benchmark process: load one artifact in one runtime on one device, time it, score it.

Run as ``python -m exporter.bench.worker`` with a ``WorkerJob`` as JSON on stdin; prints one result line per batch size
after a marker, so that each runtime's threads and memory live and die in their own process.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from exporter import metrics
from exporter.contracts.bench_json import BenchRow, Latency
from exporter.contracts.evaldata import load_eval
from exporter.runtimes.base import predict_in_batches

MARKER = "UNET_BENCH_RESULT "


def peak_rss_mb() -> float:
    """Peak resident set size of this process, in MB.

    Linux: VmHWM of /proc/self/status, the high-water mark of this program's own memory. ``ru_maxrss`` is
    not used there: it keeps the parent's resident size from before exec (a worker started by a 4.6 GB
    pipeline process reported 4.6 GB). Elsewhere ``ru_maxrss`` (macOS reports bytes, others KiB).
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _ran_as(info: dict) -> str | None:
    """The precision the runtime ran; OpenVINO's hint covers only what is not already quantized."""
    precision = info.get("precision")
    return f"int8 + {precision}" if info.get("quantized_graph") and precision else precision


@dataclass(frozen=True)
class Timing:
    """How long to measure: untimed warm-up calls, then both floors (runs and seconds)."""

    warmup: int
    min_runs: int
    min_seconds: float


@dataclass(frozen=True)
class WorkerJob:
    """One worker's job, sent as JSON on stdin: the artifact on one runtime, device and thread count
    (``identity``: the row every result starts from), at each batch size."""

    artifact_path: str
    identity: BenchRow
    batch_sizes: tuple[int, ...]
    timing: Timing
    eval_path: str
    preview_path: str | None = None
    preview_frames: int = 3

    def to_dict(self) -> dict:
        return {**asdict(self), "identity": self.identity.to_dict()}

    def every_batch(self, status: str, reason: str | None = None) -> list[BenchRow]:
        """One row per batch size saying why nothing was measured."""
        return [replace(self.identity, batch_size=b, status=status, reason=reason) for b in self.batch_sizes]

    @classmethod
    def from_dict(cls, data: dict) -> WorkerJob:
        return cls(**{**data, "identity": BenchRow.from_dict(data["identity"], "job identity"),
                      "batch_sizes": tuple(data["batch_sizes"]), "timing": Timing(**data["timing"])})


def _load(job: WorkerJob, runtime, evaldata) -> float | list[BenchRow]:
    """Cold start ms (load + first inference), or the rows that say why it did not run."""
    from exporter.runtimes.base import ModelLoadError, RuntimeUnavailable

    started = time.perf_counter()
    try:
        runtime.load(job.artifact_path, device=job.identity.device, threads=job.identity.threads)
        runtime.predict(evaldata.images[:1])
    except RuntimeUnavailable as exc:
        return job.every_batch("skipped", str(exc))
    except ModelLoadError as exc:
        return job.every_batch("failed", str(exc))
    except Exception as exc:  # a runtime that loads but cannot run the model: report it, go on
        first_line = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        return job.every_batch("failed", f"{exc.__class__.__name__}: {first_line}")
    return (time.perf_counter() - started) * 1000.0


def _scores(job: WorkerJob, runtime, evaldata) -> tuple[metrics.SegmentationScores, str | None]:
    """Accuracy on the evaluation frames against the stored Keras outputs; the preview maps' file name."""
    outputs = predict_in_batches(runtime.predict, evaldata.images)
    reference = evaldata.reference_logits.astype(np.float32)
    scores = metrics.score(evaldata.labels, outputs, evaldata.n_classes, reference=reference,
                           ignore_index=evaldata.ignore_index)
    class_map = metrics.to_class_map(outputs)
    counted = None if evaldata.ignore_index is None else evaldata.labels != evaldata.ignore_index
    scores = replace(scores, agreement_vs_reference=metrics.agreement(class_map, evaldata.reference_map, counted))
    if not job.preview_path:
        return scores, None
    preview = Path(job.preview_path)
    preview.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(preview, maps=class_map[: job.preview_frames].astype(np.uint8))
    return scores, preview.name


def run(job: WorkerJob) -> list[BenchRow]:
    """Measure one (artifact, runtime, device, threads) for each batch size of the job."""
    from exporter.runtimes import get_runtime

    try:
        runtime = get_runtime(job.identity.runtime)
    except ValueError as exc:
        return job.every_batch("failed", str(exc))
    job = replace(job, identity=replace(job.identity, runtime_version=runtime.version()))
    evaldata = load_eval(job.eval_path)
    cold_start_ms = _load(job, runtime, evaldata)
    if isinstance(cold_start_ms, list):
        return cold_start_ms
    info = runtime.info()
    scores, preview = _scores(job, runtime, evaldata)
    base = replace(job.identity, cold_start_ms=cold_start_ms, accuracy=scores,
                   providers=tuple(info.get("providers") or ()), inference_precision=_ran_as(info),
                   preview_maps=preview, fully_accelerated=info.get("fully_accelerated"),
                   cpu_fallback_nodes=info.get("cpu_fallback_nodes"), browser=info.get("browser"))
    rows = []
    for batch_size in job.batch_sizes:
        batch = np.resize(evaldata.images, (batch_size, *evaldata.images.shape[1:]))
        try:
            samples = runtime.time_calls(batch, warmup=job.timing.warmup, min_runs=job.timing.min_runs,
                                         min_seconds=job.timing.min_seconds)
        except Exception as exc:  # e.g. a model that cannot be resized to this batch
            rows.append(replace(job.identity, batch_size=batch_size, status="failed",
                                reason=f"batch {batch_size}: {exc.__class__.__name__}: {exc}"[:300]))
            continue
        rows.append(replace(base, batch_size=batch_size, status="ok", latency=Latency.from_values(samples),
                            latency_samples_ms=tuple(round(s, 4) for s in samples),
                            throughput_fps=batch_size * len(samples) / (sum(samples) / 1000.0)))
    peak = peak_rss_mb() if runtime.in_process else runtime.peak_memory_mb()
    return [replace(row, peak_rss_mb=peak) for row in rows]


def main() -> None:
    job = WorkerJob.from_dict(json.loads(sys.stdin.read()))
    for row in run(job):
        sys.stdout.write(MARKER + json.dumps(row.to_dict()) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
