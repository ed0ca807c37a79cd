"""Plan and run a benchmark: one worker process per (artifact, runtime, device, threads)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from exporter.bench.environment import describe
from exporter.bench.pack import BenchTarget
from exporter.bench.worker import MARKER

RUNTIME_ORDER = ("keras", "litert", "onnxruntime", "openvino")
EMPTY_MEASUREMENTS = {"cold_start_ms": None, "latency_ms": None, "throughput_fps": None, "peak_rss_mb": None,
                      "accuracy": None, "providers": None, "inference_precision": None, "preview_maps": None}


def _row(artifact: dict, runtime: str, device: str, threads: int | None, batch: int, status: str,
         reason: str | None) -> dict:
    return {"artifact": artifact["path"], "format": artifact.get("format"), "precision": artifact.get("precision"),
            "runtime": runtime, "runtime_version": None, "device": device, "threads": threads, "batch_size": batch,
            "status": status, "reason": reason, "size_bytes": artifact.get("size_bytes"), **EMPTY_MEASUREMENTS}


def plan(target: BenchTarget, runtimes: list[str] | None = None) -> list[tuple[dict, str]]:
    """(artifact, runtime) pairs: each artifact on every requested runtime that reads its format."""
    from exporter.runtimes import RUNTIMES

    wanted = runtimes or list(RUNTIME_ORDER)
    unknown = [r for r in wanted if r not in RUNTIMES]
    if unknown:
        from exporter.errors import UserError

        raise UserError(f"unknown runtime(s) {', '.join(unknown)}; known: {', '.join(RUNTIMES)}")
    return [(a, r) for a in target.artifacts for r in wanted if a.get("format") in RUNTIMES[r].formats]


def run_worker(spec: dict, timeout: float) -> list[dict] | str:
    """Run one worker process; its rows, or the reason it produced none."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    try:
        proc = subprocess.run([sys.executable, "-m", "exporter.bench.worker"], input=json.dumps(spec),
                              capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return f"timed out after {timeout:.0f}s"
    rows = [json.loads(line[len(MARKER):]) for line in proc.stdout.splitlines() if line.startswith(MARKER)]
    if rows:
        return rows
    tail = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    return f"worker exited with code {proc.returncode}: {tail[-1][:300] if tail else 'no output'}"


def run_bench(target: BenchTarget, work_dir: str | Path, runtimes: list[str] | None = None,
              devices: tuple[str, ...] = ("cpu",), threads: tuple[int | None, ...] = (None,),
              batch_sizes: tuple[int, ...] = (1,), warmup: int = 3, min_runs: int = 20, min_seconds: float = 2.0,
              timeout: float = 900.0, label: str | None = None,
              progress: Callable[[str], None] | None = None) -> dict:
    """Measure every planned (artifact, runtime) on each device and thread count; the bench JSON dict."""
    from exporter.runtimes import RUNTIMES

    progress = progress or (lambda message: None)
    work_dir = Path(work_dir)
    reference = reference_scores(target.eval_path)  # also checks the frames before minutes of measuring
    results: list[dict] = []
    jobs = [(a, r, d, t) for a, r in plan(target, runtimes) for d in devices for t in threads]
    for number, (artifact, runtime, device, n_threads) in enumerate(jobs, 1):
        where = f"[{number}/{len(jobs)}] {artifact['path']} on {runtime}/{device}" + (
            f" threads={n_threads}" if n_threads else "")
        missing = RUNTIMES[runtime].available()
        if missing:
            rows = [_row(artifact, runtime, device, n_threads, b, "skipped", missing) for b in batch_sizes]
        else:
            progress(f"{where} …")
            preview = work_dir / "previews" / f"{artifact['path']}.{runtime}.{device}.{n_threads or 'default'}.npz"
            spec = {"artifact_path": artifact["artifact_path"], "artifact": artifact["path"],
                    "format": artifact.get("format"), "precision": artifact.get("precision"),
                    "size_bytes": artifact.get("size_bytes"), "runtime": runtime, "device": device,
                    "threads": n_threads, "batch_sizes": list(batch_sizes), "warmup": warmup, "min_runs": min_runs,
                    "min_seconds": min_seconds, "eval_path": str(target.eval_path), "preview_path": str(preview)}
            outcome = run_worker(spec, timeout)
            if isinstance(outcome, str):
                rows = [_row(artifact, runtime, device, n_threads, b, "failed", outcome) for b in batch_sizes]
            else:
                rows = [{**EMPTY_MEASUREMENTS, **row} for row in outcome]
        for row in rows:
            if row.get("preview_maps"):
                row["preview_maps"] = f"previews/{row['preview_maps']}"
            results.append(row)
        first = rows[0]
        if first["status"] == "ok":
            acc = first["accuracy"] or {}
            progress(f"{where}: p50 {first['latency_ms']['p50']:.2f} ms, mIoU {acc.get('miou', float('nan')):.4f}, "
                     f"agreement {acc.get('agreement_vs_reference', float('nan')):.4f}")
        else:
            progress(f"{where}: {first['status']} ({first['reason']})")
    return {"environment": describe(label), "labels": target.labels, "reference": reference, "results": results}


def reference_scores(eval_path: Path) -> dict:
    """Scores of the Keras reference outputs stored with the evaluation frames: what drift is measured from.

    Lets a device without TensorFlow (no Keras row) still report each artifact's mIoU drop.
    """
    from exporter import metrics
    from exporter.bench.evaldata import load_eval

    evaldata = load_eval(eval_path)
    scores = metrics.score(evaldata.labels, evaldata.reference_map, evaldata.n_classes)
    return {"source": "Keras outputs stored with the evaluation frames", "frames": int(len(evaldata.labels)),
            "pixel_accuracy": scores.pixel_accuracy, "miou": scores.miou, "per_class_iou": scores.per_class_iou}
