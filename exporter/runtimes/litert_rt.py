"""LiteRT (``ai_edge_litert``, never ``tf.lite``): .tflite on the CPU (XNNPACK) or the GPU.

GPU: LiteRT's ``CompiledModel`` API with ``HardwareAccelerator.GPU`` — the route Android's GPU takes; on Linux
its accelerator (``libLiteRtWebGpuAccelerator.so``, in the wheel) runs WebGPU over Vulkan, so the machine needs
the Vulkan loader (``libvulkan.so.1``) and a GPU driver with a Vulkan ICD. The model is compiled GPU-only
first; if that fails for a reason other than the GPU itself, with the CPU as fallback for the ops the GPU
does not take, and ``fully_accelerated`` says which. The GPU computes in fp16 unless ``UNET_LITERT_GPU_FP32=1``
(``GpuOptions.enforce_f32``); the row's precision says which. It runs at the model's own batch (1), a batch
of N as N calls: the compiled model's output buffers do not follow an input resize. The classic GPU delegate
is used instead where a user supplies one: ``UNET_LITERT_GPU_DELEGATE=/path/to/libdelegate.so``.

Batch: a converted Keras model has input shape [1, H, W, 3] with signature [-1, H, W, 3]. A batch of N frames
gets its own interpreter, resized with ``resize_tensor_input`` + ``allocate_tensors`` once and then cached by
N, so that alternating batch sizes (e.g. 8, 8, …, 3) never re-plan. A model whose batch cannot be resized is
run in chunks of its own batch size (the last one padded).

Threads: ``None`` means every core this process may use — the Python interpreter's own default is a single
thread, unlike every other runtime here.
"""

from __future__ import annotations

import ctypes
import os
import re
import sys
from dataclasses import dataclass
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
    default_threads,
    module_missing,
    one_line,
    quantize_input,
    register,
)
from exporter.stdio import HeldOutput, held_stderr

DELEGATE_ENV = "UNET_LITERT_GPU_DELEGATE"  # a classic GPU delegate library the user supplies
FP32_ENV = "UNET_LITERT_GPU_FP32"  # "1": GpuOptions.enforce_f32 (the GPU computes in fp16 otherwise)
VULKAN_LOADER = "libvulkan.so.1"
# What LiteRT's GPU accelerator writes to stderr when the GPU itself is missing (it raises a bare location).
NO_ADAPTER = re.compile(r"No adapters found|Couldn't load Vulkan|Failed to initialize WebGPU environment"
                        r"|Failed to get or create delegate WebGPU", re.I)


def gpu_failure(held: HeldOutput) -> str | None:
    """Why LiteRT's GPU accelerator could not start, from what it wrote to stderr (None: not a GPU problem)."""
    lines = [line.strip() for line in held.text.splitlines() if NO_ADAPTER.search(line)]
    if not lines:
        return None
    detail = next((line for line in lines if "No adapters found" in line), lines[0])
    detail = detail.split("] ", 1)[-1]
    return f"no GPU: LiteRT's GPU accelerator (WebGPU over Vulkan) could not start: {one_line(detail, 160)}"


DYNAMIC_SHAPES = "only supports static-sized tensors"
BENIGN = ("NPU accelerator could not be loaded", "Logging before InitGoogle", "compiler_plugin")


def _litert_error(exc: BaseException, held: HeldOutput) -> str:
    """The message of a failed GPU compile: LiteRT's exception holds little more than source locations;
    what it wrote to stderr says why."""
    if DYNAMIC_SHAPES in held.text:
        return ("the GPU takes static shapes only and this model has a dynamic batch; export it with "
                "`unet-export tflite --static-batch 1`")
    said = [line.strip() for line in held.text.splitlines()
            if line.strip().startswith(("ERROR", "E0", "WARNING")) and not any(b in line for b in BENIGN)]
    useful = [line.split("] ", 1)[-1] for line in said if "Source Location" not in line]
    text = " ".join(str(exc).split())
    return one_line(useful[-1] if useful else text, 200)


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
    asymmetric_int8 = False  # int8 activations (weights are symmetric): int16 tensors beside them are islands
    for tensor in interpreter.get_tensor_details():
        dtype = np.dtype(tensor["dtype"]).name
        scales = (tensor.get("quantization_parameters") or {}).get("scales")
        quantized = scales is not None and len(scales) > 0  # per-tensor or per-channel
        key = f"q{dtype}" if quantized and dtype in ("int8", "uint8", "int16") else dtype
        counts[key] = counts.get(key, 0) + 1
        zero_points = (tensor.get("quantization_parameters") or {}).get("zero_points")
        asymmetric_int8 |= key in ("qint8", "quint8") and zero_points is not None and bool(np.any(zero_points != 0))
    int8 = counts.get("qint8", 0) + counts.get("quint8", 0)
    if counts.get("qint16"):
        return "int8 + int16 islands" if asymmetric_int8 else "int16x8"
    if int8 and int8 >= counts.get("float32", 0):
        return "int8"
    if int8:
        return "fp32 (int8 weights)"
    if counts.get("float16"):
        return "fp32 (fp16 weights)"
    return "fp32"


@dataclass(frozen=True)
class _GpuModel:
    """LiteRT's CompiledModel on the GPU with its buffers, and the shape and type of what it writes."""

    model: object
    inputs: object
    outputs: object
    output_shape: tuple[int, ...]
    output_dtype: np.dtype
    fully_accelerated: bool


@register
class LiteRTRuntime(Runtime):
    name = "litert"
    formats = ("tflite",)
    modules = ("ai_edge_litert",)
    distributions = ("ai-edge-litert", "ai_edge_litert")
    order = 20

    def __init__(self) -> None:
        super().__init__()
        self._interpreters: dict[int, object] = {}
        self._base_batch = 1
        self._resizable = True
        self._delegate: str | None = None  # the classic GPU delegate library in use
        self._gpu: _GpuModel | None = None

    # -- loading ---------------------------------------------------------------------------------------
    def _new_interpreter(self, path: Path, device: str, threads: int):
        from ai_edge_litert.interpreter import Interpreter

        delegates = [_gpu_delegate()] if device == "gpu" and os.environ.get(DELEGATE_ENV) else None
        if delegates:
            self._delegate = os.environ[DELEGATE_ENV]
        try:
            return Interpreter(model_path=str(path), num_threads=threads, experimental_delegates=delegates)
        except (ValueError, RuntimeError) as exc:
            raise ModelLoadError(f"{path.name}: {one_line(exc)}") from exc

    def _open(self, path: Path, device: str, threads: int | None) -> Loaded:
        threads = threads or default_threads()
        self._interpreters.clear()
        self._delegate, self._gpu = None, None
        interpreter = self._new_interpreter(path, device, threads)  # the GPU route too: it reads the I/O types
        try:
            interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelLoadError(f"{path.name}: {one_line(exc)}") from exc
        inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelLoadError(f"{path.name}: expected one input and one output, got "
                                 f"{len(inputs)} and {len(outputs)}")
        inp, out = inputs[0], outputs[0]
        if len(inp["shape"]) != 4 or inp["shape"][-1] != 3:
            raise ModelLoadError(f"{path.name}: expected an N×H×W×3 input, got {list(inp['shape'])}")
        in_scale, in_zp = _quantization(inp)
        out_scale, out_zp = _quantization(out)
        self._base_batch = int(inp["shape"][0])
        self._resizable = int(inp["shape_signature"][0]) == -1 or len(inp["shape_signature"]) == 0
        self._interpreters[self._base_batch] = interpreter
        ops = [op.get("op_name") for op in interpreter._get_ops_details()]
        providers, precision, facts = self._placement(path, device, threads, ops)
        return Loaded(path, device, threads,
                      TensorInfo.of(inp["shape_signature"], inp["dtype"], in_scale, in_zp, inp["name"]),
                      TensorInfo.of(out["shape_signature"], out["dtype"], out_scale, out_zp, out["name"], output=True),
                      providers, precision or _model_precision(interpreter), facts)

    def _placement(self, path: Path, device: str, threads: int, ops: list) -> tuple[tuple[str, ...], str | None, dict]:
        """(providers, precision if not the file's own, facts) for the device asked."""
        if device == "gpu" and self._delegate:
            delegated = "DELEGATE" in ops
            return ((f"gpu (delegate {self._delegate})" if delegated else "cpu (gpu delegate took no ops)",), None,
                    {"fully_accelerated": set(ops) == {"DELEGATE"}})
        if device == "gpu":
            self._interpreters.clear()
            self._gpu = _compile_gpu(path, threads, self.version())
            where = "WebGPU" if self._gpu.fully_accelerated else "WebGPU + CPU fallback"
            enforce_f32 = os.environ.get(FP32_ENV, "") == "1"
            return ((f"gpu (LiteRT CompiledModel, {where})",),
                    "fp32 (enforce_f32)" if enforce_f32 else "fp16 (LiteRT GPU default)",
                    {"fully_accelerated": self._gpu.fully_accelerated})
        return ("xnnpack" if "DELEGATE" in ops else "builtin",), None, {}

    # -- running ----------------------------------------------------------------------------------------
    def _interpreter_for(self, batch: int):
        interpreter = self._interpreters.get(batch)
        if interpreter is None:
            loaded = self._require_loaded()
            interpreter = self._new_interpreter(loaded.path, loaded.device, loaded.threads)
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

    def _run_gpu(self, data: np.ndarray) -> np.ndarray:
        """The compiled GPU model, one frame-batch of its own size at a time."""
        gpu, step, results = self._gpu, self._base_batch, []
        for start in range(0, len(data), step):
            chunk = data[start:start + step]
            if len(chunk) < step:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], step - len(chunk), axis=0)])
            gpu.inputs[0].write(np.ascontiguousarray(chunk))
            gpu.model.run_by_index(0, gpu.inputs, gpu.outputs)
            size = int(np.prod(gpu.output_shape))
            results.append(gpu.outputs[0].read(size, gpu.output_dtype).reshape(gpu.output_shape))
        return np.concatenate(results)[:len(data)]

    def predict(self, images: np.ndarray) -> np.ndarray:
        loaded = self._require_loaded()
        images = check_images(images)
        data = quantize_input(images, loaded.input.dtype, loaded.input.scale, loaded.input.zero_point)
        batch = len(data)
        if self._gpu is not None:
            raw = self._run_gpu(data)
        elif batch == self._base_batch:
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
        return decode_output(raw, loaded.output.scale, loaded.output.zero_point)

    def details(self) -> dict:
        if self._gpu is not None:
            return {"batch_resizable": False}
        return {"batch_resizable": self._resizable, "cached_batches": sorted(self._interpreters)}


def _gpu_delegate():
    """The classic GPU delegate the user named in $UNET_LITERT_GPU_DELEGATE, freshly loaded per interpreter."""
    from ai_edge_litert.interpreter import load_delegate

    library = os.environ[DELEGATE_ENV]
    try:
        ctypes.CDLL(library)  # probe first: a failed load_delegate leaves a noisy half-built Delegate
        return load_delegate(library)
    except (ValueError, OSError, RuntimeError) as exc:
        reason = one_line(exc, 160).removeprefix(f"{library}: ")
        raise RuntimeUnavailable(f"no GPU: the GPU delegate {library} (${DELEGATE_ENV}) did not load: "
                                 f"{reason}") from exc


def _compile_gpu(path: Path, threads: int, version: str) -> _GpuModel:
    """LiteRT's CompiledModel on the GPU (see the module docstring); RuntimeUnavailable says why not."""
    if module_missing("ai_edge_litert.compiled_model"):
        raise RuntimeUnavailable(f"no GPU: ai-edge-litert {version} has no CompiledModel API "
                                 "(its GPU route needs ai-edge-litert>=2.0)")
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(VULKAN_LOADER)
        except OSError:
            raise RuntimeUnavailable(f"no GPU: LiteRT's GPU accelerator runs WebGPU over Vulkan and the Vulkan "
                                     f"loader ({VULKAN_LOADER}) is not installed (apt install libvulkan1)") from None
    from ai_edge_litert.compiled_model import (
        CompiledModel,
        CpuOptions,
        GpuOptions,
        HardwareAccelerator,
        Options,
    )

    enforce_f32 = os.environ.get(FP32_ENV, "") == "1"
    attempts = [HardwareAccelerator.GPU, HardwareAccelerator.GPU | HardwareAccelerator.CPU]
    failures = []
    for accelerators in attempts:
        options = Options(hardware_accelerators=accelerators, cpu_options=CpuOptions(num_threads=threads),
                          gpu_options=GpuOptions(enforce_f32=enforce_f32))
        with held_stderr() as held:
            try:
                model = CompiledModel.from_file(str(path), options=options)
                inputs, outputs = model.create_input_buffers(0), model.create_output_buffers(0)
            except RuntimeError as exc:
                error = exc
            else:
                error = None
        if error is None:
            signature = next(iter(model.get_signature_list()))
            out = next(iter(model.get_output_tensor_details(signature).values()))
            return _GpuModel(model, inputs, outputs, tuple(out["shape"]), np.dtype(out["dtype"]),
                             bool(model.is_fully_accelerated()) and accelerators == attempts[0])
        missing_gpu = gpu_failure(held)
        if missing_gpu:
            raise RuntimeUnavailable(missing_gpu) from error
        failures.append(_litert_error(error, held))
    raise ModelLoadError(f"{path.name}: LiteRT could not compile it for the GPU: {failures[-1]}")
