"""Every user-facing choice as a string Enum, and the defaults several commands share: the one source the CLI's
choices and defaults come from (option objects hold the rest: ``TrainConfig``, ``ExportSpec``, ``BenchSettings``).

Standard library only: host and device import it.
"""

from __future__ import annotations

from enum import Enum


class Choice(str, Enum):
    """A string Enum (``enum.StrEnum`` is Python 3.11+): members compare, print and format as their value."""

    def __str__(self) -> str:
        return self.value

    __format__ = str.__format__

    @classmethod
    def values(cls, members=None) -> list[str]:
        """The values of ``members`` (default: every member), for click.Choice and messages."""
        return [m.value for m in (cls if members is None else members)]

    @classmethod
    def parse(cls, value, what: str | None = None):
        """The member for ``value``; a UserError naming the known values for anything else."""
        from exporter.errors import UserError

        try:
            return cls(value)
        except ValueError:
            raise UserError(f"{what or cls.__name__}: expected one of {', '.join(cls.values())}, "
                            f"got {value!r}") from None


class ArtifactFormat(Choice):
    """What an export writes."""

    TFLITE = "tflite"
    ONNX = "onnx"

    @property
    def title(self) -> str:
        """The format's name in prose."""
        return {"tflite": "TFLite", "onnx": "ONNX"}[self.value]


KERAS_FORMAT = "keras"  # the trained model itself, as a bench row
MODEL_FORMATS = (KERAS_FORMAT, *ArtifactFormat.values())


class Quantization(Choice):
    """The precision of an exported artifact."""

    FP32 = "fp32"
    FP16 = "fp16"
    DYNAMIC = "dynamic"  # dynamic-range int8 weights, float activations
    INT8 = "int8"  # full integer, calibrated
    INT16X8 = "int16x8"  # int16 activations, int8 weights, calibrated

    @property
    def needs_calibration(self) -> bool:
        return self in (Quantization.INT8, Quantization.INT16X8)


class IOType(Choice):
    """Input/output tensor type of a quantized TFLite model."""

    FLOAT32 = "float32"
    INT8 = "int8"
    UINT8 = "uint8"  # camera bytes 0..255 go straight in (input scale 1/255, zero point 0)


class Int8Scheme(Choice):
    """ONNX int8 types. x86 CPUs without VNNI sum u8×s8 products in 16 bits (VPMADDUBSW) and saturate;
    reduce-range (7-bit weights) and u8u8 are ONNX Runtime's remedies (its quantization docs)."""

    U8S8 = "u8s8"  # ONNX Runtime's default: uint8 activations, int8 weights
    REDUCE_RANGE = "reduce-range"
    U8U8 = "u8u8"


class Device(Choice):
    CPU = "cpu"
    GPU = "gpu"


class LRSchedule(Choice):
    CONSTANT = "constant"  # Adam at the learning rate throughout
    COSINE = "cosine"  # linear warm-up to the learning rate, then cosine decay to zero at the last epoch


class TrainPrecision(Choice):
    """Keras dtype policy for training (float32 variables, classifier and loss either way)."""

    FLOAT32 = "float32"
    MIXED_FLOAT16 = "mixed_float16"
    MIXED_BFLOAT16 = "mixed_bfloat16"


class Strategy(Choice):
    NONE = "none"  # one device, the TensorFlow backend
    DATA_PARALLEL = "data-parallel"  # every device and worker process, Keras' JAX backend


# The seed model and its data (CARLA frames, 23 classes).
INPUT_SIZE = (96, 128)
N_CLASSES = 23
MAX_CLASSES = 256  # masks hold 8-bit class ids

# Frames an export, its validation and the pack use (class-balanced from the training side / held out).
CALIBRATION_SAMPLES = 256
MIN_CALIBRATION_SAMPLES = 100
VALIDATION_SAMPLES = 48
EVAL_FRAMES = 24
REPORT_FRAMES = 8  # quant-report: held-out frames whose layer outputs are compared
SYNTH_COUNT = 800  # data synth: frames written

ONNX_OPSET = 18
ONNX_OPSETS = (13, 21)  # the range --opset accepts
