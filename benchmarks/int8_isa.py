"""The same int8 files on each runtime, in this process: does their accuracy hold on this CPU's instruction set?

    python benchmarks/int8_isa.py RUN_DIR FILE... [--runtimes onnxruntime,openvino,litert]
    qemu-x86_64 -cpu EPYC-Milan .venv/bin/python benchmarks/int8_isa.py RUN_DIR FILE...   # an AVX2-only CPU

Everything runs in this one process (no worker processes: under qemu-user a child would run natively), on
the run's evaluation frames (RUN_DIR/eval.npz, written by `unet-export pack`), scored against the Keras
outputs stored there. Prints the CPU's int8 dot product (CPUID: vnni, vpmaddubsw, ...) and one line per
file × runtime: pixel agreement with Keras and mIoU drop in points.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("files", nargs="+")
    parser.add_argument("--runtimes", default="onnxruntime,openvino,litert")
    args = parser.parse_args()

    import numpy as np

    from exporter import metrics
    from exporter.bench.environment import int8_dot_product
    from exporter.contracts.evaldata import load_eval
    from exporter.runtimes import RUNTIMES
    from exporter.runtimes.base import predict_in_batches

    evaldata = load_eval(Path(args.run_dir) / "eval.npz")
    reference = metrics.score(evaldata.labels, evaldata.reference_map, evaldata.n_classes)
    print(f"int8 dot product: {int8_dot_product()}; {len(evaldata.labels)} frames; Keras mIoU {reference.miou:.4f}")
    print(f"{'file':34s} {'runtime':12s} {'agreement':>9s} {'mIoU drop pt':>12s}")
    for name in args.files:
        path = Path(args.run_dir) / name
        for runtime_name in args.runtimes.split(","):
            cls = RUNTIMES[runtime_name]
            if path.suffix.lstrip(".") not in cls.formats or cls.available():
                continue
            runtime = cls()
            runtime.load(path, "cpu", None)
            out = predict_in_batches(runtime.predict, evaldata.images)
            class_map = out if out.ndim == 3 else np.argmax(out, axis=-1)
            agreement = metrics.agreement(class_map, evaldata.reference_map)
            scores = metrics.score(evaldata.labels, class_map, evaldata.n_classes)
            print(f"{name:34s} {runtime_name:12s} {agreement:9.2%} {100 * (reference.miou - scores.miou):12.2f}",
                  flush=True)


if __name__ == "__main__":
    main()
