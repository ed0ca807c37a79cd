"""Export a trained run: convert, validate against Keras on held-out frames, gate on the budget, record.

``ExportContext.open`` loads the model and the frames once; ``context.export(spec)`` writes one artifact
(temp file, validated, then renamed) and records it in the run's manifest. Everything format-specific is the
format's backend (``export/backend.py``); ``--auto-fallback`` is ``export/fallback.py``.
"""

from __future__ import annotations

import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from exporter import drift
from exporter.classes import class_names
from exporter.contracts.export_spec import ExportSpec
from exporter.contracts.manifest import ArtifactEntry, FallbackRecord, ValidationResult
from exporter.contracts.rundir import RunDir
from exporter.data.carla import Frames
from exporter.data.index import DataIndex
from exporter.drift import NO_BUDGET, Budget
from exporter.errors import CheckFailed, UserError
from exporter.export.backend import Converted, FormatBackend, ModelFacts
from exporter.export.calibration import CalibrationSet, balanced_pick
from exporter.export.formats import backend_for, backend_of
from exporter.export.validate import compare_outputs, run_artifact
from exporter.fileio import atomic_path, check_writable, sha256_file
from exporter.parameters import CALIBRATION_SAMPLES, MIN_CALIBRATION_SAMPLES, VALIDATION_SAMPLES
from exporter.runtimes.base import predict_in_batches
from exporter.stdio import CONVERTER_NOISE, filtered_stderr


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote: the file, its manifest entry (sizes, hash, validation), notes for the user."""

    path: Path
    entry: ArtifactEntry
    notes: tuple[str, ...] = ()
    # --auto-fallback: p50 ms of one frame here, (first attempt (full int8), the result), in one process
    fallback_latency_ms: tuple[float, float] | None = None

    @property
    def validation(self) -> ValidationResult:
        return self.entry.validation


def load_keras_model(path: str | Path, log: Callable[[str], None] | None = None):
    """Load a ``.keras`` file with safe mode on (no arbitrary code from someone else's file).

    TensorFlow is imported without its start-up notices; ``log`` hears once which devices it runs on.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: model file not found")
    if path.suffix != ".keras" or not zipfile.is_zipfile(path):
        raise UserError(f"{path}: not a Keras .keras model file")
    from exporter.stdio import announce

    announce(log)
    import keras

    from exporter.model import as_float32

    try:
        return as_float32(keras.saving.load_model(path, compile=False, safe_mode=True))
    except Exception as exc:  # any failure to deserialise is the file's problem; say which
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise UserError(f"{path}: cannot load Keras model ({reason[:200]})") from None


@dataclass(frozen=True)
class CalibrationPool:
    """The frames calibration may come from (the training side of the split), known by the data check's
    class histograms: a pick loads only the frames it chose."""

    index: DataIndex
    positions: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.positions)

    def select(self, count: int, seed: int = 0) -> CalibrationSet:
        has_class = self.index.has_class[list(self.positions)]
        chosen, classes, covered = balanced_pick(has_class, count, seed)
        frames = self.index.load([self.positions[i] for i in chosen])
        return CalibrationSet(frames.images, tuple(chosen), tuple(classes), tuple(covered))


@dataclass
class ExportContext:
    """A loaded model with its held-out frames, reference logits and calibration pool, shared by exports."""

    model_path: Path
    model: object
    model_sha256: str
    labels: list[str]
    data_dir: Path
    validation: Frames
    calibration_pool: CalibrationPool
    reference_logits: np.ndarray
    seed: int = 0
    log: Callable[[str], None] = field(default=lambda message: None, repr=False)

    @property
    def run(self) -> RunDir:
        return RunDir.of_model(self.model_path)

    @property
    def input_size(self) -> tuple[int, int]:
        return tuple(int(v) for v in self.model.input_shape[1:3])

    @property
    def n_classes(self) -> int:
        return int(self.model.output_shape[-1])

    @classmethod
    def open(cls, model_path: str | Path, data_dir: str | Path | None = None,
             validation_samples: int = VALIDATION_SAMPLES, seed: int = 0,
             log: Callable[[str], None] | None = print) -> ExportContext:
        """Load the model and its data: the run's own held-out split when the data is the one it trained on."""
        from exporter.data.carla import split_indices
        from exporter.data.index import index_dataset

        model_path = Path(model_path)
        run = RunDir.of_model(model_path)
        model = load_keras_model(model_path, log)
        config = run.config()
        n_classes = int(model.output_shape[-1])
        data_dir = data_dir or config.get("data_dir")
        if not data_dir:
            raise UserError(f"{model_path}: no --data given and the run's config.json names no data folder")
        data_dir = Path(data_dir)
        input_size = tuple(int(v) for v in model.input_shape[1:3])
        _check_aspect(model_path, input_size, data_dir)
        frames = index_dataset(data_dir, input_size, n_classes)  # checked once; only the frames used are loaded
        val_stems = set(config.get("val_stems") or ())
        if val_stems and val_stems <= set(frames.stems):  # the training run's own held-out split
            val_idx = np.array([i for i, s in enumerate(frames.stems) if s in val_stems])
            train_idx = np.array([i for i, s in enumerate(frames.stems) if s not in val_stems])
        elif len(frames) >= 2:
            train_idx, val_idx = split_indices(len(frames), config.get("val_split", 0.15), seed)
        else:
            train_idx = val_idx = np.arange(len(frames))
        validation = frames.load(val_idx[:validation_samples])
        reference = predict_in_batches(lambda batch: np.asarray(model(batch, training=False)), validation.images)
        return cls(model_path=model_path, model=model, model_sha256=sha256_file(model_path),
                   labels=config.get("class_names") or class_names(n_classes), data_dir=data_dir,
                   validation=validation,
                   calibration_pool=CalibrationPool(frames, tuple(int(i) for i in (train_idx if len(train_idx)
                                                                                   else val_idx))),
                   reference_logits=reference, seed=seed, log=log or (lambda message: None))

    def calibration(self, samples: int) -> CalibrationSet:
        """Class-balanced calibration frames from the training side of the split."""
        chosen = self.calibration_pool.select(samples, self.seed)
        if len(chosen) < MIN_CALIBRATION_SAMPLES:
            self.log(f"warning: {len(chosen)} calibration frames is few (< {MIN_CALIBRATION_SAMPLES}"
                     f"{'; the data has no more' if len(chosen) < samples else ''}); quantization ranges may be off")
        missing = ", ".join(self.labels[c] for c in chosen.missing_classes) or "none"
        self.log(f"calibration: {len(chosen)} frames covering {len(chosen.classes_covered)}/"
                 f"{len(chosen.classes_in_data)} classes present in the data (missing: {missing})")
        return chosen

    def description(self, spec: ExportSpec, input_dtype: str, output: str) -> str:
        height, width = self.input_size
        return (f"U-Net semantic segmentation of {height}x{width} RGB driving frames into {self.n_classes} "
                f"CARLA classes; {spec.precision_label}, input {input_dtype}, output {output.replace('_', ' ')}")

    def convert(self, spec: ExportSpec, name: str,
                calibration_samples: int = CALIBRATION_SAMPLES) -> tuple[Converted, CalibrationSet | None, float]:
        """(the converted artifact, the calibration frames it used, seconds) — nothing written yet."""
        calibration = self.calibration(calibration_samples) if spec.quantization.needs_calibration else None
        started = time.perf_counter()
        with filtered_stderr(CONVERTER_NOISE):  # the converter's per-model settings lines, not its errors
            converted = backend_for(spec.format).convert(self.model, spec, calibration,
                                                         ModelFacts(self.labels, self.description), name)
        for note in converted.notes:
            self.log(f"note: {note}")
        return converted, calibration, time.perf_counter() - started

    def export(self, spec: ExportSpec, out: str | Path | None = None, budget: Budget = NO_BUDGET,
               calibration_samples: int = CALIBRATION_SAMPLES, fallback: FallbackRecord | None = None) -> ExportResult:
        """Convert, validate in the format's runtime, gate on ``budget`` (CheckFailed, nothing written), record."""
        final = check_writable(Path(out) if out else self.run.path / spec.file_name)
        self.run.manifest()  # a broken manifest stops us before anything is converted or written
        backend = backend_for(spec.format)
        notes = backend.notes(spec)
        for note in notes:
            self.log(f"note: {note}")
        converted, calibration, seconds = self.convert(spec, final.stem, calibration_samples)
        with atomic_path(final, suffix=f".{spec.format.value}") as tmp:
            converted.write(tmp)
            result = self._validate(tmp, final.name, backend)
            problems = drift.validation_problems(result, budget)
            if problems:
                raise CheckFailed(f"{final.name}: " + "; ".join(problems) + " (artifact not written)",
                                  measured=(final.name, spec.quantization.value, result))
            entry = ArtifactEntry(path=self.run.relative(final), format=spec.format.value,
                                  precision=spec.quantization.value, size_bytes=tmp.stat().st_size,
                                  sha256=sha256_file(tmp), input_dtype=converted.input_dtype, output=converted.output,
                                  validation=result, conversion_seconds=round(seconds, 3),
                                  source_model_sha256=self.model_sha256, spec=converted.spec,
                                  input_quantization=converted.input_quantization,
                                  calibration=None if calibration is None else calibration.summary(),
                                  fallback=fallback)
            # Recorded before the rename: a process killed in between leaves no file under the final name
            # (or the previous one), never a file the manifest does not know.
            self.run.record(entry)
        return ExportResult(final, entry, tuple(notes + list(converted.notes)))

    def write_unrecorded(self, spec: ExportSpec, path: str | Path,
                         calibration_samples: int = CALIBRATION_SAMPLES) -> Path:
        """Convert ``spec`` to ``path`` without validating or recording it (reports, attempts, comparisons)."""
        path = Path(path)
        self.convert(spec, path.stem, calibration_samples)[0].write(path)
        return path

    def validate(self, path: str | Path, name: str | None = None) -> ValidationResult:
        """An artifact's outputs on the held-out frames against the Keras model, in its format's runtime."""
        path = Path(path)
        return self._validate(path, name or path.name, backend_of(path))

    def latency_ms(self, path: str | Path, min_runs: int = 20, min_seconds: float = 1.0) -> float:
        """p50 latency (ms) of one held-out frame through the artifact in its format's runtime, here."""
        from exporter.bench.harness import time_calls
        from exporter.contracts.bench_json import Latency
        from exporter.runtimes import get_runtime

        runtime = get_runtime(backend_of(path).validating_runtime)
        runtime.load(path, "cpu", None)
        frame = self.validation.images[:1]
        return Latency.from_values(time_calls(lambda: runtime.predict(frame), warmup=3, min_runs=min_runs,
                                              min_seconds=min_seconds)).p50

    def _validate(self, path: Path, name: str, backend: FormatBackend) -> ValidationResult:
        started = time.perf_counter()
        with filtered_stderr(CONVERTER_NOISE):
            outputs = run_artifact(path, backend.validating_runtime, self.validation.images)
        result = compare_outputs(outputs, self.reference_logits, self.validation.masks, self.n_classes)
        self.log(f"validated {name} on {result.samples} held-out frames in {time.perf_counter() - started:.1f}s")
        return result


def _check_aspect(model_path: Path, input_size: tuple[int, int], data_dir: Path) -> None:
    """Frames are resized to the model input; a different aspect ratio means the wrong data or model."""
    from exporter.data.carla import find_pairs, read_image

    pairs = find_pairs(data_dir, warn=lambda message: None)
    if not pairs:
        raise UserError(f"{data_dir}: no usable frames")
    width, height = read_image(pairs[0][1]).size
    model_h, model_w = input_size
    if abs(height / width - model_h / model_w) > 0.02:
        raise UserError(f"{model_path}: model input {model_h}x{model_w} does not match the data "
                        f"({pairs[0][1]} is {height}x{width})")
