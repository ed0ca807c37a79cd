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

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "ROCMExecutionProvider",
                 "MIGraphXExecutionProvider", "DmlExecutionProvider")
CPU_PROVIDER = "CPUExecutionProvider"
WEBGPU_PLUGIN = "onnxruntime_ep_webgpu"  # pip install onnxruntime-ep-webgpu
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

    def __init__(self) -> None:
        super().__init__()
        self._session = None
        self._input_name: str | None = None
        self._output_name: str | None = None
        self._nodes: dict[str, int] = {}

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

    def load(self, path, device: str = "cpu", threads: int | None = None) -> None:
        path = self._begin_load(path, device, threads)
        import onnxruntime as ort

        plugin_devices = []
        if device == "gpu":
            available = ort.get_available_providers()
            providers = [p for p in GPU_PROVIDERS if p in available]
            if providers:
                providers.append(CPU_PROVIDER)
            else:
                plugin_devices, notes = self._plugin_gpu_devices(ort)
                if not plugin_devices:
                    raise RuntimeUnavailable(f"no GPU: onnxruntime {ort.__version__} has no GPU execution provider "
                                             f"here (providers: {', '.join(available)}"
                                             f"{'; ' + notes if notes else ''}); {NO_GPU_HINT}")
                plugin_devices = plugin_devices[:1]  # e.g. WebGPU: one EP device, it picks the adapter itself
        else:
            providers = [CPU_PROVIDER]
        if self.threads is None:
            self.threads = default_threads()
        options = ort.SessionOptions()
        options.add_session_config_entry("session.record_ep_graph_assignment_info", "1")
        if plugin_devices:
            try:
                options.add_provider_for_devices(plugin_devices, {})
            except Exception as exc:
                raise RuntimeUnavailable(f"no GPU: {plugin_devices[0].ep_name} would not take the session: "
                                         f"{one_line(exc, 160)}") from exc
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        try:
            if plugin_devices:
                session = ort.InferenceSession(str(path), sess_options=options)
            else:
                session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as exc:  # ORT raises its own pybind exception types (InvalidProtobuf, Fail, …)
            raise ModelLoadError(f"{path.name}: {one_line(exc)}") from exc
        self._nodes = self._assignment(session)
        self._providers = [name for name in session.get_providers()
                           if not self._nodes or self._nodes.get(name) or name == CPU_PROVIDER]
        self._precision = "as exported"
        if device == "gpu":
            on_gpu = sum(n for name, n in self._nodes.items() if name != CPU_PROVIDER)
            if self._providers == [CPU_PROVIDER] or (self._nodes and not on_gpu):
                raise RuntimeUnavailable(f"no GPU: onnxruntime placed every node on the CPU (providers offered: "
                                         f"{', '.join(session.get_providers())})")
            if "CUDAExecutionProvider" in self._providers or "TensorrtExecutionProvider" in self._providers:
                self._precision = "as exported (TF32 allowed by the CUDA provider's default)"
        inputs, outputs = session.get_inputs(), session.get_outputs()
        if len(inputs) != 1 or not outputs:
            raise ModelLoadError(f"{path.name}: expected one input, got {len(inputs)}")
        inp, out = inputs[0], outputs[0]
        in_dtype, out_dtype = ONNX_TYPES.get(inp.type), ONNX_TYPES.get(out.type)
        if in_dtype is None or out_dtype is None:
            raise ModelLoadError(f"{path.name}: unsupported I/O types {inp.type} → {out.type}")
        if len(inp.shape) != 4 or inp.shape[-1] != 3:
            raise ModelLoadError(f"{path.name}: expected an N×H×W×3 (NHWC) input, got {inp.shape}")
        meta = dict(session.get_modelmeta().custom_metadata_map)
        scale, zero_point = 0.0, 0
        if in_dtype in ("uint8", "int8", "int16"):
            if "input_scale" in meta:
                scale, zero_point = float(meta["input_scale"]), int(meta.get("input_zero_point", 0))
            elif in_dtype == "uint8" and _byte_normalization(meta):
                scale, zero_point = 1.0 / 255.0, 0
            else:
                raise ModelLoadError(f"{path.name}: {in_dtype} input without input_scale metadata is unsupported")
        self._session = session
        self._input_name, self._output_name = inp.name, out.name
        self._input = tensor_details(_dims(inp.shape), in_dtype, scale, zero_point, inp.name)
        self._output = tensor_details(_dims(out.shape), out_dtype, name=out.name)
        out_shape = [d if d is not None else -1 for d in _dims(out.shape)]
        self._output["kind"] = "class_map" if is_class_map(out_shape, out_dtype) else "logits"

    def predict(self, images: np.ndarray) -> np.ndarray:
        self._require_loaded()
        data = quantize_input(check_images(images), self._input["dtype"], self._input["scale"],
                              self._input["zero_point"])
        (raw,) = self._session.run([self._output_name], {self._input_name: data})
        return decode_output(raw)

    def details(self) -> dict:
        if not self._nodes:
            return {}
        facts = {"nodes_by_provider": dict(self._nodes)}
        if self.device == "gpu":
            fallback = self._nodes.get(CPU_PROVIDER, 0)
            facts.update(cpu_fallback_nodes=fallback, fully_accelerated=fallback == 0)
        return facts
