"""Export a trained run: convert, validate against Keras on held-out frames, gate on the budget, record.

``ExportContext.open`` loads the model and the frames once; ``context.export(spec)`` writes one artifact
(temp file, validated, then renamed) and records it in the run's manifest.
"""

from __future__ import annotations

import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from exporter.budget import NO_BUDGET, Budget
from exporter.classes import class_names
from exporter.contracts.manifest import ArtifactEntry, ValidationResult
from exporter.contracts.rundir import RunDir
from exporter.data.carla import Frames
from exporter.data.index import DataIndex
from exporter.errors import CheckFailed, UserError
from exporter.export.calibration import CalibrationSet, balanced_pick
from exporter.export.modes import ArtifactFormat, ExportSpec
from exporter.export.validate import compare_outputs, run_artifact
from exporter.fileio import atomic_path, check_writable, sha256_file
from exporter.runtimes.base import predict_in_batches
from exporter.tf_quiet import CONVERTER_NOISE, filtered_stderr

DEFAULT_CALIBRATION_SAMPLES = 256
MIN_CALIBRATION_SAMPLES = 100
DEFAULT_VALIDATION_SAMPLES = 48
VALIDATING_RUNTIME = {ArtifactFormat.TFLITE: "litert", ArtifactFormat.ONNX: "onnxruntime"}


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
    from exporter.tf_quiet import announce

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
             validation_samples: int = DEFAULT_VALIDATION_SAMPLES, seed: int = 0,
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

    def export(self, spec: ExportSpec, out: str | Path | None = None, budget: Budget = NO_BUDGET,
               calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES, fallback: dict | None = None) -> ExportResult:
        """Convert, validate in the format's runtime, gate on ``budget`` (CheckFailed, nothing written), record."""
        final = check_writable(Path(out) if out else self.run.path / spec.file_name)
        self.run.manifest()  # a broken manifest stops us before anything is converted or written
        notes = list(_notes_before(spec))
        for note in notes:
            self.log(f"note: {note}")
        calibration = self.calibration(calibration_samples) if spec.quantization.needs_calibration else None
        started = time.perf_counter()
        with filtered_stderr(CONVERTER_NOISE):  # the converter's per-model settings lines, not its errors
            if spec.format is ArtifactFormat.TFLITE:
                write, entry_fields = self._tflite(spec, calibration, final, notes)
            else:
                write, entry_fields = self._onnx(spec, calibration)
        seconds = time.perf_counter() - started
        with atomic_path(final, suffix=f".{spec.format.value}") as tmp:
            write(tmp)
            result = self._validate(tmp, final.name, VALIDATING_RUNTIME[spec.format])
            name_and_result = (final.name, spec.quantization.value, result)
            problems = budget.violations(result.miou_drop_points, result.pixel_agreement)
            if problems:
                raise CheckFailed(f"{final.name}: " + "; ".join(problems) + " (artifact not written)",
                                  measured=name_and_result)
            entry = ArtifactEntry(path=self.run.relative(final), format=spec.format.value,
                                  precision=spec.quantization.value, size_bytes=tmp.stat().st_size,
                                  sha256=sha256_file(tmp), validation=result, conversion_seconds=round(seconds, 3),
                                  source_model_sha256=self.model_sha256, float_head=spec.float_head,
                                  calibration=None if calibration is None else {
                                      "samples": len(calibration), "classes_in_data": len(calibration.classes_in_data),
                                      "classes_covered": len(calibration.classes_covered)},
                                  fallback=fallback, **entry_fields)
            # Recorded before the rename: a process killed in between leaves no file under the final name
            # (or the previous one), never a file the manifest does not know.
            self.run.record(entry)
        return ExportResult(final, entry, tuple(notes))

    def export_with_fallback(self, spec: ExportSpec, out: str | Path | None = None, budget: Budget = NO_BUDGET,
                             calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES, max_float_layers: int = 4,
                             report_frames: int = 8, candidates_per_step: int = 3,
                             measure_latency: bool = True) -> ExportResult:
        """Int8 that meets ``budget``: quantize everything; while the budget is missed, keep one more layer in
        float: of the ``candidates_per_step`` convolutions adding the most error in the last attempt (its
        quantization report) and the classifier head, the one whose attempt agrees best with Keras.

        Each attempt is printed (drop, agreement, size). The first one within the budget is written and recorded
        with ``fallback`` (layers kept float and why), and its latency is measured against the first attempt's
        (``fallback_latency_ms``); none within ``max_float_layers`` → CheckFailed with the best attempt's
        numbers, nothing written under the final name.
        """
        from exporter.export import quant_report

        if spec.quantization.value != "int8":
            raise UserError("--auto-fallback needs --quantize int8")
        if not budget.is_set:
            raise UserError("--auto-fallback needs a budget: --max-miou-drop and/or --min-agreement")
        final = check_writable(Path(out) if out else self.run.path / spec.file_name_with("autofallback"))
        steps: list[dict] = []
        chosen: list[str] = list(spec.float_layers)
        with tempfile.TemporaryDirectory(prefix="unet-export-fallback-") as tmp:
            def attempt(float_layers: list[str]) -> tuple[Path, ValidationResult]:
                name = "_".join(float_layers) or "none"
                path = self.write_unrecorded(replace(spec, float_layers=tuple(float_layers)),
                                             Path(tmp) / f"{name}.{spec.format.value}", calibration_samples)
                return path, self.validate(path, f"float: {', '.join(float_layers) or '(none)'}")

            def record(float_layers: list[str], path: Path, result: ValidationResult) -> bool:
                problems = budget.violations(result.miou_drop_points, result.pixel_agreement)
                steps.append({"float_layers": list(float_layers), "miou_drop": round(result.miou_drop_points, 4),
                              "agreement": round(result.pixel_agreement, 6), "size_bytes": path.stat().st_size,
                              "within": not problems})
                self.log(f"fallback step {len(steps)}: float {', '.join(float_layers) or '(none)'}: mIoU drop "
                         f"{result.miou_drop_points:.2f} pt, agreement {result.pixel_agreement:.4f}, "
                         f"{path.stat().st_size / 1e6:.2f} MB" + ("  → within the budget" if not problems else ""))
                return not problems

            path, result = attempt(chosen)
            first = path
            while not record(chosen, path, result):
                if len(chosen) - len(spec.float_layers) >= max_float_layers:
                    best = max(steps, key=lambda step: (step["agreement"], -step["miou_drop"]))
                    raise CheckFailed(
                        f"{final.name}: no attempt within the budget ({budget.describe()}) keeping up to "
                        f"{max_float_layers} layer(s) float; best: float {', '.join(best['float_layers']) or '(none)'}"
                        f", mIoU drop {best['miou_drop']:.2f} pt, agreement {best['agreement']:.4f} (nothing written)",
                        measured=(final.name, "int8", result))
                # Candidates: the convolutions adding the most error in this attempt (its quantization report),
                # and the classifier head (its output step decides argmax ties); each is tried, the best kept.
                rep = quant_report.report(self.model, path, self.validation.images[:report_frames])
                candidates = [layer.name for layer in rep.worst(candidates_per_step) if layer.name not in chosen]
                if rep.head.precision == "int8" and rep.head.name not in chosen + candidates:
                    candidates.append(rep.head.name)
                if not candidates:
                    raise CheckFailed(f"{final.name}: every convolution is float already and the budget "
                                      f"({budget.describe()}) is still missed (nothing written)",
                                      measured=(final.name, "int8", result))
                trials = [(name, *attempt([*chosen, name])) for name in candidates]
                name, path, result = max(trials, key=lambda t: (t[2].pixel_agreement, -t[2].miou_drop_points))
                chosen.append(name)
            reason = (f"kept float one at a time, each the best of the most error-adding layers, until "
                      f"{budget.describe()} was met on {self.validation.images.shape[0]} held-out frames")
            written = self.export(replace(spec, float_layers=tuple(chosen)), final, budget, calibration_samples,
                                  fallback={"float_layers": list(chosen), "reason": reason, "steps": steps})
            # the cost of the layers kept float, against the first attempt still on disk (no second conversion)
            latency = (self.latency_ms(first), self.latency_ms(written.path)) if measure_latency else None
        return replace(written, fallback_latency_ms=latency)

    def write_unrecorded(self, spec: ExportSpec, path: str | Path,
                         calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES) -> Path:
        """Convert ``spec`` to ``path`` without validating or recording it (reports, attempts, comparisons)."""
        calibration = self.calibration(calibration_samples) if spec.quantization.needs_calibration else None
        with filtered_stderr(CONVERTER_NOISE):
            write, _ = (self._tflite(spec, calibration, Path(path), []) if spec.format is ArtifactFormat.TFLITE
                        else self._onnx(spec, calibration))
        write(Path(path))
        return Path(path)

    def validate(self, path: str | Path, name: str | None = None) -> ValidationResult:
        """An artifact's outputs on the held-out frames against the Keras model, in its format's runtime."""
        path = Path(path)
        return self._validate(path, name or path.name, VALIDATING_RUNTIME[ArtifactFormat(path.suffix.lstrip("."))])

    def latency_ms(self, path: str | Path, min_runs: int = 20, min_seconds: float = 1.0) -> float:
        """p50 latency (ms) of one held-out frame through the artifact in its format's runtime, here."""
        from exporter.bench.harness import time_calls
        from exporter.contracts.bench_json import Latency
        from exporter.runtimes import RUNTIMES

        path = Path(path)
        runtime = RUNTIMES[VALIDATING_RUNTIME[ArtifactFormat(path.suffix.lstrip("."))]]()
        runtime.load(path, "cpu", None)
        frame = self.validation.images[:1]
        return Latency.from_values(time_calls(lambda: runtime.predict(frame), warmup=3, min_runs=min_runs,
                                              min_seconds=min_seconds)).p50

    def _validate(self, path: Path, name: str, runtime: str) -> ValidationResult:
        started = time.perf_counter()
        with filtered_stderr(CONVERTER_NOISE):
            outputs = run_artifact(path, runtime, self.validation.images)
        result = compare_outputs(outputs, self.reference_logits, self.validation.masks, self.n_classes)
        self.log(f"validated {name} on {result.samples} held-out frames in {time.perf_counter() - started:.1f}s")
        return result

    def _tflite(self, spec: ExportSpec, calibration: CalibrationSet | None, final: Path, notes: list[str]):
        from exporter.export.tflite_export import convert_tflite, tflite_io

        model_bytes = convert_tflite(self.model, spec, calibration)
        input_dtype, output, input_quant = tflite_io(model_bytes)
        if spec.metadata and input_dtype == "int8":
            notes.append("no TFLite metadata: MediaPipe's writer and ImageSegmenter take float32 or uint8 input "
                         "only; use --io uint8 for a self-describing mobile model")
            self.log(f"note: {notes[-1]}")
        elif spec.metadata:
            from exporter.export.tflite_metadata import add_segmenter_metadata

            model_bytes = add_segmenter_metadata(
                model_bytes, self.labels, name=final.stem, description=self.description(spec, input_dtype, output),
                normalization=(0.0, 255.0) if input_dtype.startswith("float") else None)
        return (lambda tmp: tmp.write_bytes(model_bytes),
                {"input_dtype": input_dtype, "output": output, "io": spec.io.value, "argmax": spec.argmax,
                 "input_quantization": input_quant, **({"static_batch": spec.static_batch} if spec.static_batch else {})})

    def _onnx(self, spec: ExportSpec, calibration: CalibrationSet | None):
        import onnx

        from exporter.export.onnx_export import DEFAULT_OPSET, convert_onnx, onnx_metadata

        proto = convert_onnx(self.model, spec, calibration,
                             onnx_metadata(self.labels, self.description(spec, "float32", "logits")))
        fields = {"opset": spec.opset or DEFAULT_OPSET}
        if spec.quantization.value == "int8":
            fields["int8_scheme"] = spec.int8_scheme
        return (lambda tmp: onnx.save(proto, tmp), fields)


def _notes_before(spec: ExportSpec) -> list[str]:
    """What the user should know about this mode before it is written."""
    from exporter.export.tflite_export import DYNAMIC_NOTE, INT16X8_NOTE
    from exporter.export.tflite_metadata import ARGMAX_NOTE

    notes = {"dynamic": [DYNAMIC_NOTE], "int16x8": [INT16X8_NOTE]}.get(spec.quantization.value, [])
    if spec.argmax:
        notes.append(f"for plain LiteRT apps; {ARGMAX_NOTE}")
    if spec.format is ArtifactFormat.ONNX and spec.quantization.value == "int8" and spec.int8_scheme == "u8s8":
        from exporter.bench.environment import int8_dot_product

        if int8_dot_product() == "vpmaddubsw":
            notes.append(NO_VNNI_NOTE)
    return notes


NO_VNNI_NOTE = ("this CPU has no VNNI (int8 dot product: vpmaddubsw): ONNX Runtime's u8s8 kernels saturate 16-bit "
                "sums here, so this validation (and this CPU's users) see more drift than a VNNI CPU or LiteRT would; "
                "--int8-scheme reduce-range holds on both kinds (benchmarks/RESULTS.md)")


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
