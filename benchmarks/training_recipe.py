"""Training recipes compared on the demo's data and seed: validation mIoU per epoch and per minute.

    python benchmarks/training_recipe.py run NAME [--epochs N --lr-schedule cosine --learning-rate 3e-3 ...]
    python benchmarks/training_recipe.py plot NAME... --out docs/training_recipe.png

``run`` trains the full-size seed U-Net with the library's ``train`` on the demo's synthetic scenes (600
frames, seed 0, 10% held out: the same frames and split for every recipe) and keeps the history in
``artifacts/recipes/NAME/history.json`` with the machine it ran on. ``plot`` draws validation mIoU per epoch
and per minute of training for the named recipes, with the demo's quality bar.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict, replace
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "artifacts" / "recipes"


def run(args) -> None:
    from exporter.bench.environment import describe
    from exporter.data.synth import write_synthetic_dataset
    from exporter.pipeline import DEMO_TRAINING, PipelineOptions
    from exporter.train import train

    options = PipelineOptions()
    data = OUT / "data"
    if not (data / "CameraRGB").is_dir():
        write_synthetic_dataset(data, options.synth_count, options.synth_seed, DEMO_TRAINING.input_size)
    given = {k: v for k, v in {"epochs": args.epochs, "batch_size": args.batch_size,
                               "learning_rate": args.learning_rate, "lr_schedule": args.lr_schedule,
                               "warmup_epochs": args.warmup_epochs, "jit_compile": args.jit}.items() if v is not None}
    config = replace(DEMO_TRAINING, **given)
    result = train(data, OUT / args.name / "run", config, overwrite=True, log=print, verbose=2)
    env = describe(args.name)
    record = {"name": args.name, "config": {**asdict(config), "input_size": list(config.input_size)},
              "history": result.history, "best_epoch": result.best_epoch, "best_val_miou": result.best_val_miou,
              "images_per_second": result.images_per_second,
              "machine": {k: env.get(k) for k in ("cpu", "cores", "cpu_flags", "int8_dot_product", "timestamp")}}
    path = OUT / args.name / "history.json"
    path.write_text(json.dumps(record, indent=1))
    print(f"wrote {path}: best val mIoU {result.best_val_miou:.4f} at epoch {result.best_epoch}")


def plot(args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (by_epoch, by_minute) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=100)
    for name in args.names:
        record = json.loads((OUT / name / "history.json").read_text())
        history = record["history"]
        epochs = [row["epoch"] for row in history]
        minutes, elapsed = [], 0.0
        for row in history:
            elapsed += row["epoch_seconds"]
            minutes.append(elapsed / 60)
        config = record["config"]
        label = args.labels.get(name, name) if args.labels else name
        label += f" ({config['epochs']} epochs, {config['lr_schedule']} {config['learning_rate']:g})"
        by_epoch.plot(epochs, [row["val_miou"] for row in history], "o-", label=label)
        by_minute.plot(minutes, [row["val_miou"] for row in history], "o-", label=label)
    for ax in (by_epoch, by_minute):
        ax.axhline(0.60, color="0.4", ls="--", lw=1)
        ax.text(ax.get_xlim()[0], 0.605, " demo's bar: mIoU ≥ 0.60", fontsize=9, color="0.3")
        ax.set_ylabel("validation mIoU (60 held-out frames)")
        ax.grid(alpha=0.3)
    by_epoch.set_xlabel("epoch (540 training frames each)")
    by_minute.set_xlabel("minutes of training steps (validation and checkpoints not counted)")
    by_epoch.set_title("validation mIoU per epoch")
    by_minute.set_title("validation mIoU per minute, this machine")
    by_epoch.legend(fontsize=8.5, loc="lower right")
    fig.suptitle(args.title, fontsize=10)
    fig.tight_layout()
    fig.savefig(args.out)
    print(f"wrote {args.out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("name")
    r.add_argument("--epochs", type=int)
    r.add_argument("--batch-size", type=int)
    r.add_argument("--learning-rate", type=float)
    r.add_argument("--lr-schedule", choices=["constant", "cosine"])
    r.add_argument("--warmup-epochs", type=float)
    r.add_argument("--jit", action="store_true", default=None)
    p = sub.add_parser("plot")
    p.add_argument("names", nargs="+")
    p.add_argument("--out", required=True)
    p.add_argument("--title", default="Training recipes on the demo's data (same frames, split and seed)")
    p.add_argument("--label", action="append", default=[], help="NAME=text")
    args = parser.parse_args()
    if args.command == "run":
        run(args)
    else:
        args.labels = dict(item.split("=", 1) for item in args.label)
        plot(args)


if __name__ == "__main__":
    main()
