"""Export modes: one Enum per choice; the CLI's click choices come from these."""

from __future__ import annotations

from enum import Enum, StrEnum


class Quantization(StrEnum):
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


class IOType(StrEnum):
    """Input/output tensor type of a quantized TFLite model."""

    FLOAT32 = "float32"
    INT8 = "int8"
    UINT8 = "uint8"  # camera bytes 0..255 go straight in (input scale 1/255, zero point 0)


def choices(enum: type[Enum], allowed=None) -> list[str]:
    """Values of an Enum, for click.Choice."""
    return [m.value for m in (allowed or enum)]
