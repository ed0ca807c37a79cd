"""The ONNX backend: ONNX Runtime validates it, labels and normalisation go to ``metadata_props``, nodes are read
back by ONNX Runtime."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from exporter.contracts.export_spec import ExportSpec
from exporter.errors import UserError
from exporter.export.backend import ArtifactLayers, Converted, FormatBackend, ModelFacts
from exporter.export.calibration import CalibrationSet
from exporter.export.layers import KerasLayer
from exporter.parameters import ArtifactFormat, Int8Scheme, Quantization

NO_VNNI_NOTE = ("this CPU has no VNNI (int8 dot product: vpmaddubsw): ONNX Runtime's u8s8 kernels saturate 16-bit "
                "sums here, so this validation (and this CPU's users) see more drift than a VNNI CPU or LiteRT would; "
                "--int8-scheme reduce-range holds on both kinds (benchmarks/RESULTS.md)")


def integer_only_note(proto) -> str:
    """What an integer-only QDQ file holds: every convolution, pooling and concatenation reads dequantized integer
    tensors (an NPU runs the node units in integers); UserError naming the compute nodes left float."""
    from exporter.export import onnx_graph

    by_name = {node.name: node for node in proto.graph.node}
    producers = {out: node.op_type for node in proto.graph.node for out in node.output}

    def reads_integers(name: str) -> bool:
        node = by_name[name]  # every input of a Concat; the activation input of a Conv, ConvTranspose or MaxPool
        inputs = node.input if node.op_type == "Concat" else node.input[:1]
        return all(producers.get(tensor) == "DequantizeLinear" for tensor in inputs)

    nodes = onnx_graph.compute_nodes(proto)
    float_nodes = [node["name"] for node in nodes if not node["quantized"] or not reads_integers(node["name"])]
    if float_nodes:
        raise UserError(f"not integer-only: {len(float_nodes)} compute node(s) read float tensors "
                        f"({', '.join(float_nodes[:3])}) (nothing written)")
    return f"integer-only, read back: {len(nodes)} compute nodes, each reading dequantized integer tensors"


class OnnxBackend(FormatBackend):
    format = ArtifactFormat.ONNX
    validating_runtime = "onnxruntime"

    def notes(self, spec: ExportSpec) -> list[str]:
        if spec.quantization is Quantization.INT8 and spec.int8_scheme is Int8Scheme.U8S8:
            from exporter.bench.environment import int8_dot_product

            if int8_dot_product() == "vpmaddubsw":
                return [NO_VNNI_NOTE]
        return []

    def convert(self, model, spec: ExportSpec, calibration: CalibrationSet | None, facts: ModelFacts,
                name: str) -> Converted:
        import onnx

        from exporter.export.onnx_export import convert_onnx, onnx_metadata

        proto = convert_onnx(model, spec, calibration,
                             onnx_metadata(facts.labels, facts.describe(spec, "float32", "logits"), facts.scores))
        opset = max(entry.version for entry in proto.opset_import if entry.domain in ("", "ai.onnx"))
        notes = (integer_only_note(proto),) if spec.integer_only else ()
        # the opset written (ONNX Runtime moves a file with 16-bit Q/DQ to opset 21)
        return Converted(lambda path: onnx.save(proto, path), replace(spec, opset=opset), notes=notes)

    def read_layers(self, artifact: Path, layers: list[KerasLayer], images: np.ndarray) -> ArtifactLayers:
        import onnx

        from exporter.export import onnx_graph

        try:
            proto = onnx.load(artifact)
        except Exception as exc:  # protobuf's DecodeError and friends: the file is not a model
            raise UserError(f"{artifact}: not a readable .onnx ({exc.__class__.__name__})") from None
        nodes = onnx_graph.match(layers, proto, images, str(artifact))
        return ArtifactLayers(
            ops=[node["op"] for node in nodes], tensors=[node["tensor"] for node in nodes],
            precisions=["int8" if onnx_graph.is_quantized(node) else "float" for node in nodes],
            outputs=onnx_graph.layer_outputs(proto, nodes, images), weights=onnx_graph.weights(proto, nodes))
