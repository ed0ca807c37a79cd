"""What native libraries and converters print: held back, filtered, or silenced — the one stdio helper.

TensorFlow's C++ side logs through absl before logging is initialised, so ``TF_CPP_MIN_LOG_LEVEL`` does not
reach those lines: on a machine without a GPU every command printed "failed call to cuInit: INTERNAL: CUDA
error", "Could not find cuda drivers", "All log messages before absl::InitializeLog()..." and the oneDNN and
CPU-instruction notices, which a newcomer reads as failures. Native runtimes (LiteRT's GPU accelerator) say
why a device failed only on file descriptor 2, not in the exception they raise. ``held_stderr`` sends that
descriptor to a temporary file for a while; ``filtered_stderr`` passes on what is not a known notice.

Standard library only: frameworks are imported inside the functions that need them (host and device).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator

NOISE = re.compile(
    r"All log messages before absl::InitializeLog"
    r"|cudart_stub|cuda_platform|cuda_executor|cuInit|cuda_dnn|cuda_fft|cuda_blas|Unable to register cu"
    r"|oneDNN custom operations are on|TF_ENABLE_ONEDNN_OPTS"
    r"|cpu_feature_guard|To enable the following instructions|rebuild TensorFlow with the appropriate compiler"
    r"|computation_placer|TF-TRT Warning"
)
# What the TFLite converter and LiteRT's interpreter print for every model: settings, not news.
CONVERTER_NOISE = re.compile(NOISE.pattern + r"|Created TensorFlow Lite XNNPACK delegate|fully_quantize: \d"
                             r"|Estimated count of arithmetic ops|arithmetic ops\.$")


class HeldOutput:
    """What was written to file descriptor 2 inside ``held_stderr`` (``text`` is set on leaving)."""

    text: str = ""


@contextlib.contextmanager
def held_stderr() -> Iterator[HeldOutput]:
    """While inside, what anything (native libraries included) writes to fd 2 is held back, not shown.

    Yields a ``HeldOutput`` whose ``text`` holds it afterwards.
    """
    held = HeldOutput()
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no usable fd 2 (a closed stderr): nothing to hold
        yield held
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield held
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            held.text = sink.read().decode("utf-8", "replace")


@contextlib.contextmanager
def filtered_stderr(noise: re.Pattern = NOISE, drop_on_error: bool = False) -> Iterator[None]:
    """While inside, what anything (C++ included) writes to fd 2 is held back; on leaving, the lines that do
    not match ``noise`` are written to stderr (none when an exception leaves and ``drop_on_error``: its message
    says what went wrong, in one line)."""
    held, failed = None, False
    try:
        with held_stderr() as held:
            yield
    except BaseException:
        failed = True
        raise
    finally:
        text = held.text if held is not None and not (failed and drop_on_error) else ""
        kept = [line for line in text.splitlines() if line.strip() and not noise.search(line)]
        if kept:
            sys.stderr.write("\n".join(kept) + "\n")
            sys.stderr.flush()


@contextlib.contextmanager
def silenced_python_output() -> Iterator[None]:
    """Python-level stdout and stderr swallowed: converters that print endpoint listings from Python."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


def import_tensorflow():
    """``tensorflow``, imported (and its devices listed) without the start-up notices."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    with filtered_stderr():
        import tensorflow as tf

        tf.config.list_physical_devices()
    return tf


def devices_line() -> str:
    """'TensorFlow 2.21.0 runs on the CPU (no GPU found)' or '... on GPU:0 (NVIDIA H100 ...) and the CPU'."""
    tf = import_tensorflow()
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        built = "no GPU found" if tf.test.is_built_with_cuda() else "this TensorFlow has no GPU support"
        return f"TensorFlow {tf.__version__} runs on the CPU ({built})"
    names = []
    for gpu in gpus:
        details = tf.config.experimental.get_device_details(gpu) or {}
        names.append(f"{gpu.name.split('device:')[-1]} ({details.get('device_name', 'GPU')})")
    return f"TensorFlow {tf.__version__} runs on {', '.join(names)} and the CPU"


_announced = False


def announce(log: Callable[[str], None] | None) -> None:
    """Import TensorFlow quietly and, once per process, ``log`` which devices it runs on."""
    global _announced
    line = devices_line()
    if log is not None and not _announced:
        _announced = True
        log(line)
