"""One backend per export format: the interface.

A backend knows everything format-specific about an artifact: how to convert a Keras model to it (the float
scope resolved to its own tensors or nodes), what to tell the user before writing one, which runtime validates
it, what it adds to the manifest entry, and how to read its compute layers back for the quantization report.
``ExportContext`` (export/api.py), ``quant_report`` and ``--auto-fallback`` only talk to this interface, through
``export/formats.py``, the one place that picks a backend; a new format is a new backend module added there (and
its options to ``FORMAT_OPTIONS``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from exporter.contracts.export_spec import ExportSpec
from exporter.export.calibration import CalibrationSet
from exporter.export.layers import KerasLayer
from exporter.parameters import ArtifactFormat


@dataclass(frozen=True)
class ModelFacts:
    """What a converted file says about its model: labels, and a description for a given I/O."""

    labels: list[str]
    describe: Callable[[ExportSpec, str, str], str]  # (spec, input dtype, output kind) → description
    scores: str = "logits"  # what the model's scores are: "logits", or "softmax" probabilities


@dataclass(frozen=True)
class Converted:
    """A converted artifact, not yet written: how to write it, and the fields its manifest entry gains."""

    write: Callable[[Path], None]
    spec: ExportSpec  # what was made (defaults resolved, e.g. the ONNX opset)
    input_dtype: str = "float32"
    output: str = "logits"
    input_quantization: dict | None = None
    notes: tuple[str, ...] = ()  # what the user should know about this file


@dataclass(frozen=True)
class ArtifactLayers:
    """An artifact's compute layers matched to the Keras model's, in graph order, read back on frames."""

    ops: list[str]  # the artifact's op type per layer (CONV_2D, Conv, ...)
    tensors: list[str]  # the artifact's tensor holding each layer's output
    precisions: list[str]  # "int8" where the layer's output is quantized, else "float"
    outputs: list[np.ndarray] = field(repr=False)  # each layer's output, dequantized, N×H×W×C
    weights: list[np.ndarray | None] = field(repr=False)  # each conv's weights, dequantized, as Keras lays them out


class FormatBackend(ABC):
    """What one export format does; see the module docstring."""

    format: ArtifactFormat
    validating_runtime: str  # the runtime adapter an export is validated in

    def notes(self, spec: ExportSpec) -> list[str]:
        """What the user should know about ``spec`` before it is written."""
        return []

    @abstractmethod
    def convert(self, model, spec: ExportSpec, calibration: CalibrationSet | None, facts: ModelFacts,
                name: str) -> Converted:
        """Convert ``model`` (Keras) as ``spec`` says; ``name``: the file's name without its suffix."""

    @abstractmethod
    def read_layers(self, artifact: Path, layers: list[KerasLayer], images: np.ndarray) -> ArtifactLayers:
        """The artifact's compute layers (UserError when they do not line up with ``layers``)."""
