"""Streamed vs in-memory training data: peak memory and frames/s for 600 and 6,000 synthetic frames.

    .venv/bin/python benchmarks/streaming.py [--counts 600,6000] [--work /tmp/streaming]

For each size, in fresh processes (peak RSS = the process's VmHWM):
  in-memory  the reader the trainer used before: every frame decoded serially with PIL into one array;
  check      ``index_dataset``: every frame decoded once, in parallel, its histogram kept (first run), then
             the stored check read back (second run);
  stream     the training input pipeline alone (``stream_dataset``: read, decode, class ids, batch 4,
             prefetch) for one pass over the frames.
The model trains at ~24 frames/s on this CPU (benchmarks/RESULTS.md): the pipeline must stay well above it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[3])
from exporter.bench.worker import peak_rss_mb
mode, data = sys.argv[1], sys.argv[2]
started = time.perf_counter()
if mode == "in-memory":
    from exporter.data.index import load_frames
    n = len(load_frames(data))
elif mode in ("check", "check-again"):
    from exporter.data.index import index_dataset
    n = len(index_dataset(data))
else:
    import os
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    from exporter.data.index import index_dataset, stream_dataset
    index = index_dataset(data)
    started = time.perf_counter()
    n = sum(int(images.shape[0]) for images, _ in stream_dataset(index, range(len(index)), 4, shuffle=True))
seconds = time.perf_counter() - started
print(json.dumps({"mode": mode, "frames": n, "seconds": round(seconds, 2), "frames_per_second": round(n / seconds, 1),
                  "peak_rss_mb": round(peak_rss_mb(), 1)}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="600,6000")
    parser.add_argument("--work", type=Path, default=Path("/tmp/streaming"))
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from exporter.data.synth import write_synthetic_dataset

    rows = []
    for count in (int(c) for c in args.counts.split(",")):
        data = args.work / f"synth{count}"
        if not (data / "CameraRGB").is_dir() or len(list((data / "CameraRGB").iterdir())) != count:
            started = time.perf_counter()
            write_synthetic_dataset(data, count, seed=0, overwrite=True)
            print(f"synthesized {count} frames in {time.perf_counter() - started:.0f}s", flush=True)
        (data / ".unet-index.json").unlink(missing_ok=True)
        for mode in ("in-memory", "check", "check-again", "stream"):
            out = subprocess.run([sys.executable, "-c", CHILD, mode, str(data), str(ROOT)], capture_output=True,
                                 text=True, check=True).stdout.strip().splitlines()[-1]
            row = {"count": count, **json.loads(out)}
            rows.append(row)
            print(f"{count:>6} frames  {mode:<12} {row['seconds']:>7.1f}s  {row['frames_per_second']:>8.1f} frames/s  "
                  f"peak RSS {row['peak_rss_mb']:>7.1f} MB", flush=True)
    (args.work / "streaming.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
