"""ONNX Runtime: .onnx on the CPU provider, or a GPU execution provider for device "gpu".

GPU routes, first present wins: the TensorRT and CUDA providers of ``onnxruntime-gpu`` (and ROCm, MIGraphX,
DirectML builds); then plugin execution providers on a GPU, the WebGPU plugin (``onnxruntime-ep-webgpu``,
needs ORT >= 1.24.4 and, on Linux, the Vulkan loader) registered here when installed. ORT places each node
on the first provider that takes it and the rest on the CPU: the graph assignment is recorded and the nodes
that fell back to the CPU are counted (``cpu_fallback_nodes``).

The exported models have a dynamic batch dimension, so any N runs in one session. Threads:
``intra_op_num_threads`` (``None`` = every core this process may use, set explicitly rather than ORT's
physical-core default), ``inter_op_num_threads=1`` (the U-Net is one chain), full graph optimisation.

ONNX I/O tensors carry no quantization parameters (QDQ models keep float I/O). A uint8 input is taken to
be camera bytes (``float = byte / 255``, as the exporter's ``normalization`` metadata says); an int8/int16
input needs ``input_scale`` / ``input_zero_point`` metadata, else it is refused as unsupported.
"""

from __future__ import annotations

import json
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
    one_line,
    quantize_input,
    register,
)

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "ROCMExecutionProvider",
                 "MIGraphXExecutionProvider", "DmlExecutionProvider")
CPU_PROVIDER = "CPUExecutionProvider"
NO_GPU_HINT = "onnxruntime-gpu brings CUDA/TensorRT, onnxruntime-ep-webgpu brings WebGPU"
ONNX_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
              "tensor(uint8)": "uint8", "tensor(int8)": "int8", "tensor(int16)": "int16",
              "tensor(int32)": "int32", "tensor(int64)": "int64"}


def _dims(shape) -> list:
    """ORT shapes use strings or None for symbolic dims."""
    return [d if isinstance(d, int) else None for d in shape]


def _byte_normalization(meta: dict[str, str]) -> bool:
    """True unless the model's ``normalization`` metadata says something other than float = byte / 255."""
    raw = meta.get("normalization")
    if not raw:
        return True
    try:
        norm = json.loads(raw)
        return all(m == 0 for m in norm.get("mean", [0])) and all(s == 255 for s in norm.get("std", [255]))
    except (ValueError, AttributeError, TypeError):
        return True


@register
class OnnxRuntime(Runtime):
    name = "onnxruntime"
    formats = ("onnx",)
    modules = ("onnxruntime",)
    distributions = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml")

    order = 30

    def __init__(self) -> None:
        super().__init__()
        self._ort_session = None
        self._names: tuple[str, str] = ("", "")

    @classmethod
    def packages(cls) -> dict[str, tuple[str, ...]]:
        return {cls.name: cls.distributions, "onnxruntime-ep-webgpu": ("onnxruntime-ep-webgpu",)}

    def version(self) -> str:
        version = super().version()
        if version == "unknown" and not self.available():
            import onnxruntime

            version = onnxruntime.__version__
        return version

    @staticmethod
    def _plugin_gpu_devices(ort) -> tuple[list, str]:
        """Plugin EP devices on a GPU (registering the WebGPU plugin if installed), and what was found."""
        notes = []
        try:
            import onnxruntime_ep_webgpu as webgpu
        except ImportError:
            webgpu = None
        if webgpu is not None and hasattr(ort, "register_execution_provider_library"):
            try:
                ort.register_execution_provider_library("webgpu", webgpu.get_library_path())
            except Exception as exc:  # registered already (fine), or an ORT too old for the plugin
                if "already registered" not in str(exc).lower():
                    notes.append(f"the WebGPU plugin did not register: {one_line(exc, 120)}")
        if not hasattr(ort, "get_ep_devices"):
            return [], f"onnxruntime {ort.__version__} has no plugin execution providers"
        gpu_type = ort.OrtHardwareDeviceType.GPU
        try:
            devices = [d for d in ort.get_ep_devices() if d.device.type == gpu_type and d.ep_name != CPU_PROVIDER]
        except Exception as exc:  # a plugin that fails while listing its devices: no GPU through it
            return [], f"listing the plugin devices failed: {one_line(exc, 120)}"
        if webgpu is not None and not devices and not notes:
            notes.append("the WebGPU plugin found no GPU adapter (Vulkan loader and driver)")
        return devices, "; ".join(notes)

    def _assignment(self, session) -> dict[str, int]:
        """Graph nodes per execution provider, where this ORT records it (else empty)."""
        try:
            subgraphs = session.get_provider_graph_assignment_info()
        except (AttributeError, RuntimeError):
            return {}
        counts: dict[str, int] = {}
        for subgraph in subgraphs:
            counts[subgraph.ep_name] = counts.get(subgraph.ep_name, 0) + len(subgraph.get_nodes())
        return counts

    def _providers_for(self, ort, device: str) -> tuple[list[str], list]:
        """(providers, plugin EP devices) for ``device``; RuntimeUnavailable when no GPU route exists."""
        if device != "gpu":
            return [CPU_PROVIDER], []
        available = ort.get_available_providers()
        providers = [p for p in GPU_PROVIDERS if p in available]
        if providers:
            return [*providers, CPU_PROVIDER], []
        plugin_devices, notes = self._plugin_gpu_devices(ort)
        if not plugin_devices:
            raise RuntimeUnavailable(f"no GPU: onnxruntime {ort.__version__} has no GPU execution provider "
                                     f"here (providers: {', '.join(available)}"
                                     f"{'; ' + notes if notes else ''}); {NO_GPU_HINT}")
        return [], plugin_devices[:1]  # e.g. WebGPU: one EP device, it picks the adapter itself

    def _session(self, ort, path: Path, device: str, threads: int):
        """An InferenceSession on ``device`` with the graph assignment recorded."""
        providers, plugin_devices = self._providers_for(ort, device)
        options = ort.SessionOptions()
        options.add_session_config_entry("session.record_ep_graph_assignment_info", "1")
        if plugin_devices:
            try:
                options.add_provider_for_devices(plugin_devices, {})
            except Exception as exc:
                raise RuntimeUnavailable(f"no GPU: {plugin_devices[0].ep_name} would not take the session: "
                                         f"{one_line(exc, 160)}") from exc
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        try:
            if plugin_devices:
                return ort.InferenceSession(str(path), sess_options=options)
            return ort.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as exc:  # ORT raises its own pybind exception types (InvalidProtobuf, Fail, …)
            raise ModelLoadError(f"{path.name}: {one_line(exc)}") from exc

    def _placement(self, session, device: str) -> tuple[tuple[str, ...], str, dict]:
        """(providers that took nodes, precision, facts); RuntimeUnavailable when a GPU took nothing."""
        nodes = self._assignment(session)
        providers = tuple(name for name in session.get_providers()
                          if not nodes or nodes.get(name) or name == CPU_PROVIDER)
        precision, facts = "as exported", ({"nodes_by_provider": dict(nodes)} if nodes else {})
        if device == "gpu":
            on_gpu = sum(n for name, n in nodes.items() if name != CPU_PROVIDER)
            if providers == (CPU_PROVIDER,) or (nodes and not on_gpu):
                raise RuntimeUnavailable(f"no GPU: onnxruntime placed every node on the CPU (providers offered: "
                                         f"{', '.join(session.get_providers())})")
            if "CUDAExecutionProvider" in providers or "TensorrtExecutionProvider" in providers:
                precision = "as exported (TF32 allowed by the CUDA provider's default)"
            if nodes:
                fallback = nodes.get(CPU_PROVIDER, 0)
                facts.update(cpu_fallback_nodes=fallback, fully_accelerated=fallback == 0)
        return providers, precision, facts

    def _open(self, path: Path, device: str, threads: int | None) -> Loaded:
        import onnxruntime as ort

        threads = threads or default_threads()
        session = self._session(ort, path, device, threads)
        providers, precision, facts = self._placement(session, device)
        inputs, outputs = session.get_inputs(), session.get_outputs()
        if len(inputs) != 1 or not outputs:
            raise ModelLoadError(f"{path.name}: expected one input, got {len(inputs)}")
        inp, out = inputs[0], outputs[0]
        in_dtype, out_dtype = ONNX_TYPES.get(inp.type), ONNX_TYPES.get(out.type)
        if in_dtype is None or out_dtype is None:
            raise ModelLoadError(f"{path.name}: unsupported I/O types {inp.type} → {out.type}")
        if len(inp.shape) != 4 or inp.shape[-1] != 3:
            raise ModelLoadError(f"{path.name}: expected an N×H×W×3 (NHWC) input, got {inp.shape}")
        scale, zero_point = _input_quantization(path, in_dtype, dict(session.get_modelmeta().custom_metadata_map))
        self._ort_session = session
        self._names = (inp.name, out.name)
        return Loaded(path, device, threads, TensorInfo.of(_dims(inp.shape), in_dtype, scale, zero_point, inp.name),
                      TensorInfo.of(_dims(out.shape), out_dtype, name=out.name, output=True), providers, precision,
                      facts)

    def predict(self, images: np.ndarray) -> np.ndarray:
        loaded = self._require_loaded()
        data = quantize_input(check_images(images), loaded.input.dtype, loaded.input.scale, loaded.input.zero_point)
        input_name, output_name = self._names
        (raw,) = self._ort_session.run([output_name], {input_name: data})
        return decode_output(raw)


def _input_quantization(path: Path, dtype: str, meta: dict[str, str]) -> tuple[float, int]:
    """(scale, zero point) for an integer input: from ``input_scale`` metadata, or camera bytes for uint8."""
    if dtype not in ("uint8", "int8", "int16"):
        return 0.0, 0
    if "input_scale" in meta:
        return float(meta["input_scale"]), int(meta.get("input_zero_point", 0))
    if dtype == "uint8" and _byte_normalization(meta):
        return 1.0 / 255.0, 0
    raise ModelLoadError(f"{path.name}: {dtype} input without input_scale metadata is unsupported")
