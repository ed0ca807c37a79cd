"""Export a trained run: convert, validate against Keras on held-out frames, gate on drift, record."""

from __future__ import annotations

import json
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from exporter.classes import class_names
from exporter.errors import UserError
from exporter.export.calibration import CalibrationSet, select_calibration
from exporter.export.manifest import artifact_entry, load_manifest, record_artifact
from exporter.export.modes import IOType, Quantization
from exporter.export.validate import ValidationResult, compare_outputs, enforce_budget, run_artifact
from exporter.fileio import atomic_path, check_writable, sha256_file

DEFAULT_CALIBRATION_SAMPLES = 256
MIN_CALIBRATION_SAMPLES = 100
DEFAULT_VALIDATION_SAMPLES = 48


@dataclass
class ExportResult:
    """What an export wrote and what validation measured."""

    path: Path
    format: str
    precision: str
    input_dtype: str
    output: str
    size_bytes: int
    sha256: str
    conversion_seconds: float
    validation: ValidationResult
    notes: list[str] = field(default_factory=list)


def load_keras_model(path: str | Path):
    """Load a ``.keras`` file with safe mode on (no arbitrary code from someone else's file)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: model file not found")
    if path.suffix != ".keras" or not zipfile.is_zipfile(path):
        raise UserError(f"{path}: not a Keras .keras model file")
    import keras

    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # any failure to deserialise is the file's problem; say which
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise UserError(f"{path}: cannot load Keras model ({reason[:200]})") from None


class ExportContext:
    """A loaded model with its held-out frames, reference logits and calibration pool, shared by exports."""

    def __init__(self, model_path: str | Path, data_dir: str | Path | None = None,
                 validation_samples: int = DEFAULT_VALIDATION_SAMPLES, seed: int = 0,
                 log: Callable[[str], None] | None = print):
        from exporter.data.carla import load_frames, split_indices

        self.log = log or (lambda message: None)
        self.model_path = Path(model_path)
        self.run_dir = self.model_path.parent
        self.model = load_keras_model(self.model_path)
        self.model_sha256 = sha256_file(self.model_path)
        self.config = self._run_config()
        self.input_size = tuple(int(v) for v in self.model.input_shape[1:3])
        self.n_classes = int(self.model.output_shape[-1])
        self.labels = self.config.get("class_names") or class_names(self.n_classes)
        self.seed = seed
        data_dir = data_dir or self.config.get("data_dir")
        if not data_dir:
            raise UserError(f"{self.model_path}: no --data given and the run's config.json names no data folder")
        self.data_dir = Path(data_dir)
        self._check_aspect()
        frames = load_frames(self.data_dir, self.input_size, self.n_classes)
        val_stems = set(self.config.get("val_stems") or ())
        if val_stems and val_stems <= set(frames.stems):  # the training run's own held-out split
            val_idx = np.array([i for i, s in enumerate(frames.stems) if s in val_stems])
            train_idx = np.array([i for i, s in enumerate(frames.stems) if s not in val_stems])
        elif len(frames) >= 2:
            train_idx, val_idx = split_indices(len(frames), self.config.get("val_split", 0.15), seed)
        else:
            train_idx = val_idx = np.arange(len(frames))
        self.validation = frames.subset(val_idx[:validation_samples])
        self.calibration_pool = frames.subset(train_idx if len(train_idx) else val_idx)
        self.reference_logits = self._keras_logits(self.validation.images)

    def _run_config(self) -> dict:
        path = self.run_dir / "config.json"
        try:
            return json.loads(path.read_text()) if path.exists() else {}
        except json.JSONDecodeError:
            return {}

    def _check_aspect(self) -> None:
        """Frames are resized to the model input; a different aspect ratio means the wrong data or model."""
        from exporter.data.carla import find_pairs, read_image

        pairs = find_pairs(self.data_dir, warn=lambda message: None)
        if not pairs:
            raise UserError(f"{self.data_dir}: no usable frames")
        width, height = read_image(pairs[0][1]).size
        model_h, model_w = self.input_size
        if abs(height / width - model_h / model_w) > 0.02:
            raise UserError(f"{self.model_path}: model input {model_h}x{model_w} does not match the data "
                            f"({pairs[0][1]} is {height}x{width})")

    def _keras_logits(self, images: np.ndarray, batch_size: int = 8) -> np.ndarray:
        return np.concatenate([np.asarray(self.model(images[i:i + batch_size], training=False))
                               for i in range(0, len(images), batch_size)])

    def calibration(self, samples: int) -> CalibrationSet:
        """Class-balanced calibration frames from the training side of the split."""
        pool = self.calibration_pool
        chosen = select_calibration(pool.images, pool.masks, samples, self.seed)
        if len(chosen) < MIN_CALIBRATION_SAMPLES:
            self.log(f"warning: {len(chosen)} calibration frames is few (< {MIN_CALIBRATION_SAMPLES}"
                     f"{'; the data has no more' if len(chosen) < samples else ''}); quantization ranges may be off")
        names = self.labels
        missing = ", ".join(names[c] for c in chosen.missing_classes) or "none"
        self.log(f"calibration: {len(chosen)} frames covering {len(chosen.classes_covered)}/"
                 f"{len(chosen.classes_in_data)} classes present in the data (missing: {missing})")
        return chosen

    def description(self, precision: str, input_dtype: str, output: str) -> str:
        height, width = self.input_size
        return (f"U-Net semantic segmentation of {height}x{width} RGB driving frames into {self.n_classes} "
                f"CARLA classes; {precision}, input {input_dtype}, output {output.replace('_', ' ')}")

    def finish(self, tmp: Path, final: Path, fmt: str, precision: str, runtime: str, input_dtype: str,
               output: str, seconds: float, max_miou_drop: float | None, min_agreement: float | None,
               notes: list[str], extra: dict | None = None) -> tuple[ExportResult, dict]:
        """Validate the written temp file and gate on drift (raises); return the result and manifest entry."""
        started = time.perf_counter()
        outputs = run_artifact(tmp, runtime, self.validation.images)
        result = compare_outputs(outputs, self.reference_logits, self.validation.masks, self.n_classes)
        self.log(f"validated {final.name} on {result.samples} held-out frames in "
                 f"{time.perf_counter() - started:.1f}s")
        self.last_validation = (final.name, precision, result)
        enforce_budget(final.name, result, max_miou_drop, min_agreement)
        entry = artifact_entry(tmp, self.run_dir, fmt, precision, input_dtype, output, result.to_dict(),
                               conversion_seconds=round(seconds, 3), source_model_sha256=self.model_sha256,
                               **(extra or {}))
        entry["path"] = _relative(final, self.run_dir)
        return ExportResult(final, fmt, precision, input_dtype, output, entry["size_bytes"], entry["sha256"],
                            seconds, result, notes), entry


def _relative(path: Path, run_dir: Path) -> str:
    try:
        return str(path.resolve().relative_to(run_dir.resolve()))
    except ValueError:
        return str(path.resolve())


def _out_path(out: str | Path | None, default_dir: Path, default_name: str) -> Path:
    return check_writable(Path(out) if out else default_dir / default_name)


def check_float_head(quantization: Quantization | str, float_head: bool) -> None:
    """--float-head only makes sense for int8 (checked before any slow work)."""
    if float_head and Quantization(quantization) is not Quantization.INT8:
        raise UserError(f"--float-head needs --quantize int8, not {Quantization(quantization).value}")


def _precision_label(quantization: Quantization, float_head: bool) -> str:
    return f"{quantization.value} with a float classifier head" if float_head else quantization.value


def tflite_name(quantization: Quantization, io: IOType, argmax: bool, float_head: bool = False) -> str:
    """Default file name: unet_<precision>[_floathead][_<io>io][_argmax].tflite."""
    parts = ["unet", quantization.value]
    if float_head:
        parts.append("floathead")
    if io is not IOType.FLOAT32:
        parts.append(f"{io.value}io")
    if argmax:
        parts.append("argmax")
    return "_".join(parts) + ".tflite"


def onnx_name(quantization: Quantization, float_head: bool = False) -> str:
    """Default file name: unet_<precision>[_floathead].onnx."""
    return f"unet_{quantization.value}{'_floathead' if float_head else ''}.onnx"


def export_tflite(model_path: str | Path, data_dir: str | Path | None = None, out: str | Path | None = None,
                  quantization: Quantization | str = Quantization.FP32, io: IOType | str = IOType.FLOAT32,
                  argmax: bool = False, calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES,
                  validation_samples: int = DEFAULT_VALIDATION_SAMPLES, max_miou_drop: float | None = None,
                  min_agreement: float | None = None, metadata: bool = True, seed: int = 0,
                  log: Callable[[str], None] | None = print, context: ExportContext | None = None,
                  float_head: bool = False) -> ExportResult:
    """Convert a run's model to TFLite, embed metadata, validate in LiteRT, gate, write atomically."""
    from exporter.export.tflite_export import DYNAMIC_NOTE, INT16X8_NOTE, convert_tflite, tflite_io

    quantization, io = Quantization(quantization), IOType(io)
    check_float_head(quantization, float_head)
    ctx = context or ExportContext(model_path, data_dir, validation_samples, seed, log)
    final = _out_path(out, ctx.run_dir, tflite_name(quantization, io, argmax, float_head))
    notes = list({Quantization.DYNAMIC: [DYNAMIC_NOTE], Quantization.INT16X8: [INT16X8_NOTE]}.get(quantization, []))
    if argmax:
        from exporter.export.tflite_metadata import ARGMAX_NOTE

        notes.append(f"for plain LiteRT apps; {ARGMAX_NOTE}")
    for note in notes:
        ctx.log(f"note: {note}")
    load_manifest(ctx.run_dir)  # a broken manifest stops us before anything is converted or written
    calibration = ctx.calibration(calibration_samples) if quantization.needs_calibration else None
    started = time.perf_counter()
    model_bytes = convert_tflite(ctx.model, quantization, io, argmax, calibration, float_head)
    seconds = time.perf_counter() - started
    input_dtype, output, input_quant = tflite_io(model_bytes)
    if metadata and input_dtype == "int8":
        notes.append("no TFLite metadata: MediaPipe's writer and ImageSegmenter take float32 or uint8 input only; "
                     "use --io uint8 for a self-describing mobile model")
        ctx.log(f"note: {notes[-1]}")
    elif metadata:
        from exporter.export.tflite_metadata import add_segmenter_metadata

        model_bytes = add_segmenter_metadata(
            model_bytes, ctx.labels, name=final.stem,
            description=ctx.description(_precision_label(quantization, float_head), input_dtype, output),
            normalization=(0.0, 255.0) if input_dtype.startswith("float") else None)
    extra = {"io": io.value, "argmax": argmax, "float_head": float_head, "input_quantization": input_quant}
    if calibration is not None:
        extra["calibration"] = {"samples": len(calibration), "classes_in_data": len(calibration.classes_in_data),
                                "classes_covered": len(calibration.classes_covered)}
    with atomic_path(final, suffix=".tflite") as tmp:
        tmp.write_bytes(model_bytes)
        result, entry = ctx.finish(tmp, final, "tflite", quantization.value, "litert", input_dtype, output,
                                   seconds, max_miou_drop, min_agreement, notes, extra)
    record_artifact(ctx.run_dir, entry)
    return result


def export_onnx(model_path: str | Path, data_dir: str | Path | None = None, out: str | Path | None = None,
                quantization: Quantization | str = Quantization.FP32, opset: int | None = None,
                calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES,
                validation_samples: int = DEFAULT_VALIDATION_SAMPLES, max_miou_drop: float | None = None,
                min_agreement: float | None = None, seed: int = 0, log: Callable[[str], None] | None = print,
                context: ExportContext | None = None, float_head: bool = False) -> ExportResult:
    """Convert a run's model to ONNX, validate in ONNX Runtime, gate, write atomically."""
    import onnx

    from exporter.export.onnx_export import DEFAULT_OPSET, convert_onnx, onnx_metadata

    quantization = Quantization(quantization)
    check_float_head(quantization, float_head)
    opset = opset or DEFAULT_OPSET
    ctx = context or ExportContext(model_path, data_dir, validation_samples, seed, log)
    final = _out_path(out, ctx.run_dir, onnx_name(quantization, float_head))
    load_manifest(ctx.run_dir)
    calibration = ctx.calibration(calibration_samples) if quantization is Quantization.INT8 else None
    started = time.perf_counter()
    proto = convert_onnx(ctx.model, quantization, opset, calibration,
                         onnx_metadata(ctx.labels, ctx.description(_precision_label(quantization, float_head),
                                                                   "float32", "logits")), float_head=float_head)
    seconds = time.perf_counter() - started
    extra = {"opset": opset, "float_head": float_head}
    with atomic_path(final, suffix=".onnx") as tmp:
        onnx.save(proto, tmp)
        result, entry = ctx.finish(tmp, final, "onnx", quantization.value, "onnxruntime", "float32", "logits",
                                   seconds, max_miou_drop, min_agreement, [], extra)
    record_artifact(ctx.run_dir, entry)
    return result
