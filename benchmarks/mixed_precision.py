"""Training throughput of the seed U-Net at float32 and under Keras mixed precision, on this CPU.

    python benchmarks/mixed_precision.py [--frames 128] [--batch-size 4]

Random frames, the seed model, Adam and sparse cross-entropy as in training; the classifier head and the loss
stay float32 under the mixed policies (Keras keeps the loss in float32; the head is given dtype float32).
Prints frames/s per policy, measured after one warm-up epoch, in one process run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--policies", default="float32,mixed_bfloat16,mixed_float16")
    args = parser.parse_args()
    import numpy as np

    from exporter.bench.environment import describe
    from exporter.stdio import import_tensorflow

    import_tensorflow()
    import keras

    from exporter.model import build_unet

    rng = np.random.default_rng(0)
    x = rng.random((args.frames, 96, 128, 3), dtype=np.float32)
    y = rng.integers(0, 23, (args.frames, 96, 128)).astype(np.uint8)
    flags = [f for f in describe(None).get("cpu_flags", []) if f.startswith(("avx512_bf16", "amx", "avx512f",
                                                                             "avx2", "avx512_fp16"))]
    print(f"CPU flags: {' '.join(flags) or '-'}; {args.frames} frames, batch {args.batch_size}")
    for policy in args.policies.split(","):
        keras.mixed_precision.set_global_policy(policy)
        keras.utils.set_random_seed(0)
        model = build_unet((96, 128, 3), 32, 23, 0.3)
        if policy != "float32":  # the classifier head in float32: logits and loss keep full precision
            head = model.layers[-1]
            logits = keras.layers.Conv2D(head.filters, 1, padding="same", dtype="float32",
                                         name="head_f32")(model.layers[-2].output)
            model = keras.Model(model.inputs, logits)
        model.compile(optimizer=keras.optimizers.Adam(1e-3),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(x[: args.batch_size * 4], y[: args.batch_size * 4], batch_size=args.batch_size, epochs=1, verbose=0)
        started = time.perf_counter()
        history = model.fit(x, y, batch_size=args.batch_size, epochs=1, verbose=0)
        seconds = time.perf_counter() - started
        print(f"{policy:15s} {args.frames / seconds:6.2f} frames/s  loss {history.history['loss'][-1]:.3f}",
              flush=True)
    keras.mixed_precision.set_global_policy("float32")


if __name__ == "__main__":
    main()
