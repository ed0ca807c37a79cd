"""Runtime adapters: run any exported artifact on keras, litert, onnxruntime or openvino, float frames in.

Importing this package imports no framework: each adapter imports its runtime inside ``load``, so a device
with numpy, click and a single runtime can use it (the others report ``available()`` reasons).
"""

from exporter.runtimes import keras_rt, litert_rt, onnxruntime_rt, openvino_rt  # noqa: F401  (fill the registry)
from exporter.runtimes.base import (
    RUNTIMES,
    ModelLoadError,
    Runtime,
    RuntimeUnavailable,
    get_runtime,
    runtimes_for,
)

__all__ = ["RUNTIMES", "ModelLoadError", "Runtime", "RuntimeUnavailable", "get_runtime", "runtimes_for"]
