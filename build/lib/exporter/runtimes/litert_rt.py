"""LiteRT (``ai_edge_litert.interpreter``, never ``tf.lite``): .tflite on CPU (XNNPACK) or a GPU delegate.

Batch: a converted Keras model has input shape [1, H, W, 3] with signature [-1, H, W, 3]. A batch of N frames
gets its own interpreter, resized with ``resize_tensor_input`` + ``allocate_tensors`` once and then cached by
N, so that alternating batch sizes (e.g. 8, 8, …, 3) never re-plan. A model whose batch cannot be resized is
run in chunks of its own batch size (the last one padded).

Threads: ``None`` means every core this process may use — the Python interpreter's own default is a single
thread, unlike every other runtime here.
"""

from __future__ import annotations

import ctypes
import sys

import numpy as np

from exporter.runtimes.base import (
    ModelLoadError,
    Runtime,
    RuntimeUnavailable,
    check_images,
    decode_output,
    default_threads,
    is_class_map,
    one_line,
    quantize_input,
    register,
    tensor_details,
)

GPU_DELEGATES = {
    "linux": ("libtensorflowlite_gpu_delegate.so", "libtensorflowlite_gpu_gl.so", "libLiteRtGpuAccelerator.so"),
    "darwin": ("libtensorflowlite_gpu_delegate.dylib", "libmetal_delegate.dylib"),
    "win32": ("tensorflowlite_gpu_delegate.dll",),
}


def _quantization(details: dict) -> tuple[float, int]:
    """Per-tensor (scale, zero point) of an I/O tensor; per-channel I/O quantization is not supported."""
    params = details.get("quantization_parameters") or {}
    scales = params.get("scales")
    if scales is not None and len(scales) > 1:
        raise ModelLoadError(f"tensor {details['name']!r} has per-channel quantization; I/O must be per-tensor")
    scale, zero_point = details.get("quantization", (0.0, 0))
    return float(scale), int(zero_point)


def _model_precision(interpreter) -> str:
    """What the CPU kernels compute in, read from the tensor types (LiteRT itself does not say)."""
    counts: dict[str, int] = {}
    for tensor in interpreter.get_tensor_details():
        dtype = np.dtype(tensor["dtype"]).name
        scales = (tensor.get("quantization_parameters") or {}).get("scales")
        quantized = scales is not None and len(scales) > 0  # per-tensor or per-channel
        key = f"q{dtype}" if quantized and dtype in ("int8", "uint8", "int16") else dtype
        counts[key] = counts.get(key, 0) + 1
    int8 = counts.get("qint8", 0) + counts.get("quint8", 0)
    if counts.get("qint16"):
        return "int16x8"
    if int8 and int8 >= counts.get("float32", 0):
        return "int8"
    if int8:
        return "fp32 (int8 weights)"
    if counts.get("float16"):
        return "fp32 (fp16 weights)"
    return "fp32"


@register
class LiteRTRuntime(Runtime):
    name = "litert"
    formats = ("tflite",)
    modules = ("ai_edge_litert",)
    distributions = ("ai-edge-litert", "ai_edge_litert")

    def __init__(self) -> None:
        super().__init__()
        self._interpreters: dict[int, object] = {}
        self._base_batch = 1
        self._resizable = True
        self._delegate_name: str | None = None

    # -- loading ---------------------------------------------------------------------------------------
    def _gpu_delegate(self):
        """A freshly loaded GPU delegate (one per interpreter), or RuntimeUnavailable saying what was tried."""
        from ai_edge_litert.interpreter import load_delegate

        candidates = GPU_DELEGATES.get(sys.platform, GPU_DELEGATES["linux"])
        names = [self._delegate_name] if self._delegate_name else list(candidates)
        problems: dict[str, list[str]] = {}
        for library in names:
            try:
                ctypes.CDLL(library)  # probe first: a failed load_delegate leaves a noisy half-built Delegate
                delegate = load_delegate(library)
            except (ValueError, OSError, RuntimeError) as exc:
                reason = one_line(exc, 120).removeprefix(f"{library}: ")
                problems.setdefault(reason, []).append(library)
                continue
            self._delegate_name = library
            return delegate
        tried = "; ".join(f"{', '.join(libraries)}: {reason}" for reason, libraries in problems.items())
        raise RuntimeUnavailable(f"no GPU: no LiteRT GPU delegate could be loaded ({tried})")

    def _new_interpreter(self):
        from ai_edge_litert.interpreter import Interpreter

        delegates = [self._gpu_delegate()] if self.device == "gpu" else None
        try:
            return Interpreter(model_path=str(self.path), num_threads=self.threads,
                               experimental_delegates=delegates)
        except (ValueError, RuntimeError) as exc:
            raise ModelLoadError(f"{self.path.name}: {one_line(exc)}") from exc

    def load(self, path, device: str = "cpu", threads: int | None = None) -> None:
        self._begin_load(path, device, threads)
        if self.threads is None:
            self.threads = default_threads()
        self._interpreters.clear()
        self._delegate_name = None
        interpreter = self._new_interpreter()
        try:
            interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelLoadError(f"{self.path.name}: {one_line(exc)}") from exc
        inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelLoadError(f"{self.path.name}: expected one input and one output, got "
                                 f"{len(inputs)} and {len(outputs)}")
        inp, out = inputs[0], outputs[0]
        if len(inp["shape"]) != 4 or inp["shape"][-1] != 3:
            raise ModelLoadError(f"{self.path.name}: expected an N×H×W×3 input, got {list(inp['shape'])}")
        in_scale, in_zp = _quantization(inp)
        out_scale, out_zp = _quantization(out)
        self._input = tensor_details(inp["shape_signature"], inp["dtype"], in_scale, in_zp, inp["name"])
        self._output = tensor_details(out["shape_signature"], out["dtype"], out_scale, out_zp, out["name"])
        self._output["kind"] = "class_map" if is_class_map(out["shape"], out["dtype"], out_scale) else "logits"
        self._base_batch = int(inp["shape"][0])
        self._resizable = int(inp["shape_signature"][0]) == -1 or len(inp["shape_signature"]) == 0
        self._interpreters[self._base_batch] = interpreter
        self._precision = _model_precision(interpreter)
        ops = {op.get("op_name") for op in interpreter._get_ops_details()}
        delegated = "DELEGATE" in ops
        if self.device == "gpu":
            self._providers = [f"gpu ({self._delegate_name})" if delegated else "cpu (gpu delegate took no ops)"]
        else:
            self._providers = ["xnnpack" if delegated else "builtin"]

    # -- running ----------------------------------------------------------------------------------------
    def _interpreter_for(self, batch: int):
        interpreter = self._interpreters.get(batch)
        if interpreter is None:
            interpreter = self._new_interpreter()
            index = interpreter.get_input_details()[0]["index"]
            shape = [batch, *interpreter.get_input_details()[0]["shape"][1:]]
            interpreter.resize_tensor_input(index, shape, strict=True)
            interpreter.allocate_tensors()
            self._interpreters[batch] = interpreter
        return interpreter

    def _run(self, interpreter, data: np.ndarray) -> np.ndarray:
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], data)
        interpreter.invoke()
        return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])

    def predict(self, images: np.ndarray) -> np.ndarray:
        self._require_loaded()
        images = check_images(images)
        data = quantize_input(images, self._input["dtype"], self._input["scale"], self._input["zero_point"])
        batch = len(data)
        if batch == self._base_batch:
            raw = self._run(self._interpreters[batch], data)
        elif self._resizable:
            try:
                raw = self._run(self._interpreter_for(batch), data)
            except (ValueError, RuntimeError):  # a model that will not resize after all: chunk it
                self._resizable = False
                return self.predict(images)
        else:
            step = self._base_batch
            pad = (-batch) % step
            if pad:
                data = np.concatenate([data, np.repeat(data[-1:], pad, axis=0)])
            interpreter = self._interpreters[step]
            raw = np.concatenate([self._run(interpreter, data[i:i + step]) for i in range(0, len(data), step)])
            raw = raw[:batch]
        return decode_output(raw, self._output["scale"], self._output["zero_point"])

    def details(self) -> dict:
        return {"batch_resizable": self._resizable, "cached_batches": sorted(self._interpreters)}
