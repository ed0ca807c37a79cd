"""A run folder (``unet-export train --out RUN``): where each file lives, how it is read, one error policy.

Policy, the same for every reader: a file the run has not made yet (no config before training, no manifest
before the first export, a model outside a run folder) reads as empty; a file that is there but unreadable
or malformed is a one-line ``UserError`` naming it (exit 2), never silently empty.

Layout::

    RUN/model.keras            best epoch by validation mIoU          (train)
    RUN/config.json            TrainConfig + data folder, class names, split   (train)
    RUN/history.csv            one row per epoch                      (train)
    RUN/training_curves.png                                            (train)
    RUN/checkpoint/            epoch_NNNN.keras, state.json (the commit point)  (train)
    RUN/manifest.json          one entry per exported artifact        (export)
    RUN/unet_*.tflite|.onnx    the artifacts                          (export)
    RUN/eval.npz               evaluation frames + Keras reference outputs  (pack)
    RUN/pipeline.json, RUN/unet.pack, RUN/bench/, RUN/plots/, RUN/report.md   (pipeline)

Numpy and the standard library only (the bench reads run folders on hosts without TensorFlow too).
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

from exporter.contracts import checks
from exporter.contracts.checks import ContractError
from exporter.contracts.manifest import MANIFEST, ArtifactEntry, Manifest
from exporter.errors import UserError
from exporter.fileio import file_lock, read_json, sha256_file


class RunDir:
    """One run folder; every path and read of its files goes through here.

    Its model is ``model.keras`` (what training writes), or the model a user brought: named explicitly
    (``of_model``), or the only ``.keras`` file of the folder.
    """

    def __init__(self, path: str | Path, model: str | Path | None = None) -> None:
        self.path = Path(path)
        self._model = Path(model) if model is not None else None

    @classmethod
    def of_model(cls, model_path: str | Path) -> RunDir:
        """The folder a model file lives in, with that file as its model."""
        return cls(Path(model_path).parent, model_path)

    @classmethod
    def at(cls, path: str | Path) -> RunDir:
        """A run folder, a model file (its folder), or a folder holding one model."""
        path = Path(path)
        return cls.of_model(path) if path.suffix == ".keras" and not path.is_dir() else cls(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # -- where things are -----------------------------------------------------------------------------
    @property
    def model(self) -> Path:
        """The model: the one named, else model.keras, else the folder's only .keras file."""
        if self._model is not None:
            return self._model
        default = self.path / "model.keras"
        if default.exists():
            return default
        try:
            found = sorted(p for p in self.path.glob("*.keras") if p.is_file())
        except OSError:
            found = []
        return found[0] if len(found) == 1 else default

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def history_path(self) -> Path:
        return self.path / "history.csv"

    @property
    def curves(self) -> Path:
        return self.path / "training_curves.png"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoint"

    @property
    def training_state(self) -> Path:
        return self.checkpoints / "state.json"

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    @property
    def eval_path(self) -> Path:
        return self.path / "eval.npz"

    @property
    def pipeline_state(self) -> Path:
        return self.path / "pipeline.json"

    @property
    def pack(self) -> Path:
        return self.path / "unet.pack"

    @property
    def bench_dir(self) -> Path:
        return self.path / "bench"

    @property
    def plots_dir(self) -> Path:
        return self.path / "plots"

    @property
    def report(self) -> Path:
        return self.path / "report.md"

    def resolve(self, relative: str | Path) -> Path:
        """A path as stored in the run's files (relative to the folder, or absolute) → a usable path."""
        path = Path(relative)
        return path if path.is_absolute() else self.path / path

    def relative(self, path: str | Path) -> str:
        """How a file is named in the run's files: relative to the folder when inside it, else absolute."""
        try:
            return str(Path(path).resolve().relative_to(self.path.resolve()))
        except ValueError:
            return str(Path(path).resolve())

    # -- reads, one policy -------------------------------------------------------------------------------
    def config(self) -> dict:
        """config.json ({} before training); UserError if it is there but unreadable, or if what the toolkit reads
        back from it (the data folder, class names, held-out split) is malformed."""
        if not self.config_path.exists():
            return {}
        config = read_json(self.config_path, "run config")
        try:
            checks.path(config.get("data_dir"), "data_dir")
            checks.texts(config.get("class_names"), "class_names")
            checks.texts(config.get("val_stems"), "val_stems")
            split = checks.number(config.get("val_split"), "val_split")
            if split is not None and not 0 < split < 1:
                raise ContractError("val_split: expected a fraction between 0 and 1")
            for name in ("images_dir", "masks_dir"):
                checks.path(config.get(name), name, absolute=False)
            ignore = checks.integer(config.get("ignore_index"), "ignore_index")
            if ignore is not None and not 0 <= ignore <= 255:
                raise ContractError("ignore_index: expected a mask value 0 to 255")
        except ContractError as exc:
            raise UserError(f"{self.config_path}: {exc}") from None
        return config

    def class_names(self) -> list[str]:
        """The class names training recorded ([] if none)."""
        return list(self.config().get("class_names") or [])

    def history(self) -> list[dict[str, float]]:
        """history.csv, one dict of floats per epoch ([] before the first epoch)."""
        if not self.history_path.exists():
            return []
        try:
            with self.history_path.open(newline="") as fh:
                return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]
        except (OSError, ValueError, TypeError, csv.Error) as exc:
            raise UserError(f"{self.history_path}: unreadable training history ({exc})"[:300]) from None

    def model_sha256(self) -> str | None:
        return sha256_file(self.model) if self.model.is_file() else None

    # -- the manifest --------------------------------------------------------------------------------------
    def manifest(self) -> Manifest:
        return Manifest.load(self.manifest_path)

    @property
    def manifest_lock(self) -> Path:
        return self.path / ".manifest.json.lock"

    def record(self, entry: ArtifactEntry) -> Path:
        """Add or replace (same path) an entry in manifest.json, atomically and under the manifest's lock:
        exports running at once into one folder all end up recorded."""
        with file_lock(self.manifest_lock):
            return self.manifest().with_entry(entry).save(self.manifest_path)

    def prune(self, dry_run: bool = False) -> list[ArtifactEntry]:
        """Remove (under the manifest's lock) the entries whose file no longer exists; return them."""
        with file_lock(self.manifest_lock):
            manifest = self.manifest()
            gone = [entry for entry in manifest.artifacts if not self.resolve(entry.path).is_file()]
            if gone and not dry_run:
                manifest.without(entry.path for entry in gone).save(self.manifest_path)
        return gone

    def current_artifacts(self, warn: Callable[[str], None] | None = None) -> list[ArtifactEntry]:
        """Entries exported from the present model.keras whose file is there.

        A run retrained with ``--force`` keeps its old exports on disk: benchmarking them beside the new
        model's reference outputs would report drift that is really the difference between two models.
        An entry whose file was deleted is left out with a warning (``unet-export prune`` removes it).
        """
        model_sha = self.model_sha256()
        entries = []
        for entry in self.manifest().artifacts:
            if not self.resolve(entry.path).is_file():
                if warn:
                    warn(f"{entry.path}: left out, listed in {MANIFEST} but the file is gone "
                         f"(`unet-export prune {self.path}` removes the entry)")
                continue
            source = entry.source_model_sha256
            if source is not None and model_sha is not None and source != model_sha:
                if warn:
                    warn(f"{entry.path}: left out, exported from an earlier model.keras (export it again)")
                continue
            entries.append(entry)
        return entries
