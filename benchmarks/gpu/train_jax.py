"""Training throughput of the seed U-Net on Keras' JAX backend: float32 vs mixed precision, on whatever JAX
sees (the GPU machine: one H100; no TensorFlow there).

    KERAS_BACKEND=jax python benchmarks/gpu/train_jax.py --out train_jax.json [--frames 256] [--epochs 3]

Data: synthetic driving scenes from ``exporter.data.synth.render_scene`` (numpy + PIL), 96×128, 23 classes,
in memory (throughput does not depend on what the pixels show). The model is ``exporter.model.build_unet``
(8,640,471 parameters); mixed precision keeps the classifier's logits and the loss in float32 (Keras casts
the loss inputs). Each configuration: compile, one warm-up epoch (XLA compiles the step), then ``--epochs``
timed epochs; frames/s is the best timed epoch. Writes one JSON object per configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402


def frames(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    from exporter.data.synth import render_scene

    rng = np.random.default_rng(seed)
    images, masks = zip(*(render_scene(rng) for _ in range(count)), strict=True)
    return (np.stack(images).astype(np.float32) / 255.0).astype(np.float32), np.stack(masks).astype(np.int32)


def measure(policy: str, batch: int, images, masks, epochs: int) -> dict:
    import keras

    from exporter.model import build_unet

    keras.mixed_precision.set_global_policy(policy)
    keras.utils.set_random_seed(0)
    model = build_unet()
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(images, masks, batch_size=batch, epochs=1, verbose=0, shuffle=False)  # XLA compiles the step
    times, losses = [], []
    for _ in range(epochs):
        started = time.perf_counter()
        history = model.fit(images, masks, batch_size=batch, epochs=1, verbose=0, shuffle=False)
        times.append(time.perf_counter() - started)
        losses.append(float(history.history["loss"][-1]))
    keras.mixed_precision.set_global_policy("float32")
    best = min(times)
    return {"policy": policy, "batch_size": batch, "frames": len(images), "epoch_seconds": [round(t, 3) for t in times],
            "frames_per_second": round(len(images) / best, 1), "final_loss": round(losses[-1], 4),
            "finite_loss": bool(np.isfinite(losses).all()), "parameters": int(model.count_params())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--frames", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-sizes", default="4,32")
    parser.add_argument("--policies", default="float32,mixed_bfloat16,mixed_float16")
    args = parser.parse_args()

    import jax
    import keras

    images, masks = frames(args.frames)
    device = jax.devices()[0]
    results = {"backend": keras.backend.backend(), "keras": keras.__version__, "jax": jax.__version__,
               "device": f"{device.platform}:{device.id} ({device.device_kind})", "runs": []}
    print(f"training on {results['device']}, keras {keras.__version__} / jax {jax.__version__}", flush=True)
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        for policy in args.policies.split(","):
            run = measure(policy, batch, images, masks, args.epochs)
            results["runs"].append(run)
            print(f"{policy:>15} batch {batch:>3}: {run['frames_per_second']:8.1f} frames/s "
                  f"(epochs {run['epoch_seconds']} s, loss {run['final_loss']})", flush=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
