"""RUN_DIR/manifest.json: one ``ArtifactEntry`` per exported artifact, with what its validation measured.

``pack.json`` carries the same entries (paths rewritten to the pack's members). The JSON is the records'
serialisation; ``Manifest.load`` checks a file once, and an entry that breaks the contract is a one-line
``UserError`` naming the manifest (exit 2). Numpy and the standard library only (host and device).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from exporter.contracts import checks
from exporter.contracts.checks import ContractError

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class ValidationResult:
    """How an artifact's outputs compare with the Keras model's on held-out frames."""

    pixel_agreement: float
    miou: float
    miou_reference: float
    max_abs_error: float | None
    samples: int
    pixel_accuracy: float
    pixel_accuracy_reference: float

    @property
    def miou_drop_points(self) -> float:
        """Keras mIoU minus the artifact's, in points (percentage points of IoU)."""
        return 100.0 * (self.miou_reference - self.miou)

    def to_dict(self) -> dict:
        return {**asdict(self), "miou_drop_points": self.miou_drop_points}

    @classmethod
    def from_dict(cls, data, where: str = "validation") -> ValidationResult:
        data = checks.obj(data, where)
        missing = [f.name for f in fields(cls) if f.name not in data and f.name != "max_abs_error"]
        if missing:
            raise ContractError(f"{where}: missing {', '.join(missing)}")
        return cls(**{f.name: checks.number(data.get(f.name), f"{where}.{f.name}", required=f.name != "max_abs_error")
                      for f in fields(cls) if f.name != "samples"},
                   samples=checks.integer(data["samples"], f"{where}.samples", required=True))


# Optional entry fields, in the order they are written; absent (None) ones are left out of the JSON.
_OPTIONAL_TEXT = ("source_model_sha256", "io", "int8_scheme")
_OPTIONAL_FLAGS = ("argmax", "float_head")
_OPTIONAL_OBJECTS = ("input_quantization", "calibration", "fallback")


@dataclass(frozen=True)
class ArtifactEntry:
    """One exported file: where it is (relative to the run folder), what it is, its hash, its validation."""

    path: str
    format: str
    precision: str
    size_bytes: int
    sha256: str
    input_dtype: str = "float32"
    output: str = "logits"  # or "class_map" (an in-graph argmax)
    validation: ValidationResult | None = None
    conversion_seconds: float | None = None
    source_model_sha256: str | None = None  # the model.keras it was exported from
    io: str | None = None
    int8_scheme: str | None = None  # ONNX int8: u8s8, reduce-range or u8u8
    argmax: bool | None = None
    float_head: bool | None = None
    input_quantization: Mapping[str, object] | None = None
    calibration: Mapping[str, object] | None = None
    # --auto-fallback: {"float_layers": [...], "reason": ..., "steps": [{"float_layers", "miou_drop", ...}]}
    fallback: Mapping[str, object] | None = None
    opset: int | None = None
    static_batch: int | None = None  # TFLite exported with a fixed batch (GPU delegates need static shapes)
    extra: Mapping[str, object] = field(default_factory=dict)  # keys this version does not know, kept

    @property
    def name(self) -> str:
        return Path(self.path).name

    def to_dict(self) -> dict:
        entry = {"path": self.path, "format": self.format, "precision": self.precision,
                 "input_dtype": self.input_dtype, "output": self.output, "size_bytes": self.size_bytes,
                 "sha256": self.sha256, "validation": self.validation.to_dict() if self.validation else None}
        for name in ("conversion_seconds", *_OPTIONAL_TEXT, *_OPTIONAL_FLAGS, *_OPTIONAL_OBJECTS, "opset",
                     "static_batch"):
            value = getattr(self, name)
            if value is not None:
                entry[name] = dict(value) if isinstance(value, Mapping) else value
        return {**entry, **self.extra}

    @classmethod
    def from_dict(cls, data, where: str = "entry") -> ArtifactEntry:
        data = checks.obj(data, where)
        for required in ("path", "sha256"):
            if not isinstance(data.get(required), str):
                raise ContractError(f"{where}: no '{required}' string")
        for required in ("format", "precision", "size_bytes"):
            if required not in data:
                raise ContractError(f"{where}: no '{required}'")
        known = {f.name for f in fields(cls)} - {"extra"}
        objects = {name: checks.obj(data[name], f"{where}.{name}") if data.get(name) is not None else None
                   for name in _OPTIONAL_OBJECTS}
        return cls(
            path=data["path"], sha256=data["sha256"],
            format=checks.text(data["format"], f"{where}.format", required=True),
            precision=checks.text(data["precision"], f"{where}.precision", required=True),
            size_bytes=checks.integer(data["size_bytes"], f"{where}.size_bytes", required=True),
            input_dtype=checks.text(data.get("input_dtype", "float32"), f"{where}.input_dtype", required=True),
            output=checks.text(data.get("output", "logits"), f"{where}.output", required=True),
            validation=None if data.get("validation") is None else ValidationResult.from_dict(
                data["validation"], f"{where}.validation"),
            conversion_seconds=checks.number(data.get("conversion_seconds"), f"{where}.conversion_seconds"),
            **{name: checks.text(data.get(name), f"{where}.{name}") for name in _OPTIONAL_TEXT},
            **{name: None if data.get(name) is None else checks.flag(data[name], f"{where}.{name}")
               for name in _OPTIONAL_FLAGS},
            **objects,
            opset=checks.integer(data.get("opset"), f"{where}.opset"),
            static_batch=checks.integer(data.get("static_batch"), f"{where}.static_batch"),
            extra={k: v for k, v in data.items() if k not in known},
        )

    def moved(self, path: str) -> ArtifactEntry:
        """The same entry under another path (a pack member, an absolute path)."""
        return replace(self, path=path)


@dataclass(frozen=True)
class Manifest:
    """Every artifact exported from a run, in the order they were (last) written."""

    artifacts: tuple[ArtifactEntry, ...] = ()

    def to_dict(self) -> dict:
        return {"artifacts": [entry.to_dict() for entry in self.artifacts]}

    @classmethod
    def from_dict(cls, data) -> Manifest:
        data = checks.obj(data, "top level")
        if not isinstance(data.get("artifacts"), list):
            raise ContractError("no 'artifacts' list of entries with a path and a sha256")
        return cls(tuple(ArtifactEntry.from_dict(entry, f"artifacts[{i}]")
                         for i, entry in enumerate(data["artifacts"])))

    def with_entry(self, entry: ArtifactEntry) -> Manifest:
        """Add ``entry``, replacing any entry with the same path."""
        return Manifest(tuple(a for a in self.artifacts if a.path != entry.path) + (entry,))

    def without(self, paths) -> Manifest:
        """Every entry but those whose path is in ``paths``."""
        drop = set(paths)
        return Manifest(tuple(a for a in self.artifacts if a.path not in drop))

    @classmethod
    def load(cls, path: str | Path) -> Manifest:
        """The manifest at ``path`` (empty if there is none yet); UserError naming it if it is unreadable."""
        from exporter.errors import UserError
        from exporter.fileio import read_json

        path = Path(path)
        if not path.exists():
            return cls()
        try:
            return cls.from_dict(read_json(path, "manifest"))
        except ContractError as exc:
            raise UserError(f"{path}: {exc}") from None

    def save(self, path: str | Path) -> Path:
        from exporter.fileio import write_json_atomic

        return write_json_atomic(path, self.to_dict())
