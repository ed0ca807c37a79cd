"""Where int8 loses accuracy: every quantized layer's error against the float model, in graph order.

For each compute layer (conv, transposed conv, pool, concat), the int8 artifact's output tensor is read on
held-out frames (LiteRT with every tensor kept, no delegate; ONNX Runtime with the layer outputs added as graph
outputs), dequantized, and compared with the Keras model's output of the same layer: SQNR in dB and relative
RMSE. This is the error the tensor *carries* (everything upstream included), which is what reaches the
logits; TensorFlow's QuantizationDebugger and ORT's ``qdq_loss_debug`` report it per op or per tensor name,
but not matched to the Keras layers of both formats. Conv weights are compared with the Keras kernels too.

Host side.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from exporter.export import layers as L
from exporter.figures.quant_report import sqnr_per_layer
from exporter.fileio import write_json_atomic, write_text_atomic
from exporter.text_table import align

INPUT_SQNR_CAP = 60.0  # dB: "exact enough"; the first layer's own share is measured from here


@dataclass(frozen=True)
class LayerError:
    """One quantized layer of the report (``layers`` in the JSON)."""

    index: int
    name: str               # the Keras layer name
    op: str                 # the artifact's op (CONV_2D, TRANSPOSE_CONV, Conv, Concat, ...)
    kind: str               # conv, transposed conv, pool, concat
    stage: str              # encoder, bottleneck, decoder, head
    shape: tuple[int, int, int]
    flops_share: float
    sqnr_db: float
    channel_sqnr_db: float  # median over output channels of each channel's SQNR (capped at 60 dB)
    added_db: float         # channel SQNR this layer lost against the layer before it: its own share
    relative_rmse: float
    weight_sqnr_db: float | None
    tensor: str             # the artifact's tensor name
    precision: str          # int8, or float where the artifact keeps it float

    def to_dict(self) -> dict:
        data = asdict(self)
        data["shape"] = list(self.shape)
        for key in ("sqnr_db", "channel_sqnr_db", "added_db", "weight_sqnr_db"):
            if data[key] is not None and not math.isfinite(data[key]):
                data[key] = None  # identical: no noise (JSON has no infinity)
        return data


@dataclass
class QuantReport:
    artifact: str
    format: str
    frames: int
    layers: list[LayerError]
    sensitivity: list[dict] = field(default_factory=list)  # {"layer", "miou_drop", "agreement"} for the worst ones

    @property
    def head(self) -> LayerError:
        return next(layer for layer in self.layers if layer.stage == "head")

    def worst(self, count: int = 3) -> list[LayerError]:
        """The int8 convolutions that add the most error themselves (``added_db``), worst first: the
        candidates to keep float. (Transposed convolutions are not offered: TensorFlow's selective
        quantization does not keep a TRANSPOSE_CONV float when it is denylisted.)"""
        candidates = [layer for layer in self.layers if layer.kind == "conv" and layer.precision == "int8"]
        return sorted(candidates, key=lambda layer: (-layer.added_db, layer.channel_sqnr_db))[:count]

    def to_dict(self) -> dict:
        return {"artifact": self.artifact, "format": self.format, "frames": self.frames,
                "layers": [layer.to_dict() for layer in self.layers], "sensitivity": self.sensitivity}


def report(model, artifact: Path, images: np.ndarray) -> QuantReport:
    """The per-layer errors of ``artifact`` (.tflite or .onnx, int8) against ``model`` on ``images``."""
    artifact = Path(artifact)
    layers = L.keras_layers(model)
    reference = L.keras_outputs(model, layers, images)
    total = sum(layer.flops for layer in layers) or 1
    kernels = []
    for layer in layers:
        weights = model.get_layer(layer.name).get_weights()
        kernels.append(weights[0] if weights else None)
    if artifact.suffix == ".tflite":
        model_bytes = artifact.read_bytes()
        ops = L.match_tflite(layers, model_bytes, str(artifact))
        outputs = L.tflite_outputs(model_bytes, ops, images)
        weights = L.tflite_filters(model_bytes, ops)
        names = [(op["op"], op["tensor"], "int8" if op["dtype"] in ("int8", "uint8", "int16") else "float")
                 for op in ops]
        fmt = "tflite"
    else:
        import onnx

        proto = onnx.load(artifact)
        nodes = L.match_onnx(layers, proto, images, str(artifact))
        outputs = L.onnx_outputs(proto, nodes, images)
        weights = L.onnx_weights(proto, nodes)
        names = [(node["op"], node["tensor"], "int8" if node["tensor"].endswith("DequantizeLinear_Output")
                  else "float") for node in nodes]
        fmt = "onnx"
    rows = []
    # the first layer's own share is measured from the input's: 8-bit steps of 1/255 on frames in [0, 1]
    before = L.channel_sqnr_db(images, np.round(images * 255) / 255, INPUT_SQNR_CAP)
    for layer, ref, out, kernel, weight, (op, tensor, precision) in zip(
            layers, reference, outputs, kernels, weights, names, strict=True):
        weight_sqnr = L.sqnr_db(kernel, weight) if kernel is not None and weight is not None and \
            kernel.shape == weight.shape else None
        channel = L.channel_sqnr_db(ref, out, INPUT_SQNR_CAP)
        rows.append(LayerError(layer.index, layer.name, op, layer.kind, layer.stage, layer.shape,
                               layer.flops / total, L.sqnr_db(ref, out), channel, max(0.0, before - channel),
                               L.relative_rmse(ref, out), weight_sqnr, tensor, precision))
        before = channel
    return QuantReport(artifact.name, fmt, len(images), rows)


def report_for(ctx, fmt: str, artifact: Path | None = None, frames: int = 8, sensitivity: int = 3,
               calibration_samples: int = 256) -> QuantReport:
    """The report of ``artifact`` (default: the context's model converted to full int8 in ``fmt`` now), with
    the mIoU drop and agreement when only one of the ``sensitivity`` worst layers is kept float."""
    import tempfile

    from exporter.export.modes import ExportSpec

    with tempfile.TemporaryDirectory(prefix="unet-export-report-") as tmp:
        if artifact is None:
            artifact = ctx.write_unrecorded(ExportSpec(fmt, "int8"), Path(tmp) / f"unet_int8.{fmt}",
                                            calibration_samples)
        rep = report(ctx.model, Path(artifact), ctx.validation.images[:frames])
        for layer in rep.worst(sensitivity):
            path = ctx.write_unrecorded(ExportSpec(rep.format, "int8", float_layers=(layer.name,)),
                                        Path(tmp) / f"{layer.name}.{rep.format}", calibration_samples)
            result = ctx.validate(path, f"{layer.name} kept float")
            rep.sensitivity.append({"layer": layer.name, "miou_drop": result.miou_drop_points,
                                    "agreement": result.pixel_agreement, "size_mb": path.stat().st_size / 1e6})
    return rep


def _fmt(value: float | None, spec: str = ".1f") -> str:
    if value is None:
        return "-"
    return "exact" if not math.isfinite(value) else format(value, spec)


def table(rep: QuantReport, markdown: bool = False) -> str:
    headers = ("#", "layer", "op", "stage", "output H×W×C", "FLOPs", "SQNR dB", "channel SQNR", "added dB",
               "rel. RMSE", "weight SQNR dB", "runs in")
    worst = {layer.index for layer in rep.worst(3)}
    rows = [[str(layer.index), layer.name + (" ◀" if layer.index in worst else ""), layer.op, layer.stage,
             "×".join(map(str, layer.shape)), f"{layer.flops_share:.1%}", _fmt(layer.sqnr_db),
             _fmt(layer.channel_sqnr_db), _fmt(layer.added_db), _fmt(layer.relative_rmse, ".3f"), _fmt(layer.weight_sqnr_db), layer.precision]
            for layer in rep.layers]
    return align(headers, rows, {"#", "FLOPs", "SQNR dB", "channel SQNR", "added dB", "rel. RMSE", "weight SQNR dB"},
                 markdown=markdown)


def sensitivity_table(rep: QuantReport, markdown: bool = False) -> str:
    headers = ("kept float", "mIoU drop pt", "agreement", "size MB")
    rows = [[s["layer"], f"{s['miou_drop']:.2f}", f"{s['agreement']:.4f}", f"{s['size_mb']:.2f}"]
            for s in rep.sensitivity]
    return align(headers, rows, {"mIoU drop pt", "agreement", "size MB"}, markdown=markdown)


def to_markdown(rep: QuantReport) -> str:
    lines = [f"# Quantization report: {rep.artifact}", "",
             f"Every compute layer's output in the {rep.format} int8 artifact against the Keras model's same layer "
             f"on {rep.frames} held-out frames: SQNR (higher is better; each halving of the error adds 6 dB) and "
             "relative RMSE of the error the tensor carries, upstream layers included; *channel SQNR* is the "
             "median of each output channel's own SQNR (a channel whose range dwarfs the rest hides the others' "
             "error in the tensor's SQNR, not in this one); *added* is the channel SQNR the layer itself lost "
             "against the one before it. ◀ marks the three int8 convolutions that add the "
             "most: the candidates to keep float (`--auto-fallback`).", "", table(rep, markdown=True), ""]
    if rep.sensitivity:
        lines += ["## Sensitivity: one layer kept float at a time", "",
                  "mIoU drop and pixel agreement against Keras on the held-out frames when only that layer "
                  "stays float (everything else int8).", "", sensitivity_table(rep, markdown=True), ""]
    lines += ["![SQNR per layer](quant_report.png)", ""]
    return "\n".join(lines)


def write(rep: QuantReport, out_dir: Path) -> list[Path]:
    """quant_report.json, quant_report.md and quant_report.png in ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [Path(write_json_atomic(out_dir / "quant_report.json", rep.to_dict())),
               Path(write_text_atomic(out_dir / "quant_report.md", to_markdown(rep)))]
    try:
        written.append(sqnr_per_layer(rep, out_dir / "quant_report.png"))
    except ImportError:
        pass
    return written
