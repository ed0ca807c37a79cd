"""The TFLite backend: LiteRT validates it, MediaPipe's segmenter metadata is embedded, ops read back by LiteRT."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from exporter.contracts.export_spec import ExportSpec
from exporter.errors import UserError
from exporter.export.backend import ArtifactLayers, Converted, FormatBackend, ModelFacts
from exporter.export.calibration import CalibrationSet
from exporter.export.layers import KerasLayer
from exporter.parameters import ArtifactFormat, Quantization

INT8_INPUT_NOTE = ("no TFLite metadata: MediaPipe's writer and ImageSegmenter take float32 or uint8 input only; "
                   "use --io uint8 for a self-describing mobile model")


def integer_only_note(model_bytes: bytes, name: str) -> str:
    """What an integer-only file holds, read back op by op; UserError naming the float ops if any is float."""
    from exporter.export import tflite_graph

    floats = tflite_graph.float_ops(model_bytes)
    if floats:
        raise UserError(f"{name}: not integer-only: {len(floats)} op(s) read or write float tensors "
                        f"({'; '.join(floats[:3])}) (nothing written)")
    return f"integer-only, read back: {tflite_graph.op_summary(model_bytes)}"


class TFLiteBackend(FormatBackend):
    format = ArtifactFormat.TFLITE
    validating_runtime = "litert"

    def notes(self, spec: ExportSpec) -> list[str]:
        from exporter.export.tflite_export import DYNAMIC_NOTE, DYNAMIC_OLD_RUNTIMES, INT16X8_NOTE
        from exporter.export.tflite_metadata import ARGMAX_NOTE

        dynamic = [DYNAMIC_OLD_RUNTIMES] if spec.static_batch else [DYNAMIC_NOTE, DYNAMIC_OLD_RUNTIMES]
        notes = {Quantization.DYNAMIC: dynamic, Quantization.INT16X8: [INT16X8_NOTE]}.get(spec.quantization, [])
        if spec.argmax:
            notes.append(f"for plain LiteRT apps; {ARGMAX_NOTE}")
        return notes

    def convert(self, model, spec: ExportSpec, calibration: CalibrationSet | None, facts: ModelFacts,
                name: str) -> Converted:
        from exporter.export.tflite_export import convert_tflite
        from exporter.export.tflite_graph import io_types

        model_bytes = convert_tflite(model, spec, calibration)
        input_dtype, output, input_quantization = io_types(model_bytes)
        notes = (integer_only_note(model_bytes, name),) if spec.integer_only else ()
        if spec.metadata and input_dtype == "int8":
            notes, spec = (*notes, INT8_INPUT_NOTE), replace(spec, metadata=False)  # recorded as what was written
        elif spec.metadata:
            from exporter.export.tflite_metadata import add_segmenter_metadata

            model_bytes = add_segmenter_metadata(
                model_bytes, facts.labels, name=name,
                description=facts.describe(spec, input_dtype, output),
                normalization=(0.0, 255.0) if input_dtype.startswith("float") else None, class_map=spec.argmax)
        return Converted(lambda path: Path(path).write_bytes(model_bytes), spec, input_dtype, output,
                         input_quantization, tuple(notes))

    def read_layers(self, artifact: Path, layers: list[KerasLayer], images: np.ndarray) -> ArtifactLayers:
        from exporter.export import tflite_graph

        model_bytes = Path(artifact).read_bytes()
        try:
            tflite_graph.ops(model_bytes)
        except (ValueError, RuntimeError) as exc:  # LiteRT's message for a file that is not a model
            raise UserError(f"{artifact}: not a readable .tflite ({str(exc).splitlines()[0][:160]})") from None
        matched = tflite_graph.match(layers, model_bytes, str(artifact))
        return ArtifactLayers(
            ops=[op.op for op in matched], tensors=[op.out.name for op in matched],
            precisions=["int16" if op.out.dtype == "int16" else "int8" if op.out.dtype in ("int8", "uint8") else "float"
                        for op in matched],
            outputs=tflite_graph.layer_outputs(model_bytes, matched, images),
            weights=tflite_graph.filters(model_bytes, matched))
