"""Build a pack on the host: the run's artifacts, evaluation frames with labels, Keras reference outputs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from exporter.bench.evaldata import EVAL_FILE, save_eval
from exporter.bench.pack import write_pack
from exporter.errors import UserError
from exporter.export.manifest import current_artifacts
from exporter.fileio import read_json, sha256_file

DEFAULT_EVAL_FRAMES = 24


def write_eval(run_dir: Path, data_dir: str | Path | None, frames: int, seed: int = 0,
               log: Callable[[str], None] | None = None, context=None) -> Path:
    """RUN_DIR/eval.npz: held-out frames, labels and the Keras model's logits on them."""
    from exporter.export.api import ExportContext

    ctx = context or ExportContext(run_dir / "model.keras", data_dir, validation_samples=frames, seed=seed, log=log)
    val = ctx.validation
    return save_eval(run_dir / EVAL_FILE, val.images[:frames], val.masks[:frames], ctx.reference_logits[:frames],
                     val.stems[:frames])


def build_pack(run_dir: str | Path, data_dir: str | Path | None, out: str | Path, frames: int = DEFAULT_EVAL_FRAMES,
               include_keras: bool = True, seed: int = 0, log: Callable[[str], None] | None = None,
               context=None) -> Path:
    """Write FILE.pack from a run folder; every artifact's sha256 must still match the manifest."""
    run_dir = Path(run_dir)
    if not (run_dir / "model.keras").is_file():
        raise UserError(f"{run_dir}: no model.keras (is this a run folder?)")
    eval_path = write_eval(run_dir, data_dir, frames, seed, log, context)
    artifacts = []
    if include_keras:
        keras_path = run_dir / "model.keras"
        artifacts.append((keras_path, {"format": "keras", "precision": "fp32", "input_dtype": "float32",
                                       "output": "logits", "size_bytes": keras_path.stat().st_size,
                                       "sha256": sha256_file(keras_path), "validation": None}))
    for entry in current_artifacts(run_dir, warn=log):
        path = Path(entry["path"]) if Path(entry["path"]).is_absolute() else run_dir / entry["path"]
        if not path.is_file():
            raise UserError(f"{path}: listed in {run_dir}/manifest.json but missing")
        if sha256_file(path) != entry["sha256"]:
            raise UserError(f"{path}: changed since it was exported (sha256 differs from the manifest)")
        artifacts.append((path, entry))
    if len(artifacts) == int(include_keras):
        raise UserError(f"{run_dir}: no exported artifacts in manifest.json; run `unet-export tflite` first")
    names = [p.name for p, _ in artifacts]
    if len(set(names)) != len(names):
        raise UserError(f"{run_dir}: two artifacts share a file name; packs need unique names")
    return write_pack(out, artifacts, eval_path, _labels(run_dir), extra={"eval_frames": frames})


def _labels(run_dir: Path) -> list[str]:
    config = run_dir / "config.json"
    return list(read_json(config, "run config").get("class_names", [])) if config.exists() else []
