"""The one place that picks an export format's backend (``export/backend.py`` is the interface)."""

from __future__ import annotations

from pathlib import Path

from exporter.errors import UserError
from exporter.export.backend import FormatBackend
from exporter.export.onnx_backend import OnnxBackend
from exporter.export.tflite_backend import TFLiteBackend
from exporter.parameters import ArtifactFormat

BACKENDS: dict[ArtifactFormat, type[FormatBackend]] = {ArtifactFormat.TFLITE: TFLiteBackend,
                                                       ArtifactFormat.ONNX: OnnxBackend}


def backend_for(fmt: str | ArtifactFormat) -> FormatBackend:
    """The backend of an export format (``tflite``, ``onnx``, or a file suffix such as ``.tflite``)."""
    try:
        return BACKENDS[ArtifactFormat(str(fmt).lower().lstrip("."))]()
    except ValueError:
        raise UserError(f"{fmt}: not an export format ({', '.join(ArtifactFormat.values())})") from None


def backend_of(path: str | Path) -> FormatBackend:
    """The backend of an artifact file, by its suffix (UserError naming the file for any other)."""
    try:
        return backend_for(Path(path).suffix)
    except UserError:
        suffixes = ", ".join(f".{fmt}" for fmt in ArtifactFormat.values())
        raise UserError(f"{path}: not an exported artifact ({suffixes})") from None
