"""MediaPipe Tasks Vision's ``ImageSegmenter`` (``@mediapipe/tasks-vision``) in a headless Chromium: a .tflite with
segmenter metadata, given camera bytes as an image, scored on its category mask (MediaPipe's own argmax of the
model's scores). Device "cpu": the CPU delegate; "gpu": the GPU delegate (WebGL). See ``web.py``.

MediaPipe reads an in-graph-argmax model's N×H×W class map as H×W pixels of W score channels and answers an
all-zero mask without an error. Such a file is refused here, before the browser starts, with the way out: the
logits model, whose scores MediaPipe argmaxes itself.

Measured with ``@mediapipe/tasks-vision`` 1.1.0 in Chromium 156 (SwiftShader): the GPU delegate answers a
uint8-input logits model at 18-20% agreement without an error (its CPU delegate: 98.9%), and refuses a full-int8
uint8-output one ("Unsupported input tensor type: Float32"); float-input files (fp32, int8 with a float head) agree
as on the CPU. The row runs and is flagged against the file's export-time agreement, so that a fixed release shows.
"""

from __future__ import annotations

from pathlib import Path

from exporter.runtimes.base import ModelLoadError, TensorInfo, register
from exporter.runtimes.web import WebRuntime

ARGMAX_REFUSAL = ("its output is a class map (an in-graph argmax): MediaPipe's ImageSegmenter reads it as score "
                  "channels and answers an all-zero mask without an error; give MediaPipe the logits model")


@register
class MediaPipeWeb(WebRuntime):
    name = "mediapipe-web"
    formats = ("tflite",)
    package = "@mediapipe/tasks-vision"
    page_runtime = "mediapipe-web"
    backends = {"cpu": "cpu", "gpu": "gpu"}
    order = 62

    def _check_file(self, path: Path, file_in: TensorInfo | None, file_out: TensorInfo | None) -> None:
        if file_out is not None and file_out.kind == "class_map":
            raise ModelLoadError(f"{path.name}: {ARGMAX_REFUSAL}")

    def _page_io(self, opened, file_in, file_out):
        """MediaPipe takes camera bytes whatever the model's input type, and gives a class map."""
        height, width = (file_in.shape[1:3] if file_in is not None and len(file_in.shape) == 4 else (None, None))
        return (TensorInfo.of((1, height, width, 3), "uint8", 1 / 255, 0),
                TensorInfo.of((1, height, width), "uint8", output=True))
