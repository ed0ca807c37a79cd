"""Keras (TensorFlow backend): the trained .keras model itself — the reference every export is held to.

TensorFlow is imported inside ``load`` only (the one adapter allowed to import it).

Threads: ``tf.config.threading.set_intra_op_parallelism_threads`` only takes effect if called before
TensorFlow has run anything in this process (the bench gives every runtime a fresh worker process, so there
it always does). If TensorFlow is already initialised with a different count, the request cannot be applied:
the adapter keeps going and ``info()`` reports the count actually in force plus a ``threads_note``.

Predict: ``model.predict_on_batch`` (a traced ``tf.function`` under the hood): as fast as a hand-made
``tf.function`` and faster than eager calls or XLA here (benchmarks/RESULTS.md, "Adapter choices").
"""

from __future__ import annotations

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
    one_line,
    register,
    tensor_details,
)


@register
class KerasRuntime(Runtime):
    name = "keras"
    formats = ("keras",)
    modules = ("tensorflow", "keras")
    distributions = ("tensorflow", "tensorflow-cpu", "tf-nightly")

    def __init__(self) -> None:
        super().__init__()
        self._model = None
        self._tf_device = "/CPU:0"
        self._threads_note: str | None = None

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

    def load(self, path, device: str = "cpu", threads: int | None = None) -> None:
        path = self._begin_load(path, device, threads)
        import keras
        import tensorflow as tf

        self._set_threads(tf, self.threads)
        if device == "gpu":
            gpus = tf.config.list_physical_devices("GPU")
            if not gpus:
                raise RuntimeUnavailable("no GPU: TensorFlow lists no physical GPU devices")
            self._tf_device = "/GPU:0"
        else:
            self._tf_device = "/CPU:0"
        if path.suffix.lower() == ".keras" and not zipfile.is_zipfile(path):
            raise ModelLoadError(f"{path.name}: not a .keras zip archive (truncated or corrupt)")
        try:
            with tf.device(self._tf_device):
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
        self._providers = [self._tf_device]
        policy = getattr(model, "dtype_policy", None)
        self._precision = getattr(policy, "name", None) or "float32"

    def predict(self, images: np.ndarray) -> np.ndarray:
        self._require_loaded()
        import tensorflow as tf

        images = check_images(images)
        with tf.device(self._tf_device):
            raw = self._model.predict_on_batch(images)
        return decode_output(np.asarray(raw))

    def details(self) -> dict:
        return {"keras_version": distribution_version("keras"),
                **({"threads_note": self._threads_note} if self._threads_note else {})}
