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

import numpy as np

from exporter.runtimes.base import (
    ModelLoadError,
    Runtime,
    RuntimeUnavailable,
    check_images,
    decode_output,
    default_threads,
    distribution_version,
    is_class_map,
    module_missing,
    one_line,
    register,
    tensor_details,
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

    def __init__(self) -> None:
        super().__init__()
        self._model = None
        self._backend: str | None = None
        self._device_scope = contextlib.nullcontext
        self._threads_note: str | None = None

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

    def _set_threads(self, tf, threads: int | None) -> None:
        self._threads_note = None
        current = tf.config.threading.get_intra_op_parallelism_threads()
        if threads is not None and threads != current:
            try:
                tf.config.threading.set_intra_op_parallelism_threads(threads)
            except RuntimeError:  # TensorFlow already initialised in this process
                self._threads_note = (f"requested {threads} threads, but TensorFlow was already initialised "
                                      f"with intra-op threads = {current or 'default'}")
        actual = tf.config.threading.get_intra_op_parallelism_threads()
        self.threads = actual or default_threads()  # 0 = TensorFlow's default: every core

    def _place_tensorflow(self, device: str) -> None:
        from exporter.tf_quiet import import_tensorflow

        tf = import_tensorflow()
        self._set_threads(tf, self.threads)
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
            self._providers = [f"tensorflow {name} ({details.get('device_name', 'GPU')})"]
            self._precision_note = " (TF32 allowed)"
        else:
            self._providers = [f"tensorflow {name}"]
        self._device_scope = lambda: tf.device(name)

    def _place_jax(self, device: str) -> None:
        import jax

        if device == "gpu":
            try:
                chosen = jax.devices("gpu")[0]
            except RuntimeError:
                platforms = sorted({d.platform for d in jax.devices()})
                raise RuntimeUnavailable(f"no GPU: JAX {jax.__version__} sees only {', '.join(platforms)} devices "
                                         "(pip install 'jax[cuda13]' for an NVIDIA GPU)") from None
            self._precision_note = " (TF32 allowed)"
        else:
            chosen = jax.devices("cpu")[0]
            if self.threads is not None:
                self._threads_note = f"requested {self.threads} threads; JAX's CPU backend chooses its own"
            self.threads = default_threads()
        self._providers = [f"jax {chosen.platform}:{chosen.id} ({chosen.device_kind})"]
        self._device_scope = lambda: jax.default_device(chosen)

    def load(self, path, device: str = "cpu", threads: int | None = None) -> None:
        path = self._begin_load(path, device, threads)
        backend = keras_backend()
        if "keras" not in sys.modules:
            use_backend(backend)
        self._backend, self._precision_note, self._threads_note = backend, "", None
        if backend == "jax":
            self._place_jax(device)
        else:
            self._place_tensorflow(device)
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
        in_shape, out_shape = tuple(model.inputs[0].shape), tuple(model.outputs[0].shape)
        if len(in_shape) != 4 or in_shape[-1] != 3:
            raise ModelLoadError(f"{path.name}: expected an N×H×W×3 input, got {in_shape}")
        out_dtype = np.dtype(str(model.outputs[0].dtype))
        self._model = model
        self._input = tensor_details(in_shape, str(model.inputs[0].dtype), name=model.inputs[0].name)
        self._output = tensor_details(out_shape, out_dtype, name=model.outputs[0].name)
        kind_shape = [d if d is not None else -1 for d in out_shape]
        self._output["kind"] = "class_map" if is_class_map(kind_shape, out_dtype) else "logits"
        policy = getattr(model, "dtype_policy", None)
        self._precision = (getattr(policy, "name", None) or "float32") + self._precision_note

    def predict(self, images: np.ndarray) -> np.ndarray:
        self._require_loaded()
        images = check_images(images)
        with self._device_scope():
            raw = self._model.predict_on_batch(images)
        return decode_output(np.asarray(raw))

    def details(self) -> dict:
        return {"keras_version": distribution_version("keras"), "keras_backend": self._backend,
                **({"threads_note": self._threads_note} if self._threads_note else {})}
