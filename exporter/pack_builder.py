"""Build FILE.pack on the host: the run's artifacts, evaluation frames with labels, Keras reference outputs.

The format itself (and how a device opens it) is ``exporter.contracts.pack``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from exporter.contracts.evaldata import save_eval
from exporter.contracts.manifest import ArtifactEntry
from exporter.contracts.pack import keras_entry, write_pack
from exporter.contracts.rundir import RunDir
from exporter.errors import UserError
from exporter.export.api import DataOptions
from exporter.fileio import sha256_file
from exporter.parameters import EVAL_FRAMES


@dataclass(frozen=True)
class PackContents:
    """What a pack carries: how many held-out evaluation frames (picked by ``seed``), model.keras or not
    (``include_keras``: without optimizer state, for a device with TensorFlow or JAX; the Keras reference outputs
    every row is judged against are in the pack either way), and which artifact files (``only``; default: every
    current one)."""

    frames: int = EVAL_FRAMES
    include_keras: bool = False
    only: tuple[str, ...] | None = None
    seed: int = 0
    data: DataOptions | None = None  # how the data is read and named (default: the run's config.json)


def write_eval(run: RunDir, data_dir: str | Path | None, contents: PackContents,
               log: Callable[[str], None] | None = None, context=None) -> list[str]:
    """RUN_DIR/eval.npz: held-out frames, labels (and the ignore value) and the Keras model's outputs on them;
    the class names."""
    from exporter.export.api import DataOptions, ExportContext

    frames = contents.frames
    ctx = context or ExportContext.open(run.model, data_dir, validation_samples=frames, seed=contents.seed, log=log,
                                        data=contents.data or DataOptions())
    val = ctx.validation
    save_eval(run.eval_path, val.images[:frames], val.masks[:frames], ctx.reference_logits[:frames],
              val.stems[:frames], ctx.fmt.ignore_index)
    return ctx.labels


def inference_copy(model_path: Path, out_dir: Path) -> Path:
    """``model.keras`` without its optimizer state, in ``out_dir``: the weights a device runs (the seed model:
    35 MB instead of 104 MB with Adam's two moments)."""
    from exporter.export.api import load_keras_model

    model = load_keras_model(model_path)  # float32 (a mixed-precision run's layers converted), one-line errors
    out = out_dir / model_path.name
    model.save(out)
    return out


def build_pack(run_dir: str | Path, data_dir: str | Path | None, out: str | Path,
               contents: PackContents = PackContents(), log: Callable[[str], None] | None = None,
               warn: Callable[[str], None] | None = None, context=None) -> Path:
    """Write FILE.pack from a run folder; every artifact's sha256 must still match the manifest.

    ``warn`` (default: ``log``) hears about manifest entries left out (file gone, or exported from an earlier
    model); ``context``: an ``ExportContext`` already open on the run (its held-out frames are reused).
    """
    run = RunDir.at(run_dir)
    frames, include_keras, only = contents.frames, contents.include_keras, contents.only
    if not run.model.is_file():
        raise UserError(f"{run_dir}: no model.keras or other .keras model (give a run folder, a model file, or "
                        "a folder holding one)")
    current = run.current_artifacts(warn=warn or log)
    if only is not None:
        known = [run.resolve(e.path).name for e in current] + ([run.model.name] if include_keras else [])
        unknown = [name for name in only if name not in known]
        if unknown:
            raise UserError(f"{run.path}: no artifact {', '.join(unknown)} to pack (known: {', '.join(known)})")
        current = [e for e in current if run.resolve(e.path).name in only]
        include_keras = include_keras and run.model.name in only
    labels = write_eval(run, data_dir, contents, log, context)
    eval_path = run.eval_path
    with tempfile.TemporaryDirectory(prefix="unet-pack-") as scratch:
        artifacts: list[tuple[Path, ArtifactEntry]] = []
        if include_keras:
            copy = inference_copy(run.model, Path(scratch))
            artifacts.append((copy, keras_entry(run, copy)))
        for entry in current:
            path = run.resolve(entry.path)
            if sha256_file(path) != entry.sha256:
                raise UserError(f"{path}: changed since it was exported (sha256 differs from the manifest)")
            artifacts.append((path, entry))
        if not artifacts or (only is None and len(artifacts) == int(include_keras)):
            raise UserError(f"{run.path}: no exported artifacts in manifest.json; run `unet-export tflite` first")
        names = [p.name for p, _ in artifacts]
        if len(set(names)) != len(names):
            raise UserError(f"{run.path}: two artifacts share a file name; packs need unique names")
        return write_pack(out, artifacts, eval_path, labels, eval_frames=frames)
