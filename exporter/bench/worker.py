"""One benchmark process: load one artifact in one runtime on one device, time it, score it.

Run as ``python -m exporter.bench.worker`` with a JSON spec on stdin; prints one result line per batch size
after a marker, so that each runtime's threads and memory live and die in their own process.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

from exporter import metrics
from exporter.bench.evaldata import load_eval
from exporter.bench.harness import Latency, time_calls

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


def _predict_all(runtime, images: np.ndarray, batch_size: int = 8) -> np.ndarray:
    return np.concatenate([runtime.predict(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])


def _ran_as(info: dict) -> str | None:
    """The precision the runtime ran; OpenVINO's hint covers only what is not already quantized."""
    precision = info.get("precision")
    return f"int8 + {precision}" if info.get("quantized_graph") and precision else precision


def run(spec: dict) -> list[dict]:
    """Measure one (artifact, runtime, device, threads) for each batch size in the spec."""
    from exporter.runtimes import get_runtime
    from exporter.runtimes.base import ModelLoadError, RuntimeUnavailable

    base = {k: spec.get(k) for k in ("artifact", "format", "precision", "runtime", "device", "threads",
                                     "size_bytes")}
    rows = [dict(base, batch_size=b) for b in spec["batch_sizes"]]

    def finish(status: str, reason: str | None = None, **fields) -> list[dict]:
        for row in rows:
            row.setdefault("status", status)
            row.setdefault("reason", reason)
            for key, value in fields.items():
                row.setdefault(key, value)
        return rows

    try:
        runtime = get_runtime(spec["runtime"])
    except ValueError as exc:
        return finish("failed", str(exc))
    runtime_version = runtime.version() if hasattr(runtime, "version") else None
    for row in rows:
        row["runtime_version"] = runtime_version
    evaldata = load_eval(spec["eval_path"])
    started = time.perf_counter()
    try:
        runtime.load(spec["artifact_path"], device=spec["device"], threads=spec.get("threads"))
        runtime.predict(evaldata.images[:1])
    except RuntimeUnavailable as exc:
        return finish("skipped", str(exc))
    except ModelLoadError as exc:
        return finish("failed", str(exc))
    except Exception as exc:  # a runtime that loads but cannot run the model: report it, go on
        return finish("failed", f"{exc.__class__.__name__}: {str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}")
    cold_start_ms = (time.perf_counter() - started) * 1000.0
    info = runtime.info()

    outputs = _predict_all(runtime, evaldata.images)
    reference = evaldata.reference_logits.astype(np.float32)
    scores = metrics.score(evaldata.labels, outputs, evaldata.n_classes, reference=reference)
    class_map = metrics.to_class_map(outputs)
    accuracy = scores.to_dict()
    accuracy["agreement_vs_reference"] = metrics.agreement(class_map, evaldata.reference_map)
    preview = None
    if spec.get("preview_path"):
        preview = Path(spec["preview_path"])
        preview.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(preview, maps=class_map[: spec.get("preview_frames", 3)].astype(np.uint8))

    for row in rows:
        batch = np.resize(evaldata.images, (row["batch_size"], *evaldata.images.shape[1:]))
        try:
            samples = time_calls(lambda batch=batch: runtime.predict(batch), warmup=spec.get("warmup", 3),
                                 min_runs=spec.get("min_runs", 20), min_seconds=spec.get("min_seconds", 2.0))
        except Exception as exc:  # e.g. a model that cannot be resized to this batch
            row.update(status="failed", reason=f"batch {row['batch_size']}: {exc.__class__.__name__}: {exc}"[:300])
            continue
        latency = Latency.from_values(samples)
        row.update(
            status="ok", reason=None, cold_start_ms=cold_start_ms, latency_ms=latency.to_dict(),
            latency_samples_ms=[round(s, 4) for s in samples],
            throughput_fps=row["batch_size"] * len(samples) / (sum(samples) / 1000.0),
            accuracy=accuracy, providers=info.get("providers"), inference_precision=_ran_as(info),
            preview_maps=preview.name if preview else None,
        )
    peak = peak_rss_mb()
    for row in rows:
        row["peak_rss_mb"] = peak
    return finish("ok")


def main() -> None:
    spec = json.loads(sys.stdin.read())
    for row in run(spec):
        sys.stdout.write(MARKER + json.dumps(row) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
