"""OpenVINO: reads .onnx and .tflite directly (no conversion step) and runs them on CPU (or GPU if present).

What shapes this adapter (figures in benchmarks/RESULTS.md, "Adapter choices"):

* On a CPU with AVX-512 BF16, OpenVINO runs an fp32 model in **bf16** unless ``INFERENCE_PRECISION_HINT``
  is ``f32`` (logits off by ~1e-2). Every model is compiled with ``f32`` (``PRECISION_HINT``) so that what
  is benchmarked is the model as exported; int8 models still run their quantized parts in int8. The
  precision that actually ran is read back from the compiled model (``info()["precision"]``).
* For an int8/uint8 TFLite input, OpenVINO folds the input's scale/zero point into a FakeQuantize and keeps
  a u8/i8 Parameter; it silently accepts float data there. The scale and zero point are read from the
  .tflite flatbuffer itself and the frames quantized explicitly; int8 logits are dequantized the same way.
  The reader below walks the flatbuffer by the schema's field numbers: a device with only OpenVINO has no
  generated TFLite schema and no ``flatbuffers`` package (the host reads metadata through the schema).
* Batch: the read model has a dynamic batch for both .tflite and .onnx. It is reshaped to a static N and
  compiled once per batch size (cached by N): static shapes ran faster at batch 1.

Threads → ``INFERENCE_NUM_THREADS`` (``None`` = the plugin's default, read back and reported).
OpenVINO's runtime writes no telemetry; its Python tools may (under ``$HOME``), which tests redirect.
"""

from __future__ import annotations

import platform
import struct
from pathlib import Path

import numpy as np

from exporter.runtimes.base import (
    Loaded,
    ModelLoadError,
    Runtime,
    RuntimeUnavailable,
    TensorInfo,
    check_images,
    decode_output,
    one_line,
    quantize_input,
    register,
)

# TFLite schema TensorType values → numpy dtype names (only those an I/O tensor may have here).
TFLITE_TYPES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 7: "int16", 9: "int8",
                10: "float64"}
OV_TYPES = {"f32": "float32", "f16": "float16", "f64": "float64", "u8": "uint8",
            "i8": "int8", "i16": "int16", "u16": "uint16", "i32": "int32", "i64": "int64"}


class _FlatTable:
    """Just enough of the FlatBuffers wire format to read a table's scalar, vector and sub-table fields."""

    def __init__(self, buf: bytes, pos: int) -> None:
        self.buf, self.pos = buf, pos
        vtable = pos - struct.unpack_from("<i", buf, pos)[0]
        self.vtable_size = struct.unpack_from("<H", buf, vtable)[0]
        self.vtable = vtable

    def _field(self, index: int) -> int | None:
        entry = 4 + 2 * index
        if entry >= self.vtable_size:
            return None
        offset = struct.unpack_from("<H", self.buf, self.vtable + entry)[0]
        return self.pos + offset if offset else None

    def scalar(self, index: int, fmt: str, default=0):
        at = self._field(index)
        return default if at is None else struct.unpack_from("<" + fmt, self.buf, at)[0]

    def _target(self, index: int) -> int | None:
        at = self._field(index)
        return None if at is None else at + struct.unpack_from("<I", self.buf, at)[0]

    def table(self, index: int) -> _FlatTable | None:
        at = self._target(index)
        return None if at is None else _FlatTable(self.buf, at)

    def vector(self, index: int, fmt: str) -> list:
        at = self._target(index)
        if at is None:
            return []
        (length,) = struct.unpack_from("<I", self.buf, at)
        return list(struct.unpack_from(f"<{length}{fmt}", self.buf, at + 4))

    def tables(self, index: int) -> list[_FlatTable]:
        at = self._target(index)
        if at is None:
            return []
        (length,) = struct.unpack_from("<I", self.buf, at)
        starts = (at + 4 + 4 * i for i in range(length))
        return [_FlatTable(self.buf, s + struct.unpack_from("<I", self.buf, s)[0]) for s in starts]


def tflite_io_quantization(path) -> tuple[dict, dict]:
    """(input, output) of the main subgraph of a .tflite file: {"dtype", "scale", "zero_point"} each.

    Schema: Model.subgraphs = field 2; SubGraph.tensors/inputs/outputs = fields 0/1/2;
    Tensor.type = field 1, Tensor.quantization = field 4; QuantizationParameters.scale/zero_point = 2/3.
    """
    buf = Path(path).read_bytes()
    try:
        model = _FlatTable(buf, struct.unpack_from("<I", buf, 0)[0])
        subgraph = model.tables(2)[0]
        tensors = subgraph.tables(0)

        def describe(index: int) -> dict:
            tensor = tensors[index]
            quant = tensor.table(4)
            scales = quant.vector(2, "f") if quant else []
            zero_points = quant.vector(3, "q") if quant else []
            if len(scales) > 1:
                raise ModelLoadError(f"{Path(path).name}: per-channel quantized I/O is unsupported")
            return {"dtype": TFLITE_TYPES.get(tensor.scalar(1, "b"), "unknown"),
                    "scale": float(scales[0]) if scales else 0.0,
                    "zero_point": int(zero_points[0]) if zero_points else 0}

        return describe(subgraph.vector(1, "i")[0]), describe(subgraph.vector(2, "i")[0])
    except (struct.error, IndexError) as exc:
        raise ModelLoadError(f"{Path(path).name}: cannot read the TFLite flatbuffer ({exc})") from exc


def _ov_dtype(element_type) -> str:
    name = element_type.get_type_name() if hasattr(element_type, "get_type_name") else str(element_type)
    return OV_TYPES.get(name, name)


def _partial_dims(partial_shape) -> list:
    return [d.get_length() if d.is_static else None for d in partial_shape]


@register
class OpenVINORuntime(Runtime):
    name = "openvino"
    formats = ("onnx", "tflite")
    modules = ("openvino",)
    distributions = ("openvino",)
    order = 40
    PRECISION_HINT = "f32"  # see the module docstring: never let the CPU plugin silently run bf16
    SYSFS_CPU = Path("/sys/devices/system/cpu")

    @classmethod
    def available(cls) -> str | None:
        """Also None only where OpenVINO's CPU plugin can run: on aarch64 it dies with SIGSEGV when sysfs is not
        mounted (a chroot or a bare container; seen with OpenVINO 2026.4 under qemu-user), x86 runs without it."""
        missing = super().available()
        if missing is None and platform.machine().lower() in ("aarch64", "arm64") and not cls.SYSFS_CPU.is_dir():
            return (f"OpenVINO's CPU plugin crashes on aarch64 without {cls.SYSFS_CPU} (sysfs is not mounted here: "
                    "mount -t sysfs sysfs /sys)")
        return missing

    def __init__(self) -> None:
        super().__init__()
        self._core = None
        self._model = None
        self._config: dict = {}
        self._compiled: dict[int, tuple[object, object]] = {}
        self._ov_device = "CPU"
        self._model_shape: list = []

    def _compile(self, batch: int):
        """Compile the model reshaped to a static batch (cached by batch)."""
        cached = self._compiled.get(batch)
        if cached is None:
            model = self._model.clone()
            model.reshape({model.inputs[0]: [batch, *self._model_shape[1:]]})
            compiled = self._core.compile_model(model, self._ov_device, self._config)
            cached = (compiled, compiled.create_infer_request())
            self._compiled[batch] = cached
        return cached

    def _read(self, ov, path: Path, device: str):
        """(core, model) for ``device``; RuntimeUnavailable where OpenVINO does not see it."""
        core = ov.Core()
        self._ov_device = "GPU" if device == "gpu" else "CPU"
        if self._ov_device not in core.available_devices:
            seen = ", ".join(core.available_devices) or "none"
            why = " (its GPU plugin drives Intel GPUs, through OpenCL)" if device == "gpu" else ""
            raise RuntimeUnavailable(f"no {device.upper()}: OpenVINO sees {seen}{why}")
        try:
            model = core.read_model(str(path))
        except Exception as exc:  # OpenVINO raises RuntimeError with a multi-line, source-located message
            raise ModelLoadError(f"{path.name}: {one_line(exc)}") from exc
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise ModelLoadError(f"{path.name}: expected one input and one output, got "
                                 f"{len(model.inputs)} and {len(model.outputs)}")
        return core, model

    def _open(self, path: Path, device: str, threads: int | None) -> Loaded:
        import openvino as ov

        core, model = self._read(ov, path, device)
        inp, out = model.inputs[0], model.outputs[0]
        in_shape, out_shape = _partial_dims(inp.get_partial_shape()), _partial_dims(out.get_partial_shape())
        if len(in_shape) != 4 or in_shape[-1] != 3 or None in in_shape[1:]:
            raise ModelLoadError(f"{path.name}: expected an N×H×W×3 input, got {inp.get_partial_shape()}")
        in_q, out_q = _io_quantization(path, _ov_dtype(inp.get_element_type()), _ov_dtype(out.get_element_type()))
        self._config = {"INFERENCE_PRECISION_HINT": self.PRECISION_HINT}
        if threads is not None:
            self._config["INFERENCE_NUM_THREADS"] = threads
        self._core, self._model, self._model_shape = core, model, in_shape
        self._compiled.clear()
        try:
            compiled, _ = self._compile(1)
        except Exception as exc:
            raise ModelLoadError(f"{path.name}: {one_line(exc)}") from exc
        precision = compiled.get_property("INFERENCE_PRECISION_HINT")
        precision = precision.get_type_name() if hasattr(precision, "get_type_name") else str(precision)
        quantized_graph = any(op.get_type_name() == "FakeQuantize" for op in model.get_ops())
        return Loaded(path, device, threads or int(compiled.get_property("INFERENCE_NUM_THREADS")),
                      TensorInfo.of(in_shape, in_q["dtype"], in_q["scale"], in_q["zero_point"], inp.get_any_name()),
                      TensorInfo.of(out_shape, out_q["dtype"], out_q["scale"], out_q["zero_point"],
                                    out.get_any_name(), output=True),
                      (self._ov_device,), precision, {"quantized_graph": quantized_graph})

    def predict(self, images: np.ndarray) -> np.ndarray:
        loaded = self._require_loaded()
        data = quantize_input(check_images(images), loaded.input.dtype, loaded.input.scale, loaded.input.zero_point)
        _, request = self._compile(len(data))
        request.infer({0: data})
        raw = request.get_output_tensor(0).data.copy()
        return decode_output(raw, loaded.output.scale, loaded.output.zero_point)

    def details(self) -> dict:
        return {"compiled_batches": sorted(self._compiled)}


def _io_quantization(path: Path, in_dtype: str, out_dtype: str) -> tuple[dict, dict]:
    """The I/O types and quantization: read from a .tflite (OpenVINO folds them into FakeQuantize); an ONNX
    uint8 input is camera bytes, as for onnxruntime."""
    in_q = {"dtype": in_dtype, "scale": 0.0, "zero_point": 0}
    out_q = {"dtype": out_dtype, "scale": 0.0, "zero_point": 0}
    if path.suffix.lower() == ".tflite":
        file_in, file_out = tflite_io_quantization(path)
        if file_in["dtype"] == in_dtype:
            in_q = file_in
        if file_out["dtype"] == out_dtype:
            out_q = file_out
    elif in_dtype == "uint8":
        in_q["scale"] = 1.0 / 255.0
    return in_q, out_q
