"""What an export writes: ``ExportSpec`` (format, precision and every option that changes the file), the float
scope it keeps in higher precision, and the one table of which options each format takes.

The manifest stores the whole spec with each artifact, so a file can be described, re-made or ranked from its
entry. ``ExportSpec`` checks its combination once, when it is made, before any slow work. Standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from exporter.contracts import checks
from exporter.contracts.checks import ContractError
from exporter.errors import UserError
from exporter.parameters import ONNX_OPSET, ONNX_OPSETS, ArtifactFormat, Int8Scheme, IOType, Quantization


@dataclass(frozen=True)
class FloatScope:
    """The parts of an int8 model kept in float, named format-neutrally: Keras layer names and the classifier
    head (the last convolution, with any in-graph argmax after it). Each format backend resolves it to its own
    tensors or nodes."""

    layers: tuple[str, ...] = ()
    head: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", (self.layers,) if isinstance(self.layers, str) else tuple(self.layers))

    def __bool__(self) -> bool:
        return self.head or bool(self.layers)

    def to_dict(self) -> dict:
        return {"layers": list(self.layers), "head": self.head}

    @classmethod
    def from_dict(cls, data, where: str = "float_scope") -> FloatScope:
        data = checks.obj(data, where)
        return cls(layers=checks.texts(data.get("layers"), f"{where}.layers") or (),
                   head=checks.flag(data.get("head"), f"{where}.head"))


@dataclass(frozen=True)
class FormatOptions:
    """What one format takes: its precisions, and the ``ExportSpec`` options that mean something for it."""

    quantizations: tuple[Quantization, ...]
    options: frozenset[str]


# The one table of formats and their valid options (options absent from a format's set must keep their default).
FORMAT_OPTIONS: dict[ArtifactFormat, FormatOptions] = {
    ArtifactFormat.TFLITE: FormatOptions(
        quantizations=tuple(Quantization),
        options=frozenset({"io", "argmax", "metadata", "static_batch", "float_scope", "equalize", "integer_only",
                           "int16_layers", "qat"})),
    ArtifactFormat.ONNX: FormatOptions(
        quantizations=(Quantization.FP32, Quantization.FP16, Quantization.INT8),
        options=frozenset({"opset", "int8_scheme", "float_scope", "equalize", "int16_layers", "integer_only", "qat"})),
}
# The CLI flag of each format-specific option, for messages.
OPTION_FLAGS = {"io": "--io", "argmax": "--argmax", "metadata": "--no-metadata", "static_batch": "--static-batch",
                "float_scope": "--float-head/--auto-fallback", "opset": "--opset", "int8_scheme": "--int8-scheme",
                "equalize": "--equalize", "integer_only": "--integer-only", "int16_layers": "--int16/--recipe",
                "qat": "unet-export qat"}


@dataclass(frozen=True)
class ExportSpec:
    """One artifact to write: format, precision and the options that change the file."""

    format: ArtifactFormat
    quantization: Quantization = Quantization.FP32
    io: IOType = IOType.FLOAT32  # TFLite full int8 only
    argmax: bool = False  # TFLite: an in-graph argmax, the output is an N×H×W uint8 class map
    metadata: bool = True  # TFLite: embed labels and normalisation (MediaPipe, LiteRT task libraries)
    opset: int | None = None  # ONNX: None = parameters.ONNX_OPSET
    float_scope: FloatScope = FloatScope()  # int8 only: what stays float
    int8_scheme: Int8Scheme = Int8Scheme.U8S8  # ONNX int8 only
    # TFLite: a fixed batch (e.g. 1) instead of a dynamic one. GPU delegates and LiteRT's GPU accelerator take
    # static shapes only: with a dynamic batch the transposed convs' output shapes are computed at run time
    # and the GPU refuses the graph ("only supports static-sized tensors"). Mobile apps run batch 1 anyway.
    static_batch: int | None = None
    # int8: cross-layer equalization and bias correction of the Keras model before conversion (export/equalize.py)
    equalize: bool = False
    # int8: no float op in the file (TFLite; ONNX: no compute node reads a float tensor), read back and checked
    # when written; nothing kept float
    integer_only: bool = False
    # int8: Keras layers whose output tensors run in 16 bits with int8 weights (A16W8 islands: the producer, what
    # passes the tensor on unchanged, and its readers; export/tflite_islands.py, onnx_graph.island_tensors)
    int16_layers: tuple[str, ...] = ()
    # int8 from a quantization-aware fine-tuned model's learned ranges (export/qat.py)
    qat: bool = False

    def __post_init__(self) -> None:
        layers = self.int16_layers
        object.__setattr__(self, "int16_layers", (layers,) if isinstance(layers, str) else tuple(layers))
        for name, enum in (("format", ArtifactFormat), ("quantization", Quantization), ("io", IOType),
                           ("int8_scheme", Int8Scheme)):
            object.__setattr__(self, name, enum.parse(getattr(self, name), name))
        if not isinstance(self.float_scope, FloatScope):
            raise UserError(f"float_scope: expected a FloatScope, got {type(self.float_scope).__name__}")
        self._check_format()
        if self.float_scope and self.quantization is not Quantization.INT8:
            what = "--float-head" if self.float_scope.head else "keeping layers float"
            raise UserError(f"{what} needs --quantize int8, not {self.quantization.value}")
        if self.int8_scheme is not Int8Scheme.U8S8 and self.quantization is not Quantization.INT8:
            raise UserError("--int8-scheme is for ONNX with --quantize int8")
        if self.static_batch is not None and int(self.static_batch) < 1:
            raise UserError("--static-batch must be >= 1")
        low, high = ONNX_OPSETS
        if self.opset is not None and not low <= self.opset <= high:
            raise UserError(f"--opset {self.opset}: expected {low} to {high}")
        if self.static_batch and self.static_batch > 1 and self.quantization.needs_calibration:
            raise UserError(f"--static-batch {self.static_batch} with {self.quantization.value}: calibration feeds "
                            "one frame at a time; use --static-batch 1")
        if self.io is not IOType.FLOAT32 and self.quantization is not Quantization.INT8:
            raise UserError(f"--io {self.io.value} needs full-integer quantization (--quantize int8), "
                            f"not {self.quantization.value}")
        self._check_integer_options()

    def _check_integer_options(self) -> None:
        """--equalize, --integer-only and int16 islands: int8, and nothing kept float beside them."""
        for name, used in (("--equalize", self.equalize), ("--integer-only", self.integer_only),
                           ("int16 islands (--int16, --recipe)", bool(self.int16_layers))):
            if used and self.quantization is not Quantization.INT8:
                raise UserError(f"{name} needs --quantize int8, not {self.quantization.value}")
        if (self.integer_only or self.int16_layers) and self.float_scope:
            raise UserError("--integer-only and int16 islands keep nothing float: drop --float-head (int16 islands "
                            "are the integer way to keep a layer precise)")
        tflite = self.format is ArtifactFormat.TFLITE
        if tflite and (self.integer_only or self.int16_layers) and self.io is IOType.FLOAT32:
            raise UserError("--integer-only and int16 islands take integer input (a float input is a float QUANTIZE "
                            "op): --io uint8 (camera bytes) or --io int8")
        if self.qat and (self.quantization is not Quantization.INT8 or self.float_scope or self.int16_layers
                         or self.equalize):
            raise UserError("a QAT export is full int8 from the learned ranges: no float layers, int16 islands or "
                            "--equalize")
        if tflite and self.int16_layers and not self.static_batch:
            raise UserError("int16 islands need a fixed batch (--static-batch 1): ai-edge-quantizer leaves a dynamic "
                            "batch's shape arithmetic in float")

    def _check_format(self) -> None:
        """The format takes this precision, and every option it does not take keeps its default."""
        table = FORMAT_OPTIONS[self.format]
        if self.quantization not in table.quantizations:
            raise UserError(f"{self.format.title} export supports {', '.join(q.value for q in table.quantizations)}, "
                            f"not {self.quantization.value}")
        default = ExportSpec.__dataclass_fields__
        foreign = [f.name for f in fields(self) if f.name in OPTION_FLAGS and f.name not in table.options
                   and getattr(self, f.name) != default[f.name].default]
        if foreign:
            takers = "/".join(fmt.title for fmt, other in FORMAT_OPTIONS.items() if foreign[0] in other.options)
            raise UserError(f"{', '.join(OPTION_FLAGS[name] for name in foreign)} {'is' if len(foreign) == 1 else 'are'} "
                            f"for {takers} only ({takers} options are not taken by {self.format.title} export)")

    @property
    def float_head(self) -> bool:
        return self.float_scope.head

    @property
    def onnx_opset(self) -> int:
        return self.opset or ONNX_OPSET

    @property
    def file_name(self) -> str:
        """Default name: unet_<precision>[_floathead][_fallback|_int16|_qat][_eq][_<scheme>][_<io>io][_argmax][_b<N>]
        .<format>."""
        tag = "fallback" if self.float_scope.layers else "int16" if self.int16_layers else "qat" if self.qat else None
        return self.file_name_with(tag)

    def file_name_with(self, tag: str | None) -> str:
        """The default name with ``tag`` after the precision and float-head parts (None: no tag)."""
        parts = ["unet", self.quantization.value]
        if self.float_scope.head:
            parts.append("floathead")
        if tag:
            parts.append(tag)
        if self.equalize:
            parts.append("eq")
        if self.int8_scheme is not Int8Scheme.U8S8:
            parts.append(self.int8_scheme.value.replace("-", ""))
        if self.io is not IOType.FLOAT32:
            parts.append(f"{self.io.value}io")
        if self.argmax:
            parts.append("argmax")
        if self.static_batch:
            parts.append(f"b{self.static_batch}")
        return "_".join(parts) + f".{self.format.value}"

    @property
    def precision_label(self) -> str:
        """The precision in words (for descriptions embedded in the file)."""
        if self.float_scope.layers:
            return f"{self.quantization.value} with {len(self.float_scope.layers)} layer(s) kept float"
        if self.int16_layers:
            return f"{self.quantization.value} with {len(self.int16_layers)} int16 tensor island(s)"
        if self.qat:
            return f"{self.quantization.value} from quantization-aware fine-tuning"
        return f"{self.quantization.value} with a float classifier head" if self.float_head else self.quantization.value

    @property
    def embeds_in_apps(self) -> bool:
        """A TFLite file of the families apps embed: a fixed batch (GPU delegates, LiteRT.js and MediaPipe's GPU
        path take static shapes only), self-describing (metadata; not int8 I/O, which MediaPipe cannot take), a
        class map only with camera bytes in, no layer picked out to stay float."""
        return (self.format is ArtifactFormat.TFLITE and bool(self.static_batch) and self.metadata
                and self.io is not IOType.INT8
                and (not self.argmax or self.io is IOType.UINT8) and not self.float_scope.layers
                and self.quantization in (Quantization.INT8, Quantization.FP16, Quantization.FP32))

    def app_preference(self) -> tuple:
        """Sort key: the file to embed in an app first. Integer before fp16 before fp32; within a precision, camera
        bytes in, a class map out, a float head."""
        rank = {Quantization.INT8: 0, Quantization.FP16: 1, Quantization.FP32: 2}.get(self.quantization, 3)
        return (rank, self.io is not IOType.UINT8, not self.argmax, not self.float_head)

    def to_dict(self) -> dict:
        """The spec as JSON (every field; the manifest stores it with each artifact)."""
        return {"format": self.format.value, "quantization": self.quantization.value, "io": self.io.value,
                "argmax": self.argmax, "metadata": self.metadata, "opset": self.opset,
                "float_scope": self.float_scope.to_dict(), "int8_scheme": self.int8_scheme.value,
                "static_batch": self.static_batch, "equalize": self.equalize, "integer_only": self.integer_only,
                "int16_layers": list(self.int16_layers), "qat": self.qat}

    @classmethod
    def from_dict(cls, data, where: str = "spec") -> ExportSpec:
        """A stored spec, checked (ContractError naming the field for a damaged one)."""
        data = checks.obj(data, where)
        try:
            return cls(
                format=checks.text(data.get("format"), f"{where}.format", required=True),
                quantization=checks.text(data.get("quantization", "fp32"), f"{where}.quantization", required=True),
                io=checks.text(data.get("io", "float32"), f"{where}.io", required=True),
                argmax=checks.flag(data.get("argmax"), f"{where}.argmax"),
                metadata=checks.flag(data.get("metadata"), f"{where}.metadata", default=True),
                opset=checks.integer(data.get("opset"), f"{where}.opset"),
                float_scope=FloatScope.from_dict(data.get("float_scope", {}), f"{where}.float_scope"),
                int8_scheme=checks.text(data.get("int8_scheme", "u8s8"), f"{where}.int8_scheme", required=True),
                static_batch=checks.integer(data.get("static_batch"), f"{where}.static_batch"),
                equalize=checks.flag(data.get("equalize"), f"{where}.equalize"),
                integer_only=checks.flag(data.get("integer_only"), f"{where}.integer_only"),
                int16_layers=checks.texts(data.get("int16_layers"), f"{where}.int16_layers") or (),
                qat=checks.flag(data.get("qat"), f"{where}.qat"))
        except UserError as exc:
            raise ContractError(f"{where}: {exc}") from None


HEAD = FloatScope(head=True)  # --float-head: the classifier head stays float


RECIPE_KIND = "unet-export int8 recipe"
RECIPE_FIELDS = ("equalize", "integer_only", "int16_layers", "float_layers", "float_head")


def recipe_of(spec: ExportSpec) -> dict:
    """The precision chosen per tensor (int16 islands, float layers, the float head) and the equalization of an
    int8 spec, as a file ``--recipe`` applies again (like ai-edge-quantizer's saved recipes, but naming Keras
    layers, so that it outlives a re-conversion's tensor names)."""
    return {"kind": RECIPE_KIND, "version": 1, "format": spec.format.value, "quantization": spec.quantization.value,
            "equalize": spec.equalize, "integer_only": spec.integer_only, "int16_layers": list(spec.int16_layers),
            "float_layers": list(spec.float_scope.layers), "float_head": spec.float_scope.head}


def read_recipe(path) -> dict:
    """A recipe file's choices as ExportSpec fields (UserError naming the file and the problem)."""
    import json
    from pathlib import Path

    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: recipe file not found") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"{path}: not a JSON recipe ({exc.__class__.__name__})") from None
    try:
        data = checks.obj(data, str(path))
        if data.get("kind") != RECIPE_KIND:
            raise ContractError(f"{path}: not a {RECIPE_KIND} (kind {data.get('kind')!r})")
        unknown = sorted(set(data) - {"kind", "version", "format", "quantization", *RECIPE_FIELDS})
        if unknown:
            raise ContractError(f"{path}: unknown field {unknown[0]!r}")
        return {"equalize": checks.flag(data.get("equalize"), f"{path}: equalize"),
                "integer_only": checks.flag(data.get("integer_only"), f"{path}: integer_only"),
                "int16_layers": checks.texts(data.get("int16_layers"), f"{path}: int16_layers") or (),
                "float_scope": FloatScope(checks.texts(data.get("float_layers"), f"{path}: float_layers") or (),
                                          checks.flag(data.get("float_head"), f"{path}: float_head"))}
    except ContractError as exc:
        raise UserError(str(exc)) from None
