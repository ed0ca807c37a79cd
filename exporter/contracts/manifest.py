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
from exporter.contracts.export_spec import ExportSpec
from exporter.drift import miou_drop_points
from exporter.parameters import ArtifactFormat

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
        return miou_drop_points(self.miou, self.miou_reference)

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


@dataclass(frozen=True)
class FallbackStep:
    """One attempt of ``--auto-fallback``: the layers kept float, and how that file compared with Keras."""

    float_layers: tuple[str, ...]
    miou_drop: float
    agreement: float
    size_bytes: int
    within: bool

    def to_dict(self) -> dict:
        return {"float_layers": list(self.float_layers), "miou_drop": round(self.miou_drop, 4),
                "agreement": round(self.agreement, 6), "size_bytes": self.size_bytes, "within": self.within}

    @classmethod
    def from_dict(cls, data, where: str = "step") -> FallbackStep:
        data = checks.obj(data, where)
        return cls(float_layers=checks.texts(data.get("float_layers"), f"{where}.float_layers") or (),
                   miou_drop=checks.number(data.get("miou_drop"), f"{where}.miou_drop", required=True),
                   agreement=checks.number(data.get("agreement"), f"{where}.agreement", required=True),
                   size_bytes=checks.integer(data.get("size_bytes"), f"{where}.size_bytes", required=True),
                   within=checks.flag(data.get("within"), f"{where}.within"))


@dataclass(frozen=True)
class FallbackRecord:
    """What ``--auto-fallback`` chose (Keras layer names kept in higher precision: float, or int16 islands with
    ``--integer-only``), why, and every attempt on the way."""

    float_layers: tuple[str, ...]
    reason: str
    steps: tuple[FallbackStep, ...] = ()
    precision: str = "float"  # what the chosen layers' tensors are kept in: float, or int16

    def to_dict(self) -> dict:
        return {"float_layers": list(self.float_layers), "reason": self.reason, "precision": self.precision,
                "steps": [step.to_dict() for step in self.steps]}

    @classmethod
    def from_dict(cls, data, where: str = "fallback") -> FallbackRecord:
        data = checks.obj(data, where)
        return cls(float_layers=checks.texts(data.get("float_layers"), f"{where}.float_layers") or (),
                   reason=checks.text(data.get("reason"), f"{where}.reason") or "",
                   precision=checks.text(data.get("precision", "float"), f"{where}.precision") or "float",
                   steps=tuple(FallbackStep.from_dict(step, f"{where}.steps[{i}]")
                               for i, step in enumerate(checks.items(data.get("steps", []), f"{where}.steps"))))


# Optional entry fields, in the order they are written; absent (None) ones are left out of the JSON.
_OPTIONAL_OBJECTS = ("input_quantization", "calibration")
# What entries written before the spec was stored whole kept beside it, one field each.
_FLAT_SPEC_FIELDS = ("io", "argmax", "float_head", "int8_scheme", "opset", "static_batch")


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
    spec: ExportSpec | None = None  # what was exported (None: the Keras model itself)
    input_quantization: Mapping[str, object] | None = None
    calibration: Mapping[str, object] | None = None
    fallback: FallbackRecord | None = None  # --auto-fallback: the layers it keeps float, and why
    extra: Mapping[str, object] = field(default_factory=dict)  # keys this version does not know, kept

    @property
    def name(self) -> str:
        return Path(self.path).name

    def to_dict(self) -> dict:
        entry = {"path": self.path, "format": self.format, "precision": self.precision,
                 "input_dtype": self.input_dtype, "output": self.output, "size_bytes": self.size_bytes,
                 "sha256": self.sha256, "validation": self.validation.to_dict() if self.validation else None}
        for name in ("conversion_seconds", "source_model_sha256"):
            if getattr(self, name) is not None:
                entry[name] = getattr(self, name)
        if self.spec is not None:
            entry["spec"] = self.spec.to_dict()
        for name in _OPTIONAL_OBJECTS:
            if getattr(self, name) is not None:
                entry[name] = dict(getattr(self, name))
        if self.fallback is not None:
            entry["fallback"] = self.fallback.to_dict()
        return {**entry, **self.extra}

    @classmethod
    def from_dict(cls, data, where: str = "entry") -> ArtifactEntry:
        data = checks.obj(data, where)
        for required in ("path", "sha256"):
            if not isinstance(data.get(required), str):
                raise ContractError(f"{where}: no '{required}' string")
        checks.path(data["path"], f"{where}.path")
        for required in ("format", "precision", "size_bytes"):
            if required not in data:
                raise ContractError(f"{where}: no '{required}'")
        known = {f.name for f in fields(cls)} - {"extra"} | set(_FLAT_SPEC_FIELDS)
        fallback = None if data.get("fallback") is None else FallbackRecord.from_dict(data["fallback"],
                                                                                       f"{where}.fallback")
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
            source_model_sha256=checks.text(data.get("source_model_sha256"), f"{where}.source_model_sha256"),
            spec=_stored_spec(data, fallback, where),
            **{name: checks.obj(data[name], f"{where}.{name}") if data.get(name) is not None else None
               for name in _OPTIONAL_OBJECTS},
            fallback=fallback,
            extra={k: v for k, v in data.items() if k not in known},
        )

    def moved(self, path: str) -> ArtifactEntry:
        """The same entry under another path (a pack member, an absolute path)."""
        return replace(self, path=path)


def _stored_spec(data: dict, fallback: FallbackRecord | None, where: str) -> ExportSpec | None:
    """The entry's spec: stored whole, or (an entry from before) rebuilt from the fields kept beside it."""
    if data.get("spec") is not None:
        spec = ExportSpec.from_dict(data["spec"], f"{where}.spec")
        if (spec.format.value, spec.quantization.value) != (data["format"], data["precision"]):
            raise ContractError(f"{where}.spec: says {spec.format.value} {spec.quantization.value}, the entry "
                                f"{data['format']} {data['precision']}")
        return spec
    if data["format"] not in ArtifactFormat.values():
        return None  # the Keras model, or a format this version does not export
    flat = {name: data[name] for name in _FLAT_SPEC_FIELDS if data.get(name) is not None}
    scope = {"head": flat.pop("float_head", False), "layers": list(fallback.float_layers) if fallback else []}
    try:  # (whether metadata was embedded was not recorded: such an entry reads as metadata on)
        return ExportSpec.from_dict({"format": data["format"], "quantization": data["precision"], **flat,
                                     "float_scope": scope})
    except ContractError as exc:
        fields = ", ".join(["format", "precision", *flat, *(["fallback"] if fallback else [])])
        raise ContractError(f"{where}: its fields ({fields}) do not describe an export this version knows "
                            f"({str(exc).removeprefix('spec: ')})") from None


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
