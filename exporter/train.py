"""Train the seed U-Net: Adam + sparse CE on logits, val pixel accuracy and mIoU per epoch, resumable."""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import re
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from exporter import metrics
from exporter.classes import class_names
from exporter.contracts import checks
from exporter.contracts.checks import ContractError
from exporter.contracts.rundir import RunDir
from exporter.data.carla import IMAGE_DIR, MASK_DIR, DataFormat
from exporter.distributed import DataParallel, Distribution, SingleDevice, choose_backend, strategy_for
from exporter.errors import UserError
from exporter.fileio import atomic_path, read_json, sha256_file, write_json_atomic, write_text_atomic
from exporter.parameters import INPUT_SIZE, N_CLASSES, LRSchedule, TrainPrecision

if TYPE_CHECKING:
    import keras

    from exporter.data.index import DataIndex

HISTORY_FIELDS = (
    "epoch", "loss", "pixel_accuracy", "val_loss", "val_pixel_accuracy", "val_miou",
    "epoch_seconds", "images_per_second",
)


@dataclass(frozen=True)
class TrainConfig:
    """What a run is trained with; stored in RUN_DIR/config.json."""

    epochs: int = 20
    batch_size: int = 16
    learning_rate: float = 1e-3
    n_filters: int = 32
    input_size: tuple[int, int] = INPUT_SIZE
    n_classes: int = N_CLASSES
    dropout: float = 0.3
    val_split: float = 0.15
    seed: int = 0
    # "constant": Adam at learning_rate throughout; "cosine": a linear warm-up over warmup_epochs to
    # learning_rate, then a cosine decay to zero at the last epoch (benchmarks/training_recipe.py)
    lr_schedule: str = "constant"
    warmup_epochs: float = 0.0
    jit_compile: bool = False  # XLA for the train step
    # Keras dtype policy: float32, mixed_float16 or mixed_bfloat16 (float32 variables, the classifier and the
    # loss in float32 either way; model.keras is exported as float32)
    precision: str = "float32"
    # When to stop before `epochs` (not part of a run's identity: a resume may change them)
    target_miou: float | None = None   # stop after the first epoch whose validation mIoU reaches it
    time_budget: float | None = None   # seconds: stop when the next epoch would not fit
    # The data: where the frames are (not part of a run's identity: a copy may live elsewhere), the mask value
    # left out of the loss and the metrics ("don't care"), and the class names (default: CARLA's for 23)
    images_dir: str = IMAGE_DIR
    masks_dir: str = MASK_DIR
    ignore_index: int | None = None
    class_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "precision", TrainPrecision.parse(self.precision, "--precision").value)
        object.__setattr__(self, "lr_schedule", LRSchedule.parse(self.lr_schedule, "--lr-schedule").value)
        if self.warmup_epochs < 0 or (self.target_miou is not None and not 0 < self.target_miou <= 1) or \
                (self.time_budget is not None and self.time_budget <= 0):
            raise UserError("--warmup-epochs ≥ 0, --target-miou in (0, 1] and --time-budget > 0")
        if self.class_names is not None:
            object.__setattr__(self, "class_names", tuple(self.class_names))
            if len(self.class_names) != self.n_classes:
                raise UserError(f"--labels: {len(self.class_names)} names for --n-classes {self.n_classes}")
        self.data_format()  # checks the folders and the ignore value

    def data_format(self) -> DataFormat:
        """How the training data is read."""
        return DataFormat(tuple(self.input_size), self.n_classes, self.images_dir, self.masks_dir, self.ignore_index)

    def labels(self) -> list[str]:
        """The class names: given, else CARLA's for 23 classes, else class_0…"""
        return list(self.class_names or class_names(self.n_classes))

    def identity(self) -> dict:
        """The fields a resumed run must share with the original (all but ``epochs`` and the stop criteria)."""
        ident = asdict(self)
        for name in NOT_IDENTITY:
            ident.pop(name)
        ident["input_size"] = list(self.input_size)
        if self.ignore_index is None:  # as a run made before the ignore value existed recorded it
            ident.pop("ignore_index")
        return ident

    def same_run(self, stored: dict | None) -> bool:
        """Whether a stored identity (a state.json's ``config``) is this config's; fields an older version
        did not record count as their defaults."""
        if not isinstance(stored, dict):
            return False
        defaults = {name: getattr(TrainConfig, name) for name in ("lr_schedule", "warmup_epochs", "jit_compile",
                                                                   "precision")}
        return {**defaults, **stored} == self.identity()


NOT_IDENTITY = ("epochs", "target_miou", "time_budget", "images_dir", "masks_dir", "class_names")


@dataclass
class TrainResult:
    """What ``train`` made: paths, the best epoch and its validation scores, throughput."""

    run_dir: Path
    model_path: Path
    best_epoch: int
    best_val_miou: float
    best_val_pixel_accuracy: float
    images_per_second: float
    history: list[dict] = field(default_factory=list)
    stopped: str | None = None  # why training stopped before --epochs (target reached, time budget)


def _progress(log: Callable[[str], None]) -> Callable[[str], None]:
    return log or (lambda message: None)


PROGRESS_LINE_SECONDS = 20.0  # verbose=2 (a log, not a terminal): a progress line at most this often


class EpochProgress:
    """Within an epoch: a bar redrawn in place on a terminal (verbose=1), or a line every
    ``PROGRESS_LINE_SECONDS`` in a log (verbose=2); nothing at verbose=0. Keras' own progress is off, so
    the only per-epoch line is the run's, which says which numbers are training and which validation."""

    WIDTH = 24

    def __init__(self, steps: int, epochs: int, batch_size: int, verbose: int, log: Callable[[str], None],
                 stream=None, clock: Callable[[], float] = time.perf_counter):
        import sys

        self.steps, self.epochs, self.batch_size, self.verbose, self.log = steps, epochs, batch_size, verbose, log
        self.stream = stream or sys.stdout
        self.clock = clock
        self.epoch = 0
        self.started = self.last_line = 0.0
        self.drawn = False

    def begin(self, epoch: int) -> None:
        self.epoch, self.started = epoch, self.clock()
        self.last_line = self.started

    def text(self, step: int, loss: float | None) -> str:
        elapsed = self.clock() - self.started
        rate = step * self.batch_size / elapsed if elapsed > 0 else 0.0
        left = elapsed / step * (self.steps - step) if step else 0.0
        filled = round(self.WIDTH * step / self.steps)
        bar = "█" * filled + "·" * (self.WIDTH - filled)
        loss_text = "" if loss is None else f"  train loss {loss:.4f}"
        return (f"epoch {self.epoch + 1}/{self.epochs} {bar} {step}/{self.steps} steps{loss_text}  "
                f"{rate:.1f} frames/s  {left:.0f}s left")

    def step(self, step: int, loss: float | None) -> None:
        if self.verbose == 1:
            self.stream.write("\r" + self.text(step, loss) + "\033[K")
            self.stream.flush()
            self.drawn = True
        elif self.verbose == 2 and step < self.steps and self.clock() - self.last_line >= PROGRESS_LINE_SECONDS:
            self.last_line = self.clock()
            self.log(self.text(step, loss))

    def end(self) -> None:
        """Clear the bar before the epoch's line is printed."""
        if self.drawn:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self.drawn = False


def epoch_line(row: dict, epochs: int) -> str:
    """The one line an epoch prints: training numbers, validation numbers, speed, each labelled."""
    return (f"epoch {int(row['epoch'])}/{epochs}  train: loss {row['loss']:.4f}, pixel acc {row['pixel_accuracy']:.4f}"
            f"  |  validation: loss {row['val_loss']:.4f}, pixel acc {row['val_pixel_accuracy']:.4f}, "
            f"mIoU {row['val_miou']:.4f}  |  {row['epoch_seconds']:.0f}s, {row['images_per_second']:.1f} frames/s")


def evaluate(model, batches, n_classes: int, ignore_index: int | None = None) -> dict:
    """Validation loss, pixel accuracy, mIoU (over classes present) of a Keras model over ``batches`` of
    (images, masks) — a streamed data set or in-memory arrays — scored in numpy, batch by batch; pixels whose
    label is ``ignore_index`` are left out."""
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    loss_sum, pixels = 0.0, 0
    for images, masks in batches:
        logits = np.asarray(model(np.asarray(images), training=False), dtype=np.float64)
        labels = np.asarray(masks).astype(np.int64)
        if ignore_index is not None:
            counted = labels != ignore_index
            logits, labels = logits[counted], labels[counted]
        pixels += labels.size
        shifted = logits - logits.max(axis=-1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
        loss_sum += -np.take_along_axis(log_probs, labels[..., None], axis=-1).sum()
        confusion += metrics.confusion_matrix(labels, logits.argmax(-1), n_classes)
    return {
        "val_loss": loss_sum / max(1, pixels),
        "val_pixel_accuracy": metrics.pixel_accuracy(confusion),
        "val_miou": metrics.mean_iou(confusion),
    }


def _history_csv(history: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=HISTORY_FIELDS, extrasaction="ignore")
    writer.writeheader()
    for row in history:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return out.getvalue()


def plot_curves(history: list[dict], path: Path) -> None:
    """Two panels per epoch, as a PNG (atomic): the loss on the training and validation frames, and the pixel
    accuracy (training and validation) with the validation mIoU, the best epoch marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = [int(row["epoch"]) for row in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=100)
    ax_loss.plot(epochs, [r["loss"] for r in history], "o-", label="train loss")
    ax_loss.plot(epochs, [r["val_loss"] for r in history], "o-", label="validation loss")
    ax_loss.set(ylabel="cross-entropy loss (lower is better)", title="loss (train vs validation)")
    ax_acc.plot(epochs, [r["pixel_accuracy"] for r in history], "o-", label="train pixel accuracy")
    ax_acc.plot(epochs, [r["val_pixel_accuracy"] for r in history], "o-", label="validation pixel accuracy")
    ax_acc.plot(epochs, [r["val_miou"] for r in history], "o-", label="validation mIoU")
    if history:
        best = max(range(len(history)), key=lambda i: history[i]["val_miou"])
        ax_acc.axvline(epochs[best], color="0.5", ls=":", lw=1.2,
                       label=f"best validation mIoU: {history[best]['val_miou']:.3f} (epoch {epochs[best]})")
    ax_acc.set(ylabel="pixel accuracy / mIoU (higher is better)", ylim=(0, 1), title="pixel accuracy and mIoU")
    for ax in (ax_loss, ax_acc):
        ax.set_xlabel("epoch")
        if epochs and max(epochs) - min(epochs) < 15:
            ax.set_xticks(range(min(epochs), max(epochs) + 1))
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if epochs:
            ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best", fontsize=9)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def save_keras_atomic(model, path: Path) -> None:
    """``model.save`` to a temp ``.keras`` beside ``path``, then rename."""
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)


CHECKPOINT_NAME = re.compile(r"^(epoch_\d{4}|last)\.keras$")
# Temp files of atomic writes (fileio.atomic_path: ".NAME.random...") that a kill can leave behind.
TEMP_PREFIXES = (".epoch_", ".last.keras.", ".state.json.", ".model.keras.", ".config.json.", ".history.csv.",
                 ".training_curves.png.")


STATE_NUMBERS = ("best_val_miou", "best_val_pixel_accuracy")


def read_training_state(path: Path) -> dict:
    """checkpoint/state.json, checked: a damaged or hand-edited one is a one-line UserError naming it.

    Checkpoint names must be checkpoint files of this folder (``epoch_NNNN.keras``): a name with a path in it
    would make resume read or promote a file outside the run.
    """
    state = read_json(path, "training checkpoint state")
    try:
        for name in ("epoch", "best_epoch"):
            if checks.integer(state.get(name), name, required=True) < 0:
                raise ContractError(f"{name}: negative")
        for name in STATE_NUMBERS:
            checks.number(state.get(name), name, required=True)
        for i, row in enumerate(checks.items(state.get("history"), "history")):
            row = checks.obj(row, f"history[{i}]")
            if checks.integer(row.get("epoch"), f"history[{i}].epoch", required=True) < 1:
                raise ContractError(f"history[{i}].epoch: expected an epoch number ≥ 1")
            for name in HISTORY_FIELDS[1:]:  # a loss may be NaN (a diverged epoch); an epoch number may not
                checks.number(row.get(name), f"history[{i}].{name}", required=True)
        checks.obj(state.get("config"), "config")
        for name in ("last_checkpoint", "best_checkpoint"):
            value = checks.text(state.get(name), name)
            if value is not None and not CHECKPOINT_NAME.match(value):
                raise ContractError(f"{name}: {value[:80]!r} is not a checkpoint file name")
    except ContractError as exc:
        raise UserError(f"{path}: not a valid training state ({exc})") from None
    return state


def _promote(state: dict, run: RunDir, heal: bool) -> None:
    """Make model.keras the committed best checkpoint; delete checkpoints the state no longer names.

    After an epoch only a new best is copied; ``heal`` (on resume, after a possible kill) compares the files.
    Also removes temp files a killed save left behind. Runs in the training process only.
    """
    import shutil

    checkpoints = run.checkpoints
    best_name = state.get("best_checkpoint")  # None: a run started by 0.1, which wrote model.keras directly
    try:
        if best_name:
            best, target = checkpoints / best_name, run.model
            new_best = best_name == state.get("last_checkpoint")  # this epoch's checkpoint is the best
            if not target.exists() or (sha256_file(target) != sha256_file(best) if heal else new_best):
                with atomic_path(target, suffix=".keras") as tmp:
                    shutil.copyfile(best, tmp)
        keep = {best_name, state.get("last_checkpoint")}
        for path in [*checkpoints.iterdir(), *run.path.glob(".*")]:
            stale = CHECKPOINT_NAME.match(path.name) and path.name not in keep
            if (stale or path.name.startswith(TEMP_PREFIXES)) and path.is_file():
                path.unlink()
    except OSError as exc:
        raise UserError(f"{checkpoints}: cannot bring the run in line with its checkpoints "
                        f"({exc.strerror or exc})") from None


def _sync(state: dict, run: RunDir, run_config: dict, heal: bool = False) -> None:
    """After a commit (state.json): config.json, model.keras, history.csv and the curves follow it."""
    write_json_atomic(run.config_path, run_config)
    _promote(state, run, heal)
    write_text_atomic(run.history_path, _history_csv(state["history"]))
    if state["history"]:
        plot_curves(state["history"], run.curves)


def _forget_previous_run(checkpoints: Path) -> None:
    """--force: the old run's commit point and checkpoints go before the new run saves its first epoch.

    Otherwise the old state.json could name a checkpoint file that the new run overwrites, and a resume
    after a kill would mix the two runs. The old model.keras stays until the new run's first commit.
    """
    if not checkpoints.is_dir():
        return
    for path in checkpoints.iterdir():
        if path.name == "state.json" or CHECKPOINT_NAME.match(path.name):
            path.unlink()


def train(
    data_dir: str | Path,
    run_dir: str | Path,
    config: TrainConfig | None = None,
    resume: bool = False,
    overwrite: bool = False,
    skip_bad: bool = False,
    log: Callable[[str], None] | None = print,
    verbose: int = 2,
    distribution: Distribution | None = None,
) -> TrainResult:
    """Train on a CARLA-layout folder; write model.keras (best val mIoU), config.json, history.csv, curves.

    ``log`` hears one labelled line per epoch (``epoch_line``); ``verbose``: 1 a progress bar within each
    epoch redrawn in place (a terminal), 2 a progress line every ``PROGRESS_LINE_SECONDS`` (a log), 0 none.
    ``distribution``: data-parallel over devices and processes (``exporter.distributed``); only its chief
    writes the run folder.
    """
    from exporter.data.index import stream_dataset

    distribution = distribution or Distribution()
    choose_backend(distribution)
    config = config or TrainConfig()
    verbose = verbose if log is not None else 0
    log = _progress(log)
    run = RunDir(run_dir)
    state = _check_request(run, config, resume, overwrite)
    strategy = strategy_for(distribution)
    data = _prepare_data(data_dir, config, skip_bad, strategy.writer, log)
    strategy.start(config.batch_size, log)
    steps = strategy.steps_per_epoch(len(data.train_idx), config.batch_size)
    model, state = _build_or_resume(run, config, state, steps, log)
    run_config = _run_config(config, data_dir, data, model)
    if state["epoch"] and strategy.writer:
        _sync(state, run, run_config, heal=True)  # a kill between the last commit and its sync is healed here
    elif overwrite and strategy.writer:
        _forget_previous_run(run.checkpoints)
    scorer = strategy.scorer(model, lambda: _build_model(config))
    log(f"training on {len(data.train_idx)} frames, validating on {len(data.val_idx)}; "
        f"{model.count_params():,} parameters")
    validation = Validation(stream_dataset(data.frames, data.val_idx, config.batch_size, shuffle=False), scorer,
                            config.n_classes, config.ignore_index)
    committer = EpochCommitter(run, config, run_config, strategy, model, state, validation, log)
    if committer.more_epochs():
        progress = EpochProgress(steps, config.epochs, config.batch_size, verbose, log)
        _fit(committer, strategy.train_dataset(data.frames, data.train_idx, config), steps, progress)
    return committer.result()


@contextlib.contextmanager
def precision_policy(name: str) -> Iterator[None]:
    """Keras' global dtype policy ``name`` while inside, float32 after it.

    The layers built inside keep their policy; nothing built later in this process inherits it.
    """
    import keras

    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")


def _check_request(run: RunDir, config: TrainConfig, resume: bool, overwrite: bool) -> dict | None:
    """Refuse what cannot be done, before any work; the state a resume continues from (None: a new run)."""
    if resume and not run.training_state.exists():
        raise UserError(f"{run.path}: nothing to resume (no checkpoint/state.json); run without --resume")
    if not resume and not overwrite and (run.training_state.exists() or run.model.exists()):
        raise UserError(f"{run.path}: already holds a training run; pass --resume to continue or --force to start over")
    if config.epochs < 1 or config.batch_size < 1 or config.learning_rate <= 0:
        raise UserError("--epochs and --batch-size must be ≥ 1 and --learning-rate > 0")
    return _resumed_state(run, config) if resume else None


def _resumed_state(run: RunDir, config: TrainConfig) -> dict:
    """checkpoint/state.json, checked, of a run trained with the options of ``config`` whose checkpoints are
    there: a resume says what is wrong with its state before it says anything about the data."""
    state = read_training_state(run.training_state)
    if not config.same_run(state.get("config")):
        raise UserError(f"{run.training_state}: the run was trained with {state.get('config')}; "
                        f"resume with the same options")
    for role in ("last", "best"):
        name = state.get(f"{role}_checkpoint") or ("last.keras" if role == "last" else None)  # last.keras: 0.1
        if name and not (run.checkpoints / name).is_file():
            raise UserError(f"{run.checkpoints / name}: missing, but {run.training_state.name} names it as the "
                            f"{role} checkpoint (restore it, or start over with --force)")
    return state


@dataclass(frozen=True)
class TrainingData:
    """The checked frames of a data folder and their seeded split into training and validation frames."""

    frames: DataIndex
    train_idx: np.ndarray
    val_idx: np.ndarray

    @property
    def val_stems(self) -> list[str]:
        """The validation frames' names (config.json: export and pack validate on frames not trained on)."""
        return [self.frames.stems[i] for i in self.val_idx]


def _prepare_data(data_dir: str | Path, config: TrainConfig, skip_bad: bool, writer: bool,
                  log: Callable[[str], None]) -> TrainingData:
    """Check the frames (or reuse the stored check), say what was found, split them by the seed."""
    from exporter.data.carla import split_indices
    from exporter.data.index import index_dataset

    # Checked once (every frame decoded, in parallel; reused from DATA_DIR/.unet-index.json when the files
    # are unchanged), then streamed from disk: nothing holds the data set in memory.
    started = time.perf_counter()
    frames = index_dataset(data_dir, config.data_format(), skip_bad=skip_bad,
                           warn=lambda m: log(f"warning: skipped {m}"), write=writer, note=lambda m: log(f"note: {m}"))
    log(f"data: {len(frames)} frames " + ("(the stored check: files unchanged)" if frames.reused else
                                         f"checked in {time.perf_counter() - started:.1f}s"))
    if frames.skipped:
        log(f"skipped {len(frames.skipped)} bad file(s)")
    return TrainingData(frames, *split_indices(len(frames), config.val_split, config.seed))


def _build_or_resume(run: RunDir, config: TrainConfig, state: dict | None, steps: int,
                     log: Callable[[str], None]) -> tuple[keras.Model, dict]:
    """The compiled model and the committed state to train from: a resumed run's last checkpoint and state,
    or a new seeded U-Net and an empty state."""
    if state is not None:
        return _load_checkpoint(run, state, log), state
    return _new_model(config, steps), _new_state(config)


def _load_checkpoint(run: RunDir, state: dict, log: Callable[[str], None]) -> keras.Model:
    """The last committed checkpoint, with its optimizer; a missing or damaged one is a UserError naming it."""
    import keras

    last = run.checkpoints / (state.get("last_checkpoint") or "last.keras")  # last.keras: the 0.1 layout
    try:
        model = keras.saving.load_model(last, compile=True, safe_mode=True)
    except Exception as exc:
        raise UserError(f"{last}: cannot resume from this checkpoint ({exc.__class__.__name__})") from None
    log(f"resuming {run.path} after epoch {state['epoch']} (best val mIoU {state['best_val_miou']:.4f})")
    return model


def _new_model(config: TrainConfig, steps: int) -> keras.Model:
    """A new U-Net from the run's seed, compiled: Adam, sparse cross-entropy on logits, pixel accuracy."""
    import keras

    keras.utils.set_random_seed(config.seed)
    model = _build_model(config)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate_schedule(config, steps)),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="pixel_accuracy")],
        jit_compile=config.jit_compile,
    )
    return model


def _build_model(config: TrainConfig) -> keras.Model:
    """The seed U-Net ``config`` describes, under its precision policy."""
    from exporter.model import build_unet

    with precision_policy(config.precision):
        return build_unet((*config.input_size, 3), config.n_filters, config.n_classes, config.dropout)


def _new_state(config: TrainConfig) -> dict:
    """The state of a run before its first commit."""
    return {"epoch": 0, "best_epoch": 0, "best_val_miou": -1.0, "best_val_pixel_accuracy": 0.0,
            "history": [], "config": config.identity(), "last_checkpoint": None, "best_checkpoint": None}


def _run_config(config: TrainConfig, data_dir: str | Path, data: TrainingData, model: keras.Model) -> dict:
    """config.json: the options, the data and its split, the model's size."""
    return {
        **asdict(config), "input_size": list(config.input_size), "data_dir": str(Path(data_dir).resolve()),
        "class_names": config.labels(), "n_train": len(data.train_idx), "n_val": len(data.val_idx),
        "parameters": int(model.count_params()), "val_stems": data.val_stems,
    }


@dataclass
class Validation:
    """The validation frames and the model that scores them: the trained one, or a copy of its weights."""

    batches: Any
    scorer: keras.Model
    n_classes: int
    ignore_index: int | None = None

    def scores(self, model: keras.Model) -> dict:
        """``evaluate`` with ``model``'s current weights."""
        if self.scorer is not model:
            self.scorer.set_weights(model.get_weights())
        return evaluate(self.scorer, self.batches, self.n_classes, self.ignore_index)


class EpochCommitter:
    """A run's commits: score each epoch, save its checkpoint, commit state.json, bring the run in line with
    it, decide whether to stop."""

    def __init__(self, run: RunDir, config: TrainConfig, run_config: dict, strategy: SingleDevice | DataParallel,
                 model: keras.Model, state: dict, validation: Validation, log: Callable[[str], None]):
        self.run, self.config, self.run_config, self.strategy = run, config, run_config, strategy
        self.model, self.state, self.validation, self.log = model, state, validation, log
        self.stopping = _Stopping(config, log)

    def more_epochs(self) -> bool:
        """Whether to train on: epochs are left and no earlier epoch reached the target."""
        return self.state["epoch"] < self.config.epochs and not self.stopping.reached(self.state["best_val_miou"])

    def commit(self, epoch: int, logs: dict, seconds: float) -> None:
        """Score the epoch on the validation frames, save its checkpoint, commit, bring the run in line."""
        row = self.history_row(epoch, logs, seconds)
        self.log(epoch_line(row, self.config.epochs))
        # Each epoch's weights go to a file of their own; state.json then names the last and the best ones
        # (the commit point); only after it are config.json, model.keras and history.csv brought in line.
        # A kill before the commit leaves the previous epoch's state; a kill after it, before the sync
        # ends, leaves model.keras at the previous best (a whole, loadable file) until --resume syncs it.
        name = f"epoch_{epoch + 1:04d}.keras"
        self.strategy.save_checkpoint(self.model, self.run.checkpoints / name, save_keras_atomic)
        self.state = _next_state(self.state, row, name)
        if self.strategy.writer:  # the chief alone writes: every worker holds the same state in memory
            write_json_atomic(self.run.training_state, self.state)
            _sync(self.state, self.run, self.run_config)
        self.stopping.after_epoch(row, self.model)
        self.strategy.after_epoch_stop(self.model)

    def history_row(self, epoch: int, logs: dict, seconds: float) -> dict:
        """The epoch's row: Keras' training numbers, the validation scores, the time it took."""
        scores = self.validation.scores(self.model)
        return {"epoch": epoch + 1, "loss": float(logs["loss"]), "pixel_accuracy": float(logs["pixel_accuracy"]),
                **scores, "epoch_seconds": seconds, "images_per_second": self.run_config["n_train"] / seconds}

    def result(self) -> TrainResult:
        """What the run made, from its last committed state."""
        state, history = self.state, self.state["history"]
        return TrainResult(
            run_dir=self.run.path, model_path=self.run.model, best_epoch=state["best_epoch"],
            best_val_miou=state["best_val_miou"], best_val_pixel_accuracy=state["best_val_pixel_accuracy"],
            images_per_second=float(np.median([r["images_per_second"] for r in history])) if history else 0.0,
            history=history, stopped=self.stopping.reason,
        )


def _next_state(state: dict, row: dict, checkpoint: str) -> dict:
    """``state`` after the epoch of ``row``, saved as ``checkpoint``, is committed."""
    state = {**state, "history": [*state["history"], row], "epoch": row["epoch"], "last_checkpoint": checkpoint}
    if row["val_miou"] > state["best_val_miou"]:
        state.update(best_epoch=row["epoch"], best_val_miou=row["val_miou"],
                     best_val_pixel_accuracy=row["val_pixel_accuracy"], best_checkpoint=checkpoint)
    return state


@functools.cache
def epoch_commit_class() -> type:
    """``EpochCommit``, the Keras callback that commits each epoch: made once, on first use, so that importing
    this module imports no Keras."""
    import keras

    class EpochCommit(keras.callbacks.Callback):
        """Within each epoch the progress; at its end the commit."""

        def __init__(self, progress: EpochProgress, committer: EpochCommitter):
            super().__init__()
            self.progress, self.committer = progress, committer
            self.started = 0.0

        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()
            self.progress.begin(epoch)

        def on_train_batch_end(self, batch, logs=None):
            loss = (logs or {}).get("loss")
            self.progress.step(batch + 1, None if loss is None else float(loss))

        def on_epoch_end(self, epoch, logs=None):
            seconds = time.perf_counter() - self.started
            self.progress.end()
            self.committer.commit(epoch, logs or {}, seconds)

    return EpochCommit


def _fit(committer: EpochCommitter, train_ds: Any, steps: int, progress: EpochProgress) -> None:
    """Train the epochs left, committing each; a failed step that has a known cause is a one-line UserError.

    One fit over a repeated data set, committing in a callback: a fit per epoch destroys a tf.data iterator
    per epoch, which blocked for seconds while training (benchmarks/RESULTS.md).
    """
    from exporter.data.index import CHANGED_SINCE_CHECK

    warnings.filterwarnings("ignore", message="`shuffle=True` was passed")  # Keras' own default, on JAX
    try:
        committer.model.fit(train_ds, epochs=committer.config.epochs, initial_epoch=committer.state["epoch"],
                            steps_per_epoch=steps, verbose=0, shuffle=False,
                            callbacks=[epoch_commit_class()(progress, committer)])
    except Exception as exc:
        changed = next((line for line in str(exc).splitlines() if CHANGED_SINCE_CHECK in line), None)
        if changed:  # a frame damaged after the data check: say which, as the check would have
            raise UserError(changed.split(f"{CHANGED_SINCE_CHECK}: ", 1)[-1].strip()
                            + f" ({CHANGED_SINCE_CHECK}; run `unet-export data check`)") from None
        error = committer.strategy.translate_fit_error(exc, committer.state["epoch"])
        if error is None:
            raise
        raise error from None


def learning_rate_schedule(config: TrainConfig, steps_per_epoch: int):
    """Adam's learning rate: a float (constant) or a Keras schedule over the run's optimizer steps.

    The schedule is saved with the optimizer in each checkpoint, so a resumed run continues it.
    """
    if config.lr_schedule == "constant":
        return config.learning_rate
    import keras

    total = max(1, config.epochs * steps_per_epoch)
    warmup = min(int(round(config.warmup_epochs * steps_per_epoch)), total - 1)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=config.learning_rate / 10 if warmup else config.learning_rate,
        decay_steps=total - warmup, alpha=0.0, warmup_target=config.learning_rate if warmup else None,
        warmup_steps=warmup)


class _Stopping:
    """--target-miou and --time-budget: stop after the epoch that reaches the target, or before an epoch that
    would not fit in the time left."""

    def __init__(self, config: TrainConfig, log: Callable[[str], None]):
        self.config, self.log = config, log
        self.started = time.perf_counter()
        self.longest = 0.0
        self.last_end = self.started
        self.reason: str | None = None

    def reached(self, miou: float) -> bool:
        target = self.config.target_miou
        if target is not None and miou >= target:
            self.reason = f"validation mIoU {miou:.4f} reached --target-miou {target:g}"
            return True
        return False

    def after_epoch(self, row: dict, model) -> None:
        now = time.perf_counter()
        self.longest = max(self.longest, now - self.last_end)  # training + validation + checkpoint
        self.last_end = now
        budget = self.config.time_budget
        if self.reached(row["val_miou"]):
            pass
        elif budget is not None and now - self.started + self.longest > budget:
            self.reason = (f"--time-budget {budget:g}s: {now - self.started:.0f}s used, the next epoch would "
                           f"take ~{self.longest:.0f}s more")
        else:
            return
        if int(row["epoch"]) < self.config.epochs:
            self.log(f"stopping after epoch {int(row['epoch'])}: {self.reason}")
            model.stop_training = True
