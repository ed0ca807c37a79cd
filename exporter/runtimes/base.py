"""The runtime adapter interface, its errors, I/O (de)quantization helpers and the registry.

An adapter runs one exported artifact on one runtime. The caller always hands it float32 N×H×W×3 frames
in [0, 1] (as the Keras model was trained) and always gets back float32 N×H×W×C logits — or, for a model
whose output is an in-graph argmax, the integer class map N×H×W. Everything a model needs in between
(quantizing a uint8/int8/int16 input, dequantizing quantized logits, resizing to the batch) happens inside
the adapter, read from the model itself.

Nothing here imports a framework at module level: the device may have only numpy, click and one runtime.
What ``load`` loaded is a ``Loaded`` record (``runtime.loaded``); the adapter keeps only its runtime's handles.
"""

from __future__ import annotations

import importlib.util
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np

from exporter.parameters import MODEL_FORMATS, Device

DEVICES = tuple(Device.values())
FORMATS = MODEL_FORMATS


class RuntimeUnavailable(Exception):
    """The runtime, or the requested device, is not present here: the bench reports the row as skipped."""


class ModelLoadError(Exception):
    """The artifact is broken or unsupported by this runtime: the bench reports the row as failed."""


def module_missing(*modules: str) -> str | None:
    """The first of ``modules`` that cannot be imported here, without importing it (None if all can).

    ``find_spec`` raises ValueError for a module set to None in ``sys.modules`` and ImportError under an
    import blocker; both mean "not usable".
    """
    for name in modules:
        try:
            if importlib.util.find_spec(name) is None:
                return name
        except (ImportError, ValueError):
            return name
    return None


def distribution_version(*distributions: str) -> str | None:
    """Installed version of the first of ``distributions`` present, read without importing it."""
    for name in distributions:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def one_line(exc: BaseException, limit: int = 300) -> str:
    """A runtime's (often multi-line, source-location-laden) error message as one readable line."""
    noise = ("exception from ", "check '", "frontend api failed", "warning:")
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if not line.lower().startswith(noise)] or lines
    text = "; ".join(useful) or exc.__class__.__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def check_model_file(path) -> Path:
    """The artifact path, or ModelLoadError if it is missing, not a file or empty."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ModelLoadError(f"{path}: empty file")
    return path


def resolve_threads(threads: int | None) -> int | None:
    """Validate a thread count (None = the runtime's default)."""
    if threads is None:
        return None
    threads = int(threads)
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    return threads


def default_threads() -> int:
    """All cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def check_images(images) -> np.ndarray:
    """The frames as a C-contiguous float32 N×H×W×3 array (ValueError on anything else)."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected frames N×H×W×3, got shape {images.shape}")
    if images.shape[0] < 1:
        raise ValueError("expected at least one frame")
    return np.ascontiguousarray(images, dtype=np.float32)


def predict_in_batches(predict, images: np.ndarray, batch_size: int = 8) -> np.ndarray:
    """``predict`` (frames → outputs) over ``images`` in batches of ``batch_size``, concatenated.

    The one batching loop: the export reference, export validation and the bench worker go through it
    (training's evaluation streams loss and confusion per batch instead of keeping every output).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return np.concatenate([np.asarray(predict(images[i:i + batch_size])) for i in range(0, len(images), batch_size)])


INTEGER_TYPES = (np.int8, np.uint8, np.int16)


def quantize_input(images: np.ndarray, dtype, scale: float, zero_point: int) -> np.ndarray:
    """Float frames → the model's input dtype.

    Integer inputs: ``q = round(x / scale + zero_point)`` clipped to the dtype's range (a uint8 input with
    scale 1/255 and zero point 0 thus receives the camera bytes). Float inputs: a cast.
    """
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return images.astype(dtype, copy=False)
    if dtype.type not in INTEGER_TYPES:
        raise ModelLoadError(f"unsupported input type {dtype.name}")
    if not scale:
        raise ModelLoadError(f"{dtype.name} input has no quantization scale: cannot map float frames onto it")
    info = np.iinfo(dtype)
    q = np.round(images / np.float32(scale) + np.float32(zero_point))
    return np.clip(q, info.min, info.max).astype(dtype)


def is_class_map(shape, dtype, scale: float = 0.0) -> bool:
    """An integer, unquantized N×H×W or N×H×W×1 output: an in-graph argmax."""
    dtype = np.dtype(dtype)
    rank = len(shape)
    return dtype.kind in "iu" and not scale and (rank == 3 or (rank == 4 and shape[-1] == 1))


def decode_output(output: np.ndarray, scale: float = 0.0, zero_point: int = 0) -> np.ndarray:
    """A model's raw output → float32 logits (dequantized if quantized) or an N×H×W class map."""
    output = np.asarray(output)
    if is_class_map(output.shape, output.dtype, scale):
        return output[..., 0] if output.ndim == 4 else output
    if output.dtype.kind in "iu":
        if not scale:
            raise ModelLoadError(f"{output.dtype.name} logits output has no quantization scale")
        return ((output.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)).astype(np.float32)
    return output.astype(np.float32, copy=False)


@dataclass(frozen=True)
class TensorInfo:
    """A model's input or output as the adapter read it from the model (shape: None for a dynamic dimension)."""

    name: str | None
    shape: tuple[int | None, ...]
    dtype: str
    scale: float = 0.0
    zero_point: int = 0
    kind: str | None = None  # outputs: "logits" or "class_map" (an in-graph argmax)

    @classmethod
    def of(cls, shape, dtype, scale: float = 0.0, zero_point: int = 0, name: str | None = None,
           output: bool = False) -> TensorInfo:
        """From a runtime's own description (-1 or None for dynamic dims); ``output`` decides its kind."""
        dims = tuple(None if d is None or int(d) < 0 else int(d) for d in shape)
        dtype = np.dtype(dtype).name
        kind = None
        if output:
            kind = "class_map" if is_class_map([-1 if d is None else d for d in dims], dtype, scale) else "logits"
        return cls(name, dims, dtype, float(scale or 0.0), int(zero_point or 0), kind)

    @property
    def quantized(self) -> bool:
        return bool(self.scale) and np.dtype(self.dtype).kind in "iu"

    def to_dict(self) -> dict:
        data = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype, "scale": self.scale,
                "zero_point": self.zero_point, "quantized": self.quantized}
        return {**data, "kind": self.kind} if self.kind else data


@dataclass(frozen=True)
class Loaded:
    """What ``load`` loaded: the file on a device, its I/O, what executes it, and the adapter's own facts."""

    path: Path
    device: str
    threads: int | None
    input: TensorInfo
    output: TensorInfo
    providers: tuple[str, ...] = ()  # ORT providers, LiteRT delegate, OpenVINO device, TF device
    precision: str | None = None  # what ran, where the runtime says (e.g. OpenVINO's inference precision)
    facts: Mapping[str, object] = field(default_factory=dict)  # e.g. fully_accelerated, cpu_fallback_nodes


class Runtime(ABC):
    """One runtime adapter: ``load`` an artifact on a device, then ``predict`` float frames → logits.

    A subclass in a module of ``exporter.runtimes`` registered with ``@register`` is all a new runtime needs:
    the bench plans it in ``order``, reports the versions of ``packages`` in its environment and says
    ``install_hint()`` where it is missing.
    """

    name: str = ""
    formats: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()  # what must be importable for ``available``
    distributions: tuple[str, ...] = ()  # pip distributions whose version ``version`` reports
    order: int = 100  # where it comes in the bench's default order (lower first)
    extra: str | None = None  # the package extra that installs it (default: its name)
    # in the bench's plan when no runtime is named; the web runtimes start a browser a row and run only when named
    # (their names, or the group ``web``)
    default: bool = True
    group: str | None = None  # a name for several runtimes at once in ``--runtimes`` (e.g. "web")
    in_process: bool = True  # the model runs in this process (its peak memory is the row's)

    def __init__(self) -> None:
        self.loaded: Loaded | None = None

    @classmethod
    def available(cls) -> str | None:
        """None if this runtime can be used here, else why not (e.g. "onnxruntime is not installed")."""
        missing = module_missing(*cls.modules)
        return f"{missing} is not installed" if missing else None

    @classmethod
    def install_hint(cls) -> str:
        """How to install it on a device."""
        return f"pip install 'unet-export[{cls.extra or cls.name}]'"

    @classmethod
    def packages(cls) -> dict[str, tuple[str, ...]]:
        """Name → pip distributions, for the versions a bench environment reports."""
        return {cls.name: cls.distributions}

    def version(self) -> str:
        """The installed runtime's version ("unknown" if it cannot be read)."""
        return distribution_version(*self.distributions) or "unknown"

    def load(self, path, device: str = "cpu", threads: int | None = None) -> Loaded:
        """Load an artifact. RuntimeUnavailable if the device is absent; ModelLoadError if the file is bad."""
        missing = self.available()
        if missing:
            raise RuntimeUnavailable(missing)
        if device not in DEVICES:
            raise ValueError(f"unknown device {device!r}; known: {', '.join(DEVICES)}")
        path = check_model_file(path)
        fmt = format_of(path)
        if fmt in FORMATS and fmt not in self.formats:
            raise ModelLoadError(f"{path.name}: {self.name} runs {', '.join(self.formats)} artifacts, not {fmt}")
        self.loaded = None
        self.loaded = self._open(path, device, resolve_threads(threads))
        return self.loaded

    @abstractmethod
    def _open(self, path: Path, device: str, threads: int | None) -> Loaded:
        """The runtime's own load of a checked file; what it loaded."""

    @abstractmethod
    def predict(self, images: np.ndarray) -> np.ndarray:
        """Float32 N×H×W×3 frames in [0, 1] (any N) → float32 N×H×W×C logits, or an N×H×W class map."""

    def _require_loaded(self) -> Loaded:
        if self.loaded is None:
            raise RuntimeError(f"{self.name}: call load() before predict()")
        return self.loaded

    def details(self) -> dict:
        """Facts that change after loading (cached batches), added to ``info``."""
        return {}

    def time_calls(self, images: np.ndarray, warmup: int, min_runs: int, min_seconds: float) -> list[float]:
        """ms per ``predict(images)``: warm-up calls, then both floors (``exporter.bench.harness``). A runtime
        that runs elsewhere (a browser page) times itself there, so that the samples hold no transport."""
        from exporter.bench.harness import time_calls

        return time_calls(lambda: self.predict(images), warmup=warmup, min_runs=min_runs, min_seconds=min_seconds)

    def peak_memory_mb(self) -> float | None:
        """Peak resident memory of where the model ran, for a runtime that is not ``in_process`` (None: unknown)."""
        return None

    def info(self) -> dict:
        """Runtime, version, device, threads, providers, precision, the model's I/O and the adapter's facts."""
        loaded = self._require_loaded()
        return {
            "runtime": self.name,
            "runtime_version": self.version(),
            "device": loaded.device,
            "threads": loaded.threads,
            "providers": list(loaded.providers),
            "precision": loaded.precision,
            "model": str(loaded.path),
            "input": loaded.input.to_dict(),
            "output": loaded.output.to_dict(),
            **loaded.facts,
            **self.details(),
        }


def format_of(path) -> str:
    """The artifact format from the file suffix (``keras``, ``tflite``, ``onnx``; else the bare suffix)."""
    suffix = Path(path).suffix.lower().lstrip(".")
    return {"h5": "keras", "lite": "tflite"}.get(suffix, suffix)


RUNTIMES: dict[str, type[Runtime]] = {}


def register(cls: type[Runtime]) -> type[Runtime]:
    """Class decorator: add an adapter to ``RUNTIMES`` under its ``name``."""
    if not cls.name or not cls.formats:
        raise TypeError(f"{cls.__name__} needs a name and formats")
    RUNTIMES[cls.name] = cls
    return cls


def runtime_names() -> list[str]:
    """Every registered runtime, in the bench's default order."""
    return sorted(RUNTIMES, key=lambda name: (RUNTIMES[name].order, name))


def get_runtime(name: str) -> Runtime:
    """A fresh adapter instance by name (ValueError naming the known ones if unknown)."""
    try:
        cls = RUNTIMES[name]
    except KeyError:
        raise ValueError(f"unknown runtime {name!r}; known: {', '.join(runtime_names())}") from None
    return cls()


def runtimes_for(fmt: str, wanted=None) -> list[str]:
    """The runtimes (of ``wanted``, default every registered one that is in the default plan, in default order)
    that run ``fmt`` artifacts."""
    names = wanted or [name for name in runtime_names() if RUNTIMES[name].default]
    return [name for name in names if fmt in RUNTIMES[name].formats]


def expand_runtimes(names) -> tuple[str, ...]:
    """``--runtimes`` names with groups (``web``) replaced by their members, in order, once each."""
    out: list[str] = []
    for name in names:
        members = [r for r in runtime_names() if RUNTIMES[r].group == name] if name not in RUNTIMES else [name]
        out += members or [name]  # an unknown name stays, for the error that names the known ones
    return tuple(dict.fromkeys(out))
