"""Export a trained run: convert, validate against Keras on held-out frames, gate on the budget, record.

``ExportContext.open`` loads the model and the frames once; ``context.export(spec)`` writes one artifact
(temp file, validated, then renamed) and records it in the run's manifest. Everything format-specific is the
format's backend (``export/backend.py``); ``--auto-fallback`` is ``export/fallback.py``.
"""

from __future__ import annotations

import re
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from exporter import drift
from exporter.classes import CARLA_CLASSES, class_names
from exporter.contracts.export_spec import ExportSpec
from exporter.contracts.manifest import ArtifactEntry, FallbackRecord, ValidationResult
from exporter.contracts.rundir import RunDir
from exporter.data.carla import IMAGE_DIR, MASK_DIR, DataFormat, Frames
from exporter.data.index import DataIndex
from exporter.drift import NO_BUDGET, Budget
from exporter.errors import CheckFailed, UserError
from exporter.export.backend import Converted, FormatBackend, ModelFacts
from exporter.export.calibration import CalibrationSet, balanced_pick
from exporter.export.formats import backend_for, backend_of
from exporter.export.validate import compare_outputs, run_artifact
from exporter.fileio import atomic_path, check_writable, read_lines, sha256_file
from exporter.parameters import (
    CALIBRATION_SAMPLES,
    MIN_CALIBRATION_SAMPLES,
    VALIDATION_SAMPLES,
    ArtifactFormat,
)
from exporter.runtimes.base import ModelLoadError, predict_in_batches
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
    """Load a ``.keras`` segmentation model with safe mode on (no arbitrary code from someone else's file),
    checked to be one (``check_segmentation_model``).

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
        model = as_float32(keras.saving.load_model(path, compile=False, safe_mode=True))
    except Exception as exc:  # any failure to deserialise is the file's problem; say which
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise UserError(f"{path}: cannot load Keras model ({reason[:200]})") from None
    check_segmentation_model(model, path)
    return model


def check_segmentation_model(model, path: Path) -> None:
    """What every command assumes of a model: one NHWC RGB image in with a fixed height and width, one
    per-pixel score map out at the same height and width (logits or softmax, any number of classes)."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise UserError(f"{path}: expected one image input and one score output, got {len(model.inputs)} "
                        f"input(s) and {len(model.outputs)} output(s)")
    shape_in, shape_out = tuple(model.inputs[0].shape), tuple(model.outputs[0].shape)
    if len(shape_in) != 4 or shape_in[-1] != 3:
        raise UserError(f"{path}: expected an N×H×W×3 (NHWC, RGB) input, got {shape_in}")
    if None in shape_in[1:3]:
        raise UserError(f"{path}: the input's height and width are not fixed ({shape_in}); save the model with "
                        "keras.Input(shape=(H, W, 3)) for the size it runs at")
    if len(shape_out) != 4 or tuple(shape_out[1:3]) != tuple(shape_in[1:3]) or (shape_out[-1] or 0) < 2:
        raise UserError(f"{path}: expected N×H×W×C per-pixel scores (C ≥ 2 classes) at the input's "
                        f"{shape_in[1]}x{shape_in[2]}, got {shape_out}")


def output_activation(model) -> str:
    """"softmax" when the model ends in a softmax (probabilities out), else "logits"."""
    import keras

    last = model.layers[-1]  # a functional model's layers are in graph order: the output's comes last
    if isinstance(last, keras.layers.Softmax):
        return "softmax"
    activation = getattr(last, "activation", None)
    return "softmax" if getattr(activation, "__name__", "") == "softmax" else "logits"


@dataclass(frozen=True)
class DataOptions:
    """What the user said about the data beside the folder (None: what the run's config.json says, else CARLA's
    layout with every pixel counted): the image and mask folder names, the ignore value, the class names."""

    images: str | None = None
    masks: str | None = None
    ignore_index: int | None = None
    labels: tuple[str, ...] | None = None
    labels_file: str | None = None  # where ``labels`` came from (messages name it)

    def check_labels(self, n_classes: int) -> None:
        """The given class names, if any, are one per class (UserError naming their file)."""
        if self.labels is not None and len(self.labels) != n_classes:
            raise UserError(f"{self.labels_file or '--labels'}: {len(self.labels)} class names for {n_classes} "
                            "classes")

    def layout_key(self) -> list:
        """What of these options a pipeline stage key holds."""
        return [self.images, self.masks, self.ignore_index, list(self.labels or ())]

    def data_format(self, config: dict, size: tuple[int, int], n_classes: int) -> DataFormat:
        """The format the data is read in: these options first, then config.json's, then CARLA's."""
        return DataFormat(size, n_classes, self.images or config.get("images_dir") or IMAGE_DIR,
                          self.masks or config.get("masks_dir") or MASK_DIR,
                          self.ignore_index if self.ignore_index is not None else config.get("ignore_index"))

    def class_names(self, config: dict, model_path: Path, n_classes: int) -> list[str]:
        """--labels, else the run's recorded names, else labels.txt beside the model, else CARLA's for 23 classes,
        else class_0…; the count must be the model's class count."""
        names, source = self.labels, self.labels_file or "--labels"
        if names is None and config.get("class_names"):
            names, source = config["class_names"], str(RunDir.of_model(model_path).config_path)
        if names is None and (model_path.parent / "labels.txt").is_file():
            names, source = read_labels(model_path.parent / "labels.txt"), str(model_path.parent / "labels.txt")
        if names is None:
            return class_names(n_classes)
        if len(names) != n_classes:
            raise UserError(f"{source}: {len(names)} class names for a model with {n_classes} classes")
        return list(names)


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
    fmt: DataFormat
    validation: Frames
    calibration_pool: CalibrationPool
    reference_logits: np.ndarray
    seed: int = 0
    log: Callable[[str], None] = field(default=lambda message: None, repr=False)
    _equalized: dict = field(default_factory=dict, repr=False)  # (indices, kept float, levels) → (model, report)
    qat_model: object = field(default=None, repr=False)  # set by ``unet-export qat`` (export/qat.py)

    @property
    def run(self) -> RunDir:
        return RunDir.of_model(self.model_path)

    @property
    def input_size(self) -> tuple[int, int]:
        return tuple(int(v) for v in self.model.input_shape[1:3])

    @property
    def n_classes(self) -> int:
        return int(self.model.output_shape[-1])

    @property
    def output_activation(self) -> str:
        return output_activation(self.model)

    @classmethod
    def open(cls, model_path: str | Path, data_dir: str | Path | None = None,
             validation_samples: int = VALIDATION_SAMPLES, seed: int = 0,
             log: Callable[[str], None] | None = print, data: DataOptions = DataOptions()) -> ExportContext:
        """Load the model and its data: the run's own held-out split when the data is the one it trained on."""
        from exporter.data.index import index_dataset

        model_path = Path(model_path)
        run = RunDir.of_model(model_path)
        config = run.config()  # a damaged config.json stops us before the model is loaded
        model = load_keras_model(model_path, log)
        n_classes = int(model.output_shape[-1])
        data_dir = data_dir or config.get("data_dir")
        if not data_dir:
            raise UserError(f"{model_path}: no --data given and the run's config.json names no data folder")
        data_dir = Path(data_dir)
        input_size = tuple(int(v) for v in model.input_shape[1:3])
        fmt = data.data_format(config, input_size, n_classes)
        _check_aspect(model_path, fmt, data_dir)
        frames = index_dataset(data_dir, fmt)  # checked once; only the frames used are loaded
        train_idx, val_idx = _held_out(frames, config, seed)
        validation = frames.load(val_idx[:validation_samples])
        reference = predict_in_batches(lambda batch: np.asarray(model(batch, training=False)), validation.images)
        return cls(model_path=model_path, model=model, model_sha256=sha256_file(model_path),
                   labels=data.class_names(config, model_path, n_classes), data_dir=data_dir, fmt=fmt,
                   validation=validation, calibration_pool=CalibrationPool(frames, tuple(int(i) for i in train_idx)),
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
        what = (f"U-Net semantic segmentation of {height}x{width} RGB driving frames into {self.n_classes} CARLA "
                "classes" if self.labels == list(CARLA_CLASSES) else
                f"Semantic segmentation of {height}x{width} RGB frames into {self.n_classes} classes")
        if output == "logits" and self.output_activation == "softmax":
            output = "softmax probabilities"
        return f"{what}; {spec.precision_label}, input {input_dtype}, output {output.replace('_', ' ')}"

    def equalized(self, calibration: CalibrationSet, spec: ExportSpec):
        """The model after cross-layer equalization and bias correction on ``calibration`` (made once per set and
        per what ``spec`` keeps float and its weight grid): layers kept float keep their bias."""
        from exporter.export.equalize import equalize
        from exporter.parameters import Int8Scheme

        keep_float = spec.float_scope.layers + ((self.head_name,) if spec.float_scope.head else ())
        levels = 63 if spec.int8_scheme is Int8Scheme.REDUCE_RANGE else 127  # ORT's reduce-range: 7-bit weights
        key = (calibration.indices, keep_float, levels)
        if key not in self._equalized:
            self._equalized[key] = equalize(self.model, calibration.frames, keep_float=keep_float, levels=levels)
            self.log(self._equalized[key][1].line())
        return self._equalized[key][0]

    @property
    def head_name(self) -> str:
        """The classifier head: the model's last convolution."""
        from exporter.export.layers import keras_layers

        return [layer.name for layer in keras_layers(self.model) if layer.kind == "conv"][-1]

    def model_for(self, spec: ExportSpec, calibration_samples: int = CALIBRATION_SAMPLES):
        """The Keras model ``spec`` converts: the equalized one with ``--equalize`` (its layers are what the
        artifact's tensors compare with), else the model itself."""
        if not spec.equalize:
            return self.model
        return self.equalized(self.calibration(calibration_samples), spec)

    def convert(self, spec: ExportSpec, name: str,
                calibration_samples: int = CALIBRATION_SAMPLES) -> tuple[Converted, CalibrationSet | None, float]:
        """(the converted artifact, the calibration frames it used, seconds) — nothing written yet."""
        if spec.qat and self.qat_model is None:
            raise UserError(f"{self.model_path}: a QAT export needs the fine-tuned model: unet-export qat")
        # a QAT TFLite takes its ranges from the FakeQuant ops; a QAT ONNX calibrates what has no learned range
        learned_only = spec.qat and spec.format is ArtifactFormat.TFLITE
        calibration = (self.calibration(calibration_samples) if spec.quantization.needs_calibration
                       and not learned_only else None)
        started = time.perf_counter()
        model = self.qat_model if spec.qat else self.equalized(calibration, spec) if spec.equalize else self.model
        # the converter's per-model settings lines, not its errors; on a failure nothing: the one line says it
        with filtered_stderr(CONVERTER_NOISE, drop_on_error=True):
            try:
                converted = backend_for(spec.format).convert(model, spec, calibration,
                                                             ModelFacts(self.labels, self.description,
                                                                        self.output_activation), name)
            except UserError:
                raise
            except Exception as exc:  # a converter or quantizer that cannot take this model: say what, in a line
                raise UserError(conversion_failure(self.model_path, spec, exc,
                                                   {layer.name for layer in self.model.layers})) from None
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
        try:
            with filtered_stderr(CONVERTER_NOISE):
                outputs = run_artifact(path, backend.validating_runtime, self.validation.images)
        except (ModelLoadError, RuntimeError, ValueError) as exc:  # converted, but its runtime cannot take it
            raise UserError(f"{self.model_path}: {name} was converted, but {backend.validating_runtime} cannot run "
                            f"it ({_first_line(exc)[:240]}); try another mode, or keep those layers float (--float-head, "
                            "--auto-fallback)") from None
        result = compare_outputs(outputs, self.reference_logits, self.validation.masks, self.n_classes,
                                 self.fmt.ignore_index)
        self.log(f"validated {name} on {result.samples} held-out frames in {time.perf_counter() - started:.1f}s")
        return result


def conversion_failure(model_path: Path, spec: ExportSpec, exc: BaseException,
                       layer_names: set[str] = frozenset()) -> str:
    """One line for a converter's failure: the ops it names (TensorFlow's ``tf.Op`` names) and the Keras layers
    they come from (MLIR's locations: ``model/layer/…/Op@…``; the trace may add ``_1`` to a layer's name), or its
    first line."""
    def keras_name(traced: str) -> str:
        plain = re.sub(r"_\d+$", "", traced)
        return plain if traced not in layer_names and plain in layer_names else traced

    text = str(exc)
    ops = sorted(set(re.findall(r"\btf\.([A-Z][A-Za-z0-9_]*)", text)))  # ops are CamelCase; tf.entry_function…
    layers = sorted({keras_name(layer) for op, layer in re.findall(r'fused\["(\w+):", "[^"/]+/([^"/]+)/', text)
                     if op in ops})
    head = f"{model_path}: {spec.format.title} {spec.precision_label} conversion failed"
    if ops:
        where = f" (layer{'s' if len(layers) > 1 else ''} {', '.join(layers[:4])})" if layers else ""
        return (f"{head}: {spec.format.title} has no {', '.join('tf.' + op for op in ops[:6])}{where}; replace "
                f"{'that layer' if len(layers) <= 1 else 'those layers'} with one it has, or export the other format")
    return f"{head} ({_first_line(exc)[:240]}); try another mode, or keep those layers float (--float-head, --auto-fallback)"


def _first_line(exc: BaseException) -> str:
    """The first non-blank line of an exception's message (its class name if none)."""
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), exc.__class__.__name__)


def _held_out(frames: DataIndex, config: dict, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(calibration side, held-out side): the training run's own split when the data is the one it trained on,
    else a seeded split (every frame on both sides when there is only one)."""
    from exporter.data.carla import split_indices

    val_stems = set(config.get("val_stems") or ())
    if val_stems and val_stems <= set(frames.stems):
        val_idx = np.array([i for i, s in enumerate(frames.stems) if s in val_stems])
        train_idx = np.array([i for i, s in enumerate(frames.stems) if s not in val_stems])
        return (train_idx if len(train_idx) else val_idx), val_idx
    if len(frames) >= 2:
        return split_indices(len(frames), config.get("val_split", 0.15), seed)
    return np.arange(len(frames)), np.arange(len(frames))


def read_labels(path: str | Path) -> list[str]:
    """Class names from a text file, one a line (blank lines at the end ignored); UserError naming the file."""
    path = Path(path)
    lines = read_lines(path, "class names")
    while lines and not lines[-1].strip():
        lines.pop()
    names = [line.strip() for line in lines]
    bad = next((i for i, name in enumerate(names) if not name or len(name) > 200 or not name.isprintable()), None)
    if bad is not None or not names:
        where = f"line {bad + 1}" if bad is not None else "no names"
        raise UserError(f"{path}: expected one class name a line ({where})")
    if len(set(names)) != len(names):
        raise UserError(f"{path}: class names repeat ({next(n for n in names if names.count(n) > 1)!r})")
    return names


def _check_aspect(model_path: Path, fmt: DataFormat, data_dir: Path) -> None:
    """Frames are resized to the model input; a different aspect ratio means the wrong data or model."""
    from exporter.data.carla import find_pairs, read_image

    input_size = fmt.size
    pairs = find_pairs(data_dir, warn=lambda message: None, fmt=fmt)
    if not pairs:
        raise UserError(f"{data_dir}: no usable frames")
    width, height = read_image(pairs[0][1]).size
    model_h, model_w = input_size
    if abs(height / width - model_h / model_w) > 0.02:
        raise UserError(f"{model_path}: model input {model_h}x{model_w} does not match the data "
                        f"({pairs[0][1]} is {height}x{width})")
