"""Data-parallel training on several devices and hosts, on Keras 3's own distribution API (JAX backend).

Why JAX: Keras 3.15's ``fit`` fails under TensorFlow's ``MultiWorkerMirroredStrategy`` (keras-team/keras#20585,
reproduced here: "Attempt to convert a value (PerReplica…) with an unsupported type"), so the TensorFlow
backend can use one host only. Keras' ``DataParallel`` on JAX spans every device of every process:
``keras.distribution.initialize`` (``jax.distributed.initialize``) joins the processes, each process reads
its share of every global batch (``--batch-size`` is the global batch, split evenly), gradients are
averaged across all devices, so one worker and N workers train the same model from the same seed.

- N GPUs of one box: one process, ``--strategy data-parallel`` (every device JAX sees).
- Several hosts (or processes): one process per host, each given the coordinator's address, the number
  of workers and its index (``--coordinator``/``--workers``/``--worker-index``, or Keras' variables
  ``KERAS_DISTRIBUTION_JOB_ADDRESSES``/``_NUM_PROCESSES``/``_PROCESS_ID``). Worker 0 is the chief: it alone
  writes the run folder (checkpoints, state, model.keras, history), which every worker reads on
  ``--resume``: the run folder must be shared storage. Collectives between CPU processes use gloo.
- A worker that dies stops the others (their collectives fail); restart every worker with ``--resume``:
  they continue from the chief's last committed epoch.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exporter.errors import UserError
from exporter.parameters import Strategy

if TYPE_CHECKING:
    import keras

    from exporter.data.index import DataIndex
    from exporter.train import TrainConfig

@dataclass(frozen=True)
class Distribution:
    """How training is spread: over nothing (one device, the TensorFlow backend) or data-parallel (JAX)."""

    strategy: str = "none"
    workers: int = 1
    worker_index: int = 0
    coordinator: str | None = None  # HOST:PORT of worker 0 (multi-process only)

    def __post_init__(self) -> None:
        object.__setattr__(self, "strategy", Strategy.parse(self.strategy, "--strategy").value)
        if self.workers < 1 or not 0 <= self.worker_index < self.workers:
            raise UserError(f"--worker-index must be in 0..{self.workers - 1} (--workers {self.workers})")
        if self.workers > 1 and self.strategy == "none":
            raise UserError("--workers > 1 needs --strategy data-parallel")
        if self.workers > 1 and not self.coordinator:
            raise UserError("--workers > 1 needs --coordinator HOST:PORT (worker 0's address, the same on every "
                            "worker)")

    @property
    def active(self) -> bool:
        return self.strategy != "none"

    @property
    def chief(self) -> bool:
        """Whether this process writes the run folder (worker 0)."""
        return self.worker_index == 0

    @classmethod
    def from_environment(cls, strategy: str = "none", workers: int | None = None, worker_index: int | None = None,
                         coordinator: str | None = None) -> Distribution:
        """Options given, else Keras' own KERAS_DISTRIBUTION_* variables, else one worker."""
        env = os.environ
        def number(name: str, default: int) -> int:
            try:
                return int(env.get(name, default))
            except ValueError:
                raise UserError(f"${name}: expected a whole number, got {env[name]!r}") from None

        return cls(strategy=strategy,
                   workers=workers if workers is not None else number("KERAS_DISTRIBUTION_NUM_PROCESSES", 1),
                   worker_index=(worker_index if worker_index is not None
                                 else number("KERAS_DISTRIBUTION_PROCESS_ID", 0)),
                   coordinator=coordinator or (env.get("KERAS_DISTRIBUTION_JOB_ADDRESSES") or "").split(",")[0]
                   or None)


def choose_backend(distribution: Distribution) -> None:
    """Before Keras is imported: the JAX backend for a distributed run (Keras fixes it at its first import)."""
    if not distribution.active:
        return
    keras = sys.modules.get("keras")
    if keras is not None and hasattr(keras, "backend") and keras.backend.backend() != "jax":
        raise UserError(f"--strategy {distribution.strategy} trains on Keras' JAX backend, but this process already "
                        f"runs Keras on {keras.backend.backend()}; set KERAS_BACKEND=jax")
    if keras is None:
        from exporter.runtimes.keras_rt import use_backend

        use_backend("jax")


def start(distribution: Distribution, global_batch: int) -> tuple[int, str]:
    """Join the processes and spread the model over every device; (devices, one line saying where)."""
    try:
        import jax
    except ImportError:
        raise UserError("--strategy data-parallel needs jax (pip install jax, or 'jax[cuda13]' for NVIDIA "
                        "GPUs)") from None
    import keras

    if distribution.workers > 1:
        try:  # collectives between CPU processes (GPUs use NCCL whatever this says)
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
        except (AttributeError, ValueError):  # pragma: no cover - an older JAX without the option
            pass
        try:
            keras.distribution.initialize(distribution.coordinator, distribution.workers, distribution.worker_index)
        except Exception as exc:  # a coordinator that never answers, a port in use: say which
            raise UserError(f"--coordinator {distribution.coordinator}: the workers could not join "
                            f"({exc.__class__.__name__}: {str(exc).splitlines()[0][:200]})") from None
    devices = jax.devices()
    if global_batch % len(devices):
        raise UserError(f"--batch-size {global_batch} is the global batch and must divide evenly over the "
                        f"{len(devices)} devices")
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    kinds = sorted({d.device_kind for d in devices})
    where = (f"data-parallel over {len(devices)} {'/'.join(kinds)} device(s) in {distribution.workers} process(es); "
             f"global batch {global_batch} ({global_batch // len(devices)} per device); this is worker "
             f"{distribution.worker_index}{' (chief: writes the run folder)' if distribution.chief else ''}")
    return len(devices), where


def agree(flag: bool) -> bool:
    """Worker 0's ``flag`` on every worker (a collective: all must call it)."""
    import numpy as np
    from jax.experimental import multihost_utils

    return bool(np.asarray(multihost_utils.broadcast_one_to_all(np.asarray(flag))))


LOST = ("Gloo", "heartbeat", "Connection reset by peer", "all-reduce failed", "coordination service")


def lost_worker(exc: BaseException) -> bool:
    """Whether a failed step means another worker went away (its collectives broke off)."""
    text = str(exc)
    return any(marker.lower() in text.lower() for marker in LOST)


def local_scope():
    """A distribution scope whose new variables live on this process's first device only: a model built in
    it runs here alone (validation: every worker scores the same frames with the same weights)."""
    import jax
    import keras

    return keras.distribution.DataParallel(devices=jax.local_devices()[:1]).scope()


class SingleDevice:
    """Training on one device (the TensorFlow backend): this process alone, every frame of every epoch."""

    def __init__(self, distribution: Distribution):
        self.distribution = distribution
        self.writer = distribution.chief  # whether this process writes the run folder

    def start(self, global_batch: int, log: Callable[[str], None]) -> None:
        """Say which devices train."""
        from exporter.stdio import announce

        announce(log)

    def steps_per_epoch(self, n_train: int, batch: int) -> int:
        """Batches per epoch: the last one may be short."""
        return -(-n_train // batch)

    def train_dataset(self, frames: DataIndex, idx: Any, config: TrainConfig) -> Any:
        """The training frames, shuffled each epoch, repeated for one ``fit`` over every epoch."""
        from exporter.data.index import stream_dataset

        return stream_dataset(frames, idx, config.batch_size, shuffle=True, seed=config.seed, weighted=True).repeat()

    def scorer(self, model: keras.Model, build: Callable[[], keras.Model]) -> keras.Model:
        """The model that scores the validation frames: the trained one."""
        return model

    def save_checkpoint(self, model: keras.Model, path: Path, save: Callable[[keras.Model, Path], None]) -> None:
        """Write this epoch's checkpoint with ``save``."""
        save(model, path)

    def after_epoch_stop(self, model: keras.Model) -> None:
        """Nothing to agree on: this process's stop decision holds."""

    def translate_fit_error(self, exc: BaseException, committed: int) -> UserError | None:
        """A failed ``fit`` is the error it is."""
        return None


class DataParallel:
    """Data-parallel training on Keras' JAX backend: every device of every worker process, in lockstep."""

    def __init__(self, distribution: Distribution):
        self.distribution = distribution
        self.writer = distribution.chief

    def start(self, global_batch: int, log: Callable[[str], None]) -> None:
        """Join the workers, spread the model over every device and say so."""
        _, where = start(self.distribution, global_batch)
        import keras

        log(f"training on Keras {keras.__version__} / {keras.backend.backend()}: {where}")

    def steps_per_epoch(self, n_train: int, batch: int) -> int:
        """Full global batches only, so that each splits evenly over the devices."""
        steps = n_train // batch
        if steps == 0:
            raise UserError(f"--batch-size {batch} is larger than the {n_train} training frames")
        return steps

    def train_dataset(self, frames: DataIndex, idx: Any, config: TrainConfig) -> Any:
        """The training frames, shuffled each epoch, repeated, every batch full."""
        from exporter.data.index import stream_dataset

        return stream_dataset(frames, idx, config.batch_size, shuffle=True, seed=config.seed, weighted=True,
                              repeat=True, drop_remainder=True)

    def scorer(self, model: keras.Model, build: Callable[[], keras.Model]) -> keras.Model:
        """A local copy built by ``build``: every worker scores the validation frames alone."""
        with local_scope():
            return build()

    def save_checkpoint(self, model: keras.Model, path: Path, save: Callable[[keras.Model, Path], None]) -> None:
        """Saving gathers the weights from every process: all take part, the chief alone keeps the file."""
        if self.writer:
            save(model, path)
            return
        with tempfile.TemporaryDirectory(prefix="unet-worker-") as scratch:
            model.save(Path(scratch) / path.name)

    def after_epoch_stop(self, model: keras.Model) -> None:
        """The chief's decision (its clock, its scores) holds for every worker."""
        if self.distribution.workers > 1:
            model.stop_training = agree(bool(model.stop_training))

    def translate_fit_error(self, exc: BaseException, committed: int) -> UserError | None:
        """A lost worker as one line saying what to do; None for any other error."""
        if self.distribution.workers > 1 and lost_worker(exc):
            return UserError(f"another worker stopped (its connection dropped) after epoch {committed} was "
                             f"committed; restart every worker with --resume")
        return None


def strategy_for(distribution: Distribution) -> SingleDevice | DataParallel:
    """The training strategy ``distribution`` asks for."""
    return DataParallel(distribution) if distribution.active else SingleDevice(distribution)
