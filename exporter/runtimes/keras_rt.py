"""Keras: the trained .keras model itself — the reference every export is held to — on TensorFlow or JAX.

Backend: Keras 3 picks it once per process, at its first import. ``KERAS_BACKEND`` is honoured (tensorflow
or jax); unset, it is TensorFlow where installed, else JAX — the light route: the same .keras file on a host
or device with ``jax`` (``jax[cuda13]`` for NVIDIA GPUs) and no TensorFlow, or whose TensorFlow has no GPU
build. The row's runtime version and providers say which backend and device ran. Frameworks are imported
inside ``load`` only.

Threads (TensorFlow): ``tf.config.threading.set_intra_op_parallelism_threads`` only takes effect before
TensorFlow has run anything in this process (the bench gives every runtime a fresh worker process, so there
it always does); otherwise ``info()`` reports the count in force plus a ``threads_note``. JAX's CPU backend
chooses its own thread pool: the request is noted, not applied.

GPU precision: TensorFlow and XLA (JAX) let float32 convolutions run in TF32 on Ampere and later GPUs by
default; the row says so, and its drift against the CPU reference shows what that costs.

Predict: ``model.predict_on_batch`` (a traced function under the hood): as fast as a hand-made
``tf.function`` and faster than eager calls or XLA on the CPU (benchmarks/RESULTS.md, "Adapter choices").
"""

from __future__ import annotations

import contextlib
import os
import sys
import zipfile
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
    distribution_version,
    module_missing,
    one_line,
    register,
)

BACKENDS = ("tensorflow", "jax")


def use_backend(name: str) -> None:
    """Before Keras' first import in this process: run it on ``name`` (not ~/.keras/keras.json's choice)."""
    os.environ["KERAS_BACKEND"] = name
    if name == "jax":
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # a GPU shared with other processes


def keras_backend() -> str | None:
    """The backend Keras uses (or will use) in this process; None if no usable one is installed."""
    if "keras" in sys.modules and hasattr(sys.modules["keras"], "backend"):
        return sys.modules["keras"].backend.backend()
    wanted = os.environ.get("KERAS_BACKEND")
    if wanted:
        return wanted
    return next((name for name in BACKENDS if not module_missing(name)), None)


@register
class KerasRuntime(Runtime):
    name = "keras"
    formats = ("keras",)
    modules = ("keras",)
    distributions = ("keras",)
    order = 10
    extra = "host"  # TensorFlow; or the jax extra: Keras on JAX

    def __init__(self) -> None:
        super().__init__()
        self._model = None
        self._backend: str | None = None
        self._device_scope = contextlib.nullcontext
        self._notes: dict[str, str] = {}

    @classmethod
    def packages(cls) -> dict[str, tuple[str, ...]]:
        return {"tensorflow": ("tensorflow", "tensorflow-cpu"), "keras": ("keras",), "jax": ("jax",)}

    @classmethod
    def available(cls) -> str | None:
        missing = super().available()
        if missing:
            return missing
        backend = keras_backend()
        if backend is None:
            return "keras has no backend here: neither tensorflow nor jax is installed"
        if backend not in BACKENDS:
            return f"KERAS_BACKEND={backend}: the keras adapter runs the tensorflow or jax backend"
        if module_missing(backend):
            return f"KERAS_BACKEND={backend}, but {backend} is not installed"
        return None

    def version(self) -> str:
        backend = self._backend or keras_backend()
        names = {"tensorflow": ("tensorflow", "tensorflow-cpu", "tf-nightly"), "jax": ("jax",)}.get(backend, ())
        keras_version = distribution_version("keras") or "unknown"
        return f"{keras_version} ({backend} {distribution_version(*names) or 'unknown'})" if names else keras_version

    def _set_threads(self, tf, threads: int | None) -> int:
        """Apply ``threads`` to TensorFlow where it still can be; the count in force."""
        current = tf.config.threading.get_intra_op_parallelism_threads()
        if threads is not None and threads != current:
            try:
                tf.config.threading.set_intra_op_parallelism_threads(threads)
            except RuntimeError:  # TensorFlow already initialised in this process
                self._notes["threads_note"] = (f"requested {threads} threads, but TensorFlow was already "
                                               f"initialised with intra-op threads = {current or 'default'}")
        return tf.config.threading.get_intra_op_parallelism_threads() or default_threads()  # 0: every core

    def _place_tensorflow(self, device: str, threads: int | None) -> tuple[str, int]:
        """TensorFlow's device for ``device``: (provider, threads in force)."""
        from exporter.stdio import import_tensorflow

        tf = import_tensorflow()
        threads = self._set_threads(tf, threads)
        name = "/CPU:0"
        if device == "gpu":
            gpus = tf.config.list_physical_devices("GPU")
            if not gpus:
                built = "no GPU found" if tf.test.is_built_with_cuda() else "this TensorFlow has no GPU build"
                raise RuntimeUnavailable(f"no GPU: TensorFlow {tf.__version__} lists no GPU ({built}); the same "
                                         "file runs on a GPU through Keras' JAX backend: KERAS_BACKEND=jax with "
                                         "pip install 'jax[cuda13]'")
            name = "/GPU:0"
            details = tf.config.experimental.get_device_details(gpus[0]) or {}
            provider = f"tensorflow {name} ({details.get('device_name', 'GPU')})"
        else:
            provider = f"tensorflow {name}"
        self._device_scope = lambda: tf.device(name)
        return provider, threads

    def _place_jax(self, device: str, threads: int | None) -> tuple[str, int]:
        """JAX's device for ``device``: (provider, threads in force)."""
        import jax

        if device == "gpu":
            try:
                chosen = jax.devices("gpu")[0]
            except RuntimeError:
                platforms = sorted({d.platform for d in jax.devices()})
                raise RuntimeUnavailable(f"no GPU: JAX {jax.__version__} sees only {', '.join(platforms)} devices "
                                         "(pip install 'jax[cuda13]' for an NVIDIA GPU)") from None
        else:
            chosen = jax.devices("cpu")[0]
            if threads is not None:
                self._notes["threads_note"] = f"requested {threads} threads; JAX's CPU backend chooses its own"
            threads = default_threads()
        self._device_scope = lambda: jax.default_device(chosen)
        return f"jax {chosen.platform}:{chosen.id} ({chosen.device_kind})", threads

    def _open(self, path: Path, device: str, threads: int | None) -> Loaded:
        backend = keras_backend()
        if "keras" not in sys.modules:
            use_backend(backend)
        self._backend, self._notes = backend, {}
        place = self._place_jax if backend == "jax" else self._place_tensorflow
        provider, threads = place(device, threads)
        model = self._load_model(path)
        in_shape, out_shape = tuple(model.inputs[0].shape), tuple(model.outputs[0].shape)
        if len(in_shape) != 4 or in_shape[-1] != 3:
            raise ModelLoadError(f"{path.name}: expected an N×H×W×3 input, got {in_shape}")
        self._model = model
        policy = getattr(model, "dtype_policy", None)
        precision = (getattr(policy, "name", None) or "float32") + (" (TF32 allowed)" if device == "gpu" else "")
        return Loaded(path, device, threads,
                      TensorInfo.of(in_shape, str(model.inputs[0].dtype), name=model.inputs[0].name),
                      TensorInfo.of(out_shape, str(model.outputs[0].dtype), name=model.outputs[0].name, output=True),
                      (provider,), precision,
                      {"keras_version": distribution_version("keras"), "keras_backend": backend, **self._notes})

    def _load_model(self, path: Path):
        """The .keras file, safe mode on, on the chosen device; ModelLoadError naming what is wrong."""
        import keras

        if path.suffix.lower() == ".keras" and not zipfile.is_zipfile(path):
            raise ModelLoadError(f"{path.name}: not a .keras zip archive (truncated or corrupt)")
        try:
            with self._device_scope():
                model = keras.saving.load_model(str(path), compile=False, safe_mode=True)
        except Exception as exc:  # zip, h5, JSON, deserialisation errors: all mean the file is unusable
            raise ModelLoadError(f"{path.name}: {exc.__class__.__name__}: {one_line(exc)}") from exc
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise ModelLoadError(f"{path.name}: expected one input and one output")
        return model

    def predict(self, images: np.ndarray) -> np.ndarray:
        self._require_loaded()
        images = check_images(images)
        with self._device_scope():
            raw = self._model.predict_on_batch(images)
        return decode_output(np.asarray(raw))
