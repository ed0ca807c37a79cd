"""``unet-export``: data, train, tflite, onnx, pack, pipeline — thin wrappers over the library."""

from __future__ import annotations

import os
from pathlib import Path

import click

from exporter.cli.common import echo, handle_errors, warn

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@click.group()
@click.version_option(package_name="unet-export")
def cli() -> None:
    """Train the seed U-Net, export it for the edge (TFLite, ONNX), pack it for the device."""


@cli.group()
def data() -> None:
    """Data sets in the CARLA layout (CameraRGB/ + CameraMask/)."""


@data.command("synth")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Folder to write.")
@click.option("--count", default=800, show_default=True, type=click.IntRange(min=1), help="Frames to write.")
@click.option("--seed", default=0, show_default=True, type=int, help="Same seed → byte-identical files.")
@click.option("--size", nargs=2, type=int, default=(96, 128), show_default=True, metavar="H W",
              help="Frame size.")
@handle_errors
def data_synth(out_dir: str, count: int, seed: int, size: tuple[int, int]) -> None:
    """Write synthetic driving scenes with CARLA's 23 classes."""
    from exporter.data.synth import write_synthetic_dataset

    summary = write_synthetic_dataset(out_dir, count=count, seed=seed, size=tuple(size))
    present = {k: v for k, v in summary["class_pixel_fraction"].items() if v > 0}
    echo(f"wrote {count} frames ({size[0]}x{size[1]}) to {out_dir}; {len(present)} classes present")


@data.command("check")
@click.argument("data_dir", type=click.Path())
@click.option("--n-classes", default=23, show_default=True, type=click.IntRange(min=2))
@click.option("--input-size", nargs=2, type=int, default=(96, 128), show_default=True, metavar="H W")
@click.option("--skip-bad", is_flag=True, help="Warn about bad files and go on instead of stopping.")
@handle_errors
def data_check(data_dir: str, n_classes: int, input_size: tuple[int, int], skip_bad: bool) -> None:
    """Read every frame of a CARLA-layout folder and report the first problem (or each, with --skip-bad)."""
    import numpy as np

    from exporter.classes import class_names
    from exporter.data.carla import load_frames

    frames = load_frames(data_dir, tuple(input_size), n_classes, skip_bad=skip_bad, warn=warn)
    counts = np.bincount(frames.masks.ravel(), minlength=n_classes)
    names = class_names(n_classes)
    present = ", ".join(f"{names[i]} {counts[i] / counts.sum():.1%}" for i in np.flatnonzero(counts))
    echo(f"{data_dir}: {len(frames)} usable frames; classes: {present}")
    if frames.skipped:
        echo(f"skipped {len(frames.skipped)} bad file(s)")


@cli.command()
@click.option("--data", "data_dir", required=True, type=click.Path(), help="CARLA-layout folder.")
@click.option("--out", "run_dir", required=True, type=click.Path(file_okay=False), help="Run folder to write.")
@click.option("--epochs", default=20, show_default=True, type=click.IntRange(min=1))
@click.option("--batch-size", default=16, show_default=True, type=click.IntRange(min=1))
@click.option("--learning-rate", default=1e-3, show_default=True, type=float)
@click.option("--n-filters", default=32, show_default=True, type=click.IntRange(min=1))
@click.option("--input-size", nargs=2, type=int, default=(96, 128), show_default=True, metavar="H W")
@click.option("--n-classes", default=23, show_default=True, type=click.IntRange(min=2))
@click.option("--dropout", default=0.3, show_default=True, type=click.FloatRange(0, 1, max_open=True))
@click.option("--val-split", default=0.15, show_default=True, type=float)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--resume", is_flag=True, help="Continue a run from its last completed epoch.")
@click.option("--force", is_flag=True, help="Start over in a folder that already holds a run.")
@click.option("--skip-bad", is_flag=True, help="Skip bad frames with a warning instead of stopping.")
@handle_errors
def train(data_dir, run_dir, epochs, batch_size, learning_rate, n_filters, input_size, n_classes,
          dropout, val_split, seed, resume, force, skip_bad) -> None:
    """Train the seed U-Net; writes model.keras (best val mIoU), config.json, history.csv, curves."""
    from exporter.model import check_input_size
    from exporter.train import TrainConfig
    from exporter.train import train as run_training

    try:
        check_input_size((*input_size, 3))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--input-size") from None
    config = TrainConfig(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                         n_filters=n_filters, input_size=tuple(input_size), n_classes=n_classes,
                         dropout=dropout, val_split=val_split, seed=seed)
    result = run_training(data_dir, run_dir, config, resume=resume, overwrite=force, skip_bad=skip_bad,
                          log=echo, verbose=1 if os.isatty(1) else 2)
    echo(f"best epoch {result.best_epoch}: val mIoU {result.best_val_miou:.4f}, "
         f"val pixel accuracy {result.best_val_pixel_accuracy:.4f}; "
         f"{result.images_per_second:.1f} train images/s → {Path(result.model_path)}")
