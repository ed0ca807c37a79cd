"""LiteRT.js (``@litertjs/core``) in a headless Chromium: .tflite on its WebAssembly (XNNPACK) backend for device
"cpu", its WebGPU backend for "gpu". See ``web.py`` for how a web row runs.

LiteRT.js runs static shapes only: a file whose batch is dynamic (-1) is refused on both backends, with
LiteRT.js's own message (the row fails). Export for the browser with a fixed batch (``--target web``).
Threads: the WebAssembly backend's ``numThreads`` with the threaded build (the page is cross-origin isolated).
"""

from __future__ import annotations

from exporter.runtimes.base import register
from exporter.runtimes.web import WebRuntime


@register
class LiteRtJs(WebRuntime):
    name = "litertjs"
    formats = ("tflite",)
    package = "@litertjs/core"
    page_runtime = "litertjs"
    order = 60
