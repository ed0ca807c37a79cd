"""The unet-bench result file (``unet-bench run --json``): one frozen record per measured row.

The JSON is the records' serialisation: ``BenchResult.to_dict()`` writes it, ``BenchResult.from_dict()``
reads it back and is the one place where an older or hand-edited file is checked (a ``ContractError``
naming the field; ``load_bench`` turns it into a one-line ``UserError`` naming the file). Code that holds
a ``BenchRow`` trusts its types; a value that was not measured is ``None`` (or NaN, for a metric with
nothing to measure), which ``BenchRow.p50``/``score`` hide behind ``None``.

Device side: numpy and the standard library only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from exporter.contracts import checks
from exporter.contracts.checks import ContractError, finite
from exporter.metrics import SegmentationScores

STATUSES = ("ok", "skipped", "failed")
LATENCY_STATS = ("p50", "p90", "p99", "mean", "std", "min", "max", "n")
SCORE_FIELDS = ("pixel_accuracy", "miou", "agreement_vs_reference", "max_abs_logit_error")


@dataclass(frozen=True)
class Latency:
    """Statistics of raw latency samples, in milliseconds (``latency_ms`` in the JSON)."""

    p50: float
    p90: float
    p99: float
    mean: float
    std: float
    min: float
    max: float
    n: int

    @classmethod
    def from_values(cls, samples_ms: Iterable[float] | np.ndarray) -> Latency:
        values = np.asarray(list(samples_ms) if not isinstance(samples_ms, np.ndarray) else samples_ms,
                            dtype=np.float64)
        if values.size == 0:
            raise ValueError("no latency samples")
        p50, p90, p99 = np.percentile(values, [50, 90, 99])
        return cls(float(p50), float(p90), float(p99), float(values.mean()), float(values.std()),
                   float(values.min()), float(values.max()), int(values.size))

    @classmethod
    def from_dict(cls, data, where: str = "latency_ms") -> Latency:
        data = checks.obj(data, where)
        missing = [k for k in LATENCY_STATS if k not in data]
        if missing:
            raise ContractError(f"{where}: missing {', '.join(missing)}")
        stats = {k: checks.number(data[k], f"{where}.{k}", required=True) for k in LATENCY_STATS[:-1]}
        return cls(**stats, n=checks.integer(data["n"], f"{where}.n", required=True))

    def to_dict(self) -> dict:
        return asdict(self)


def scores_from_dict(data, where: str = "accuracy") -> SegmentationScores:
    """The ``accuracy`` object of a row (metrics.SegmentationScores), checked."""
    data = checks.obj(data, where)
    per_class = checks.numbers(data.get("per_class_iou"), f"{where}.per_class_iou")
    return SegmentationScores(
        pixel_accuracy=checks.number(data.get("pixel_accuracy"), f"{where}.pixel_accuracy"),
        miou=checks.number(data.get("miou"), f"{where}.miou"),
        per_class_iou=list(per_class) if per_class is not None else [],
        agreement_vs_reference=checks.number(data.get("agreement_vs_reference"), f"{where}.agreement_vs_reference"),
        max_abs_logit_error=checks.number(data.get("max_abs_logit_error"), f"{where}.max_abs_logit_error"),
    )


@dataclass(frozen=True)
class BenchRow:
    """One (artifact, runtime, device, threads, batch size): how it ran, how fast, how accurate."""

    artifact: str
    status: str
    format: str | None = None
    precision: str | None = None
    runtime: str | None = None
    runtime_version: str | None = None
    device: str | None = None
    threads: int | None = None
    batch_size: int | None = None
    reason: str | None = None
    size_bytes: int | None = None
    cold_start_ms: float | None = None
    latency: Latency | None = None
    latency_samples_ms: tuple[float, ...] | None = None
    throughput_fps: float | None = None
    peak_rss_mb: float | None = None
    accuracy: SegmentationScores | None = None
    providers: tuple[str, ...] | None = None
    inference_precision: str | None = None
    preview_maps: str | None = None
    export_agreement: float | None = None  # the same file's pixel agreement when it was exported (its manifest)
    # On a GPU (or other accelerator): did every op run there, and how many graph nodes fell back to the CPU
    # (None: the runtime does not say).
    fully_accelerated: bool | None = None
    cpu_fallback_nodes: int | None = None
    # A web row: the browser that ran it ({"name", "version", "executable", "backend", "webgpu_adapter",
    # "webgl_renderer", "software_rasterizer", "cross_origin_isolated"}); None for a native row.
    browser: Mapping[str, object] | None = None
    extra: Mapping[str, object] = field(default_factory=dict)  # keys this version does not know, kept

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ContractError(f"status: expected one of {', '.join(STATUSES)}, got {self.status!r}")

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def key(self) -> tuple:
        """(artifact, runtime, device, threads, batch_size): one measured configuration."""
        return (self.artifact, self.runtime, self.device, self.threads, self.batch_size)

    def stat(self, name: str = "p50") -> float | None:
        """A latency statistic in ms, if measured and finite."""
        return finite(getattr(self.latency, name)) if self.latency is not None else None

    @property
    def p50(self) -> float | None:
        return self.stat("p50")

    def score(self, name: str) -> float | None:
        """An accuracy field (``miou``, ``agreement_vs_reference``…), if measured and finite."""
        return finite(getattr(self.accuracy, name)) if self.accuracy is not None else None

    def to_dict(self) -> dict:
        row = {
            "artifact": self.artifact, "format": self.format, "precision": self.precision, "runtime": self.runtime,
            "runtime_version": self.runtime_version, "device": self.device, "threads": self.threads,
            "batch_size": self.batch_size, "status": self.status, "reason": self.reason,
            "size_bytes": self.size_bytes, "cold_start_ms": self.cold_start_ms,
            "latency_ms": self.latency.to_dict() if self.latency else None,
        }
        if self.latency_samples_ms is not None:
            row["latency_samples_ms"] = list(self.latency_samples_ms)
        row.update({
            "throughput_fps": self.throughput_fps, "peak_rss_mb": self.peak_rss_mb,
            "accuracy": self.accuracy.to_dict() if self.accuracy else None,
            "providers": list(self.providers) if self.providers is not None else None,
            "inference_precision": self.inference_precision, "preview_maps": self.preview_maps,
        })
        if self.export_agreement is not None:
            row["export_agreement"] = self.export_agreement
        if self.fully_accelerated is not None:
            row["fully_accelerated"] = self.fully_accelerated
        if self.cpu_fallback_nodes is not None:
            row["cpu_fallback_nodes"] = self.cpu_fallback_nodes
        if self.browser is not None:
            row["browser"] = dict(self.browser)
        return {**row, **self.extra}

    @classmethod
    def from_dict(cls, data, where: str = "row") -> BenchRow:
        data = checks.obj(data, where)
        for required in ("artifact", "status"):
            if required not in data:
                raise ContractError(f"{where}: no '{required}'")
        known = {f for f in cls.__dataclass_fields__ if f not in ("latency", "extra")} | {"latency_ms"}
        status = checks.text(data["status"], f"{where}.status", required=True)
        if status not in STATUSES:
            raise ContractError(f"{where}.status: expected one of {', '.join(STATUSES)}, got {status!r}")
        samples = checks.numbers(data.get("latency_samples_ms"), f"{where}.latency_samples_ms")
        return cls(
            artifact=checks.text(data["artifact"], f"{where}.artifact", required=True),
            status=status,
            **{name: checks.text(data.get(name), f"{where}.{name}")
               for name in ("format", "precision", "runtime", "runtime_version", "device", "reason",
                            "inference_precision")},
            preview_maps=checks.path(data.get("preview_maps"), f"{where}.preview_maps", absolute=False),
            **{name: checks.integer(data.get(name), f"{where}.{name}") for name in ("threads", "batch_size",
                                                                                       "size_bytes",
                                                                                       "cpu_fallback_nodes")},
            fully_accelerated=(None if data.get("fully_accelerated") is None
                               else checks.flag(data["fully_accelerated"], f"{where}.fully_accelerated")),
            **{name: checks.number(data.get(name), f"{where}.{name}") for name in ("cold_start_ms",
                                                                                      "throughput_fps", "peak_rss_mb",
                                                                                      "export_agreement")},
            latency=None if data.get("latency_ms") is None else Latency.from_dict(data["latency_ms"],
                                                                                  f"{where}.latency_ms"),
            latency_samples_ms=None if samples is None else tuple(s for s in samples if s is not None),
            accuracy=None if data.get("accuracy") is None else scores_from_dict(data["accuracy"], f"{where}.accuracy"),
            providers=checks.texts(data.get("providers"), f"{where}.providers"),
            browser=None if data.get("browser") is None else checks.obj(data["browser"], f"{where}.browser"),
            extra={k: v for k, v in data.items() if k not in known},
        )


@dataclass(frozen=True)
class BenchResult:
    """A whole unet-bench run: where it ran, the rows, and the stored Keras reference's own scores."""

    environment: Mapping[str, object]
    rows: tuple[BenchRow, ...]
    labels: tuple[str, ...] | None = None
    reference: Mapping[str, object] | None = None  # {"source", "frames", "pixel_accuracy", "miou", "per_class_iou"}

    @property
    def reference_miou(self) -> float | None:
        """mIoU of the Keras outputs stored with the evaluation frames (drift is measured from it)."""
        return finite((self.reference or {}).get("miou"))

    @property
    def label(self) -> str | None:
        value = self.environment.get("label")
        return str(value) if value not in (None, "") else None

    def to_dict(self) -> dict:
        out: dict = {"environment": dict(self.environment)}
        if self.labels is not None:
            out["labels"] = list(self.labels)
        if self.reference is not None:
            out["reference"] = dict(self.reference)
        out["results"] = [row.to_dict() for row in self.rows]
        return out

    @classmethod
    def from_dict(cls, data) -> BenchResult:
        data = checks.obj(data, "top level")
        if "environment" not in data:
            raise ContractError("no 'environment' object")
        environment = checks.obj(data["environment"], "environment")
        if "results" not in data or not isinstance(data["results"], list):
            raise ContractError("no 'results' list")
        reference = data.get("reference")
        if reference is not None:
            checks.obj(reference, "reference")
        rows = []
        for i, row in enumerate(data["results"]):
            if not isinstance(row, dict) or "artifact" not in row or "status" not in row:
                raise ContractError(f"results[{i}] is not a result row with 'artifact' and 'status'")
            rows.append(BenchRow.from_dict(row, f"results[{i}]"))
        return cls(environment=environment, rows=tuple(rows), labels=checks.texts(data.get("labels"), "labels"),
                   reference=reference)


def load_bench(path: str | os.PathLike) -> BenchResult:
    """Read and check a bench result file; one-line UserError naming the file for anything else."""
    from exporter.errors import UserError

    def bad(why: str) -> UserError:
        return UserError(f"{path}: not a unet-bench result file ({why})")

    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise bad("no such file") from None
    except IsADirectoryError:
        raise bad("is a directory") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise bad(f"cannot read it: {exc.__class__.__name__}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise bad(f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    if not isinstance(data, dict):
        raise bad(f"top level is a {type(data).__name__}, expected an object")
    try:
        return BenchResult.from_dict(data)
    except ContractError as exc:
        raise bad(str(exc)) from None
