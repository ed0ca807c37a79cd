"""What to export: the choices as string Enums (the CLI's click choices come from them) and ``ExportSpec``.

``ExportSpec`` checks its combination once, when it is made, before any slow work: a float head or a
uint8/int8 I/O needs full int8, ONNX has fp32/fp16/int8 and no I/O type or argmax of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from exporter.errors import UserError


class Choice(str, Enum):
    """A string Enum (``enum.StrEnum`` is Python 3.11+): members compare, print and format as their value."""

    def __str__(self) -> str:
        return self.value

    __format__ = str.__format__


class Quantization(Choice):
    """TFLite/ONNX precision of an exported artifact."""

    FP32 = "fp32"
    FP16 = "fp16"
    DYNAMIC = "dynamic"  # dynamic-range int8 weights, float activations
    INT8 = "int8"  # full integer, calibrated
    INT16X8 = "int16x8"  # int16 activations, int8 weights, calibrated

    @property
    def needs_calibration(self) -> bool:
        return self in (Quantization.INT8, Quantization.INT16X8)


ONNX_QUANTIZATIONS = (Quantization.FP32, Quantization.FP16, Quantization.INT8)
INT8_SCHEMES = ("u8s8", "reduce-range", "u8u8")


class IOType(Choice):
    """Input/output tensor type of a quantized TFLite model."""

    FLOAT32 = "float32"
    INT8 = "int8"
    UINT8 = "uint8"  # camera bytes 0..255 go straight in (input scale 1/255, zero point 0)


class ArtifactFormat(Choice):
    TFLITE = "tflite"
    ONNX = "onnx"


def choices(enum: type[Enum], allowed=None) -> list[str]:
    """Values of an Enum, for click.Choice."""
    return [m.value for m in (allowed or enum)]


@dataclass(frozen=True)
class ExportSpec:
    """One artifact to write: format, precision and the options that change the file."""

    format: ArtifactFormat
    quantization: Quantization = Quantization.FP32
    io: IOType = IOType.FLOAT32  # TFLite full int8 only
    argmax: bool = False  # TFLite: an in-graph argmax, the output is an N×H×W uint8 class map
    float_head: bool = False  # int8 only: the final 1×1 classifier conv stays float
    metadata: bool = True  # TFLite: embed labels and normalisation (MediaPipe, LiteRT task libraries)
    opset: int | None = None  # ONNX: None = onnx_export.DEFAULT_OPSET
    float_layers: tuple[str, ...] = ()  # int8 only: Keras layers (conv / transposed conv) kept in float
    # ONNX int8 only: u8s8 (ORT's default: uint8 activations, int8 weights), reduce-range (u8s8 with 7-bit
    # weights) or u8u8. x86 CPUs without VNNI sum u8×s8 products in 16 bits (VPMADDUBSW) and saturate;
    # reduce-range and u8u8 are ONNX Runtime's remedies (its quantization docs).
    int8_scheme: str = "u8s8"
    # TFLite: a fixed batch (e.g. 1) instead of a dynamic one. GPU delegates and LiteRT's GPU accelerator take
    # static shapes only: with a dynamic batch the transposed convs' output shapes are computed at run time
    # and the GPU refuses the graph ("only supports static-sized tensors"). Mobile apps run batch 1 anyway.
    static_batch: int | None = None

    @property
    def selective(self) -> bool:
        """Int8 with some layers kept float (the head, or named layers)."""
        return self.float_head or bool(self.float_layers)

    def __post_init__(self) -> None:
        for name, enum in (("format", ArtifactFormat), ("quantization", Quantization), ("io", IOType)):
            try:
                object.__setattr__(self, name, enum(getattr(self, name)))
            except ValueError:
                raise UserError(f"unknown {name} {getattr(self, name)!r}; known: {', '.join(choices(enum))}") from None
        object.__setattr__(self, "float_layers", tuple(self.float_layers))
        if self.selective and self.quantization is not Quantization.INT8:
            what = "--float-head" if self.float_head else "keeping layers float"
            raise UserError(f"{what} needs --quantize int8, not {self.quantization.value}")
        if self.int8_scheme not in INT8_SCHEMES:
            raise UserError(f"--int8-scheme: expected one of {', '.join(INT8_SCHEMES)}, got {self.int8_scheme!r}")
        if self.int8_scheme != "u8s8" and (self.format is not ArtifactFormat.ONNX
                                           or self.quantization is not Quantization.INT8):
            raise UserError("--int8-scheme is for ONNX with --quantize int8")
        if self.static_batch is not None and (self.format is not ArtifactFormat.TFLITE or int(self.static_batch) < 1):
            raise UserError("--static-batch is a TFLite option and must be >= 1")
        if self.static_batch and self.static_batch > 1 and self.quantization.needs_calibration:
            raise UserError(f"--static-batch {self.static_batch} with {self.quantization.value}: calibration feeds "
                            "one frame at a time; use --static-batch 1")
        if self.format is ArtifactFormat.ONNX:
            if self.quantization not in ONNX_QUANTIZATIONS:
                raise UserError(f"ONNX export supports {', '.join(q.value for q in ONNX_QUANTIZATIONS)}, "
                                f"not {self.quantization.value}")
            if self.io is not IOType.FLOAT32 or self.argmax:
                raise UserError("ONNX export has float32 I/O and logits out: --io and --argmax are TFLite options")
        elif self.io is not IOType.FLOAT32 and self.quantization is not Quantization.INT8:
            raise UserError(f"--io {self.io.value} needs full-integer quantization (--quantize int8), "
                            f"not {self.quantization.value}")

    @property
    def file_name(self) -> str:
        """Default name: unet_<precision>[_floathead][_fallback][_<io>io][_argmax][_b<N>].<format>."""
        return self.file_name_with("fallback" if self.float_layers else None)

    def file_name_with(self, tag: str | None) -> str:
        """The default name with ``tag`` after the precision and float-head parts (None: no tag)."""
        parts = ["unet", self.quantization.value]
        if self.float_head:
            parts.append("floathead")
        if tag:
            parts.append(tag)
        if self.int8_scheme != "u8s8":
            parts.append(self.int8_scheme.replace("-", ""))
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
        if self.float_layers:
            return f"{self.quantization.value} with {len(self.float_layers)} layer(s) kept float"
        return f"{self.quantization.value} with a float classifier head" if self.float_head else self.quantization.value
