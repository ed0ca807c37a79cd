"""One benchmark process: load one artifact in one runtime on one device, time it, score it.

Run as ``python -m exporter.bench.worker`` with a JSON spec on stdin; prints one result line per batch size
after a marker, so that each runtime's threads and memory live and die in their own process.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from exporter import metrics
from exporter.bench.harness import time_calls
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


def run(spec: dict) -> list[BenchRow]:
    """Measure one (artifact, runtime, device, threads) for each batch size in the spec."""
    from exporter.runtimes import get_runtime
    from exporter.runtimes.base import ModelLoadError, RuntimeUnavailable

    base = BenchRow(artifact=spec["artifact"], status="failed", format=spec.get("format"),
                    precision=spec.get("precision"), runtime=spec.get("runtime"), device=spec.get("device"),
                    threads=spec.get("threads"), size_bytes=spec.get("size_bytes"))

    def every_batch(status: str, reason: str | None = None) -> list[BenchRow]:
        return [replace(base, batch_size=b, status=status, reason=reason) for b in spec["batch_sizes"]]

    try:
        runtime = get_runtime(spec["runtime"])
    except ValueError as exc:
        return every_batch("failed", str(exc))
    identity = base = replace(base, runtime_version=runtime.version())
    evaldata = load_eval(spec["eval_path"])
    started = time.perf_counter()
    try:
        runtime.load(spec["artifact_path"], device=spec["device"], threads=spec.get("threads"))
        runtime.predict(evaldata.images[:1])
    except RuntimeUnavailable as exc:
        return every_batch("skipped", str(exc))
    except ModelLoadError as exc:
        return every_batch("failed", str(exc))
    except Exception as exc:  # a runtime that loads but cannot run the model: report it, go on
        first_line = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        return every_batch("failed", f"{exc.__class__.__name__}: {first_line}")
    cold_start_ms = (time.perf_counter() - started) * 1000.0
    info = runtime.info()

    outputs = predict_in_batches(runtime.predict, evaldata.images)
    reference = evaldata.reference_logits.astype(np.float32)
    scores = metrics.score(evaldata.labels, outputs, evaldata.n_classes, reference=reference)
    class_map = metrics.to_class_map(outputs)
    scores = replace(scores, agreement_vs_reference=metrics.agreement(class_map, evaldata.reference_map))
    preview = None
    if spec.get("preview_path"):
        preview = Path(spec["preview_path"])
        preview.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(preview, maps=class_map[: spec.get("preview_frames", 3)].astype(np.uint8))
    base = replace(base, cold_start_ms=cold_start_ms, accuracy=scores, providers=tuple(info.get("providers") or ()),
                   inference_precision=_ran_as(info), preview_maps=preview.name if preview else None,
                   fully_accelerated=info.get("fully_accelerated"), cpu_fallback_nodes=info.get("cpu_fallback_nodes"))

    rows = []
    for batch_size in spec["batch_sizes"]:
        batch = np.resize(evaldata.images, (batch_size, *evaldata.images.shape[1:]))
        try:
            samples = time_calls(lambda batch=batch: runtime.predict(batch), warmup=spec.get("warmup", 3),
                                 min_runs=spec.get("min_runs", 20), min_seconds=spec.get("min_seconds", 2.0))
        except Exception as exc:  # e.g. a model that cannot be resized to this batch
            rows.append(replace(identity, batch_size=batch_size, status="failed",
                                reason=f"batch {batch_size}: {exc.__class__.__name__}: {exc}"[:300]))
            continue
        rows.append(replace(base, batch_size=batch_size, status="ok", latency=Latency.from_values(samples),
                            latency_samples_ms=tuple(round(s, 4) for s in samples),
                            throughput_fps=batch_size * len(samples) / (sum(samples) / 1000.0)))
    peak = peak_rss_mb()
    return [replace(row, peak_rss_mb=peak) for row in rows]


def main() -> None:
    spec = json.loads(sys.stdin.read())
    for row in run(spec):
        sys.stdout.write(MARKER + json.dumps(row.to_dict()) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
