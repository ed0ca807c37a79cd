"""One worker vs two: time and validation mIoU of the same training, on this machine.

    .venv/bin/python benchmarks/distributed.py --data DATA [--epochs 1] [--batch-size 8] [--work /tmp/dist]

Runs `unet-export train` three ways with the same seed, split and global batch: TensorFlow in one process
(the default engine), `--strategy data-parallel` in one process (JAX, one device), and two worker processes
joined over loopback (JAX, gloo). Reports wall time (start-up and XLA compilation included), the trainer's
frames/s of the last epoch, and the best validation mIoU. On one 2-core machine the two workers share the
same cores: this shows that they train the same model, not a speed-up (that needs a second host or GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

CLI = "from exporter.cli.main import cli; cli()"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(label: str, data: Path, out: Path, common: list[str], workers: int = 0) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu")
    base = [sys.executable, "-c", CLI, "train", "--data", str(data), "--out", str(out), "--force", *common]
    started = time.perf_counter()
    if workers == 0:
        procs = [subprocess.Popen(base, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)]
    else:
        port = _free_port()
        extra = ["--strategy", "data-parallel"] + (["--workers", str(workers), "--coordinator", f"127.0.0.1:{port}"]
                                                    if workers > 1 else [])
        procs = [subprocess.Popen(base + extra + (["--worker-index", str(i)] if workers > 1 else []),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                 for i in range(workers)]
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode:
            raise SystemExit(f"{label}: exit {proc.returncode}: {err[-2000:]}")
    seconds = time.perf_counter() - started
    history = json.loads((out / "checkpoint" / "state.json").read_text())["history"]
    row = {"run": label, "wall_seconds": round(seconds, 1), "frames_per_second": round(history[-1]["images_per_second"], 1),
           "best_val_miou": round(max(h["val_miou"] for h in history), 4), "val_loss": round(history[-1]["val_loss"], 4)}
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--epochs", default="1")
    parser.add_argument("--batch-size", default="8")
    parser.add_argument("--work", type=Path, default=Path("/tmp/dist"))
    args = parser.parse_args()
    common = ["--epochs", args.epochs, "--batch-size", args.batch_size, "--val-split", "0.1"]
    rows = [run("tensorflow, 1 process", args.data, args.work / "tf", common),
            run("jax data-parallel, 1 worker", args.data, args.work / "one", common, workers=1),
            run("jax data-parallel, 2 workers", args.data, args.work / "two", common, workers=2)]
    (args.work / "distributed.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
