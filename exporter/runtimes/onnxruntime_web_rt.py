"""onnxruntime-web in a headless Chromium: .onnx on its WebAssembly backend for device "cpu", its WebGPU backend
for "gpu" (the ``ort.webgpu.min.mjs`` build: the default bundle answered an int8 QDQ model wrongly without an
error, microsoft/onnxruntime#32578). See ``web.py`` for how a web row runs.

A uint8 input is taken as camera bytes (float = byte / 255), as the native ONNX Runtime adapter does.
Threads: ``ort.env.wasm.numThreads`` (the page is cross-origin isolated, so WebAssembly threads are allowed).
"""

from __future__ import annotations

from exporter.runtimes.base import register
from exporter.runtimes.web import WebRuntime


@register
class OnnxRuntimeWeb(WebRuntime):
    name = "onnxruntime-web"
    formats = ("onnx",)
    package = "onnxruntime-web"
    page_runtime = "onnxruntime-web"
    order = 61
