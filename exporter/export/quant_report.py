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

from exporter.contracts.export_spec import ExportSpec, FloatScope
from exporter.export.formats import backend_of
from exporter.export.layers import KerasLayer, conv_readers, keras_layers, keras_outputs
from exporter.figures.quant_report import sqnr_per_layer
from exporter.fileio import write_json_atomic, write_text_atomic
from exporter.parameters import CALIBRATION_SAMPLES, REPORT_FRAMES
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
    precision: str          # int8, int16 (an island), or float where the artifact keeps it float

    def to_dict(self) -> dict:
        data = asdict(self)
        data["shape"] = list(self.shape)
        for key in ("sqnr_db", "channel_sqnr_db", "added_db", "weight_sqnr_db"):
            if data[key] is not None and not math.isfinite(data[key]):
                data[key] = None  # identical: no noise (JSON has no infinity)
        return data


@dataclass(frozen=True)
class Sensitivity:
    """The whole model with only ``layer`` kept float: how it then compares with Keras."""

    layer: str
    miou_drop: float
    agreement: float
    size_mb: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class QuantReport:
    artifact: str
    format: str
    frames: int
    layers: list[LayerError]
    sensitivity: list[Sensitivity] = field(default_factory=list)  # for the worst layers

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
                "layers": [layer.to_dict() for layer in self.layers],
                "sensitivity": [s.to_dict() for s in self.sensitivity]}


def sqnr_db(reference: np.ndarray, approx: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB (inf when identical)."""
    signal = float(np.sum(np.square(reference, dtype=np.float64)))
    noise = float(np.sum(np.square(reference.astype(np.float64) - approx.astype(np.float64))))
    if noise == 0:
        return float("inf")
    return 10 * np.log10(max(signal, 1e-30) / noise)


def channel_sqnr_db(reference: np.ndarray, approx: np.ndarray, cap: float = 60.0) -> float:
    """Median over output channels (last axis) of each channel's SQNR, capped at ``cap``: one channel whose
    range dwarfs the rest carries the tensor's SQNR while every other channel drowns in its quantization step;
    this one sees it. Channels that are zero in both are left out."""
    ref = reference.reshape(-1, reference.shape[-1]).astype(np.float64)
    err = ref - approx.reshape(-1, approx.shape[-1]).astype(np.float64)
    signal, noise = np.sum(ref**2, axis=0), np.sum(err**2, axis=0)
    live = (signal > 0) | (noise > 0)
    if not live.any():
        return cap
    with np.errstate(divide="ignore"):
        per_channel = np.where(noise[live] > 0, 10 * np.log10(np.maximum(signal[live], 1e-30) / np.maximum(noise[live], 1e-300)), cap)
    return float(np.median(np.minimum(per_channel, cap)))


def relative_rmse(reference: np.ndarray, approx: np.ndarray) -> float:
    """RMS of the error over RMS of the reference."""
    rms = float(np.sqrt(np.mean(np.square(reference, dtype=np.float64))))
    err = float(np.sqrt(np.mean(np.square(reference.astype(np.float64) - approx.astype(np.float64)))))
    return err / rms if rms > 0 else float("inf") if err > 0 else 0.0


def _kernels(model, layers: list[KerasLayer]) -> list[np.ndarray | None]:
    """Each compute layer's Keras kernel (None for layers without weights)."""
    kernels = []
    for layer in layers:
        weights = model.get_layer(layer.name).get_weights()
        kernels.append(weights[0] if weights else None)
    return kernels


def report(model, artifact: Path, images: np.ndarray) -> QuantReport:
    """The per-layer errors of ``artifact`` (an int8 file of any export format) against ``model`` on ``images``."""
    artifact = Path(artifact)
    backend = backend_of(artifact)
    layers = keras_layers(model)
    reference = keras_outputs(model, layers, images)
    read = backend.read_layers(artifact, layers, images)
    total = sum(layer.flops for layer in layers) or 1
    rows = []
    # the first layer's own share is measured from the input's: 8-bit steps of 1/255 on frames in [0, 1]
    before = channel_sqnr_db(images, np.round(images * 255) / 255, INPUT_SQNR_CAP)
    for i, (layer, ref, kernel) in enumerate(zip(layers, reference, _kernels(model, layers), strict=True)):
        out, weight = read.outputs[i], read.weights[i]
        weight_sqnr = sqnr_db(kernel, weight) if kernel is not None and weight is not None and \
            kernel.shape == weight.shape else None
        channel = channel_sqnr_db(ref, out, INPUT_SQNR_CAP)
        rows.append(LayerError(layer.index, layer.name, read.ops[i], layer.kind, layer.stage, layer.shape,
                               layer.flops / total, sqnr_db(ref, out), channel, max(0.0, before - channel),
                               relative_rmse(ref, out), weight_sqnr, read.tensors[i], read.precisions[i]))
        before = channel
    return QuantReport(artifact.name, backend.format.value, len(images), rows)


SENSITIVITY_LAYERS = 3  # quant-report --sensitivity: the worst layers each kept float alone, measured


def report_for(ctx, fmt: str, artifact: Path | None = None, frames: int = REPORT_FRAMES,
               sensitivity: int = SENSITIVITY_LAYERS,
               calibration_samples: int = CALIBRATION_SAMPLES, equalize: bool = False) -> QuantReport:
    """The report of ``artifact`` (default: the context's model converted to full int8 in ``fmt`` now; with
    ``equalize`` after cross-layer equalization, and compared with the equalized Keras model, whose layers the
    artifact's tensors are), with the mIoU drop and agreement when only one of the ``sensitivity`` worst layers
    is kept float (its output tensor: the layer and the convolutions reading it directly)."""
    import tempfile
    from dataclasses import replace

    base = ExportSpec(fmt if artifact is None else backend_of(Path(artifact)).format, "int8", equalize=equalize)
    with tempfile.TemporaryDirectory(prefix="unet-export-report-") as tmp:
        if artifact is None:
            artifact = ctx.write_unrecorded(base, Path(tmp) / f"unet_int8.{fmt}", calibration_samples)
        rep = report(ctx.model_for(base, calibration_samples), Path(artifact), ctx.validation.images[:frames])
        for layer in rep.worst(sensitivity):  # the layer's output tensor kept float: the layer and its readers
            kept = (layer.name, *conv_readers(ctx.model, layer.name))
            path = ctx.write_unrecorded(replace(base, float_scope=FloatScope(tuple(dict.fromkeys(kept)))),
                                        Path(tmp) / f"{layer.name}.{rep.format}", calibration_samples)
            result = ctx.validate(path, f"{layer.name} kept float")
            rep.sensitivity.append(Sensitivity(layer.name, result.miou_drop_points, result.pixel_agreement,
                                               path.stat().st_size / 1e6))
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
    rows = [[s.layer, f"{s.miou_drop:.2f}", f"{s.agreement:.4f}", f"{s.size_mb:.2f}"] for s in rep.sensitivity]
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
        lines += ["## Sensitivity: one tensor kept float at a time", "",
                  "mIoU drop and pixel agreement against Keras on the held-out frames when only that layer's output "
                  "tensor stays float: the layer and the convolutions reading it directly (a float layer whose "
                  "reader quantizes its output again keeps the damage); everything else int8.", "",
                  sensitivity_table(rep, markdown=True), ""]
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
