"""The whole journey in one call: synthesize → train → export → validate → pack → benchmark → report.

Each stage records a key (a hash of the options it depends on and of its inputs) in RUN_DIR/pipeline.json;
a re-run skips a stage whose key is unchanged and whose outputs are present, unless ``force``.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from exporter import drift
from exporter.bench.runner import BenchSettings
from exporter.contracts.export_spec import HEAD, ExportSpec
from exporter.contracts.rundir import RunDir
from exporter.data.carla import CARLA, IMAGE_DIR, MASK_DIR
from exporter.drift import DEMO_BUDGET, Budget
from exporter.errors import UserError
from exporter.export.api import DataOptions
from exporter.fileio import atomic_path, read_json, sha256_file, write_json_atomic
from exporter.parameters import CALIBRATION_SAMPLES, EVAL_FRAMES, VALIDATION_SAMPLES
from exporter.train import TrainConfig, read_training_state

DEFAULT_EXPORTS = (
    ExportSpec("tflite", "fp32"),
    ExportSpec("tflite", "int8"),  # full integer: what integer-only accelerators need
    ExportSpec("tflite", "int8", float_scope=HEAD),
    # mobile-ready: camera bytes in, class map out; the float head keeps int8's accuracy loss small; batch 1
    # fixed, as apps run it: LiteRT's GPU accelerator takes static shapes only, and XNNPACK runs it faster
    ExportSpec("tflite", "int8", io="uint8", argmax=True, float_scope=HEAD, static_batch=1),
    # for MediaPipe's ImageSegmenter (native and web), which takes score channels and argmaxes them itself; float
    # input (MediaPipe normalizes from the metadata): its web GPU delegate answered the uint8-input one at 18-20%
    # agreement without an error, and refused a full-int8 one (benchmarks/RESULTS.md, "The browser as a device")
    ExportSpec("tflite", "int8", float_scope=HEAD, static_batch=1),
    ExportSpec("onnx", "fp32"),
    ExportSpec("onnx", "int8", float_scope=HEAD),
)
# pipeline --all: also fp16 TFLite (the GPU's precision; batch 1 fixed, for the GPU) and full-int8 ONNX (the one
# that drifts most on CPUs without VNNI)
ALL_EXPORTS = (*DEFAULT_EXPORTS, ExportSpec("tflite", "fp16", static_batch=1), ExportSpec("onnx", "int8"))
# The demo's recipe (benchmarks/RESULTS.md, docs/training_recipe.png): the full-size seed model, batch 4,
# Adam warmed up over 0.3 epoch to 1e-3 then cosine-decayed to 0 at epoch 5, 10% held out. It reaches the
# demo's bar (mIoU >= 0.60, pixel accuracy >= 0.90) in 5 epochs where batch 8 at a constant 1e-3 needed 7.
DEMO_TRAINING = TrainConfig(epochs=5, batch_size=4, learning_rate=1e-3, lr_schedule="cosine", warmup_epochs=0.3,
                            val_split=0.1)
DEMO_BENCH = BenchSettings(min_runs=10, min_seconds=1.0)


@dataclass(frozen=True)
class PipelineOptions:
    """Everything the journey depends on; defaults are the demo's."""

    data_dir: str | None = None  # None: synthesize driving scenes into RUN/data
    model: str | None = None  # a Keras model to take instead of training one (needs data_dir)
    data: DataOptions = DataOptions()  # the data's folder names, ignore value, class names
    synth_count: int = 600
    synth_seed: int = 0
    training: TrainConfig = DEMO_TRAINING
    exports: tuple[ExportSpec, ...] = DEFAULT_EXPORTS
    calibration_samples: int = CALIBRATION_SAMPLES
    validation_samples: int = VALIDATION_SAMPLES
    eval_frames: int = EVAL_FRAMES
    seed: int = 0  # export and pack: the calibration and evaluation picks
    bench: BenchSettings = DEMO_BENCH
    budget: Budget = DEMO_BUDGET
    target_pixel_accuracy: float = 0.90
    target_miou: float = 0.60


@dataclass
class PipelineResult:
    run_dir: Path
    report: Path
    stage_seconds: dict[str, float] = field(default_factory=dict)
    skipped_stages: list[str] = field(default_factory=list)


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _identity_fields(config: TrainConfig) -> dict:
    """The training options a stage key holds; the data-layout ones only when not their defaults (a run made
    before they existed stays up to date)."""
    fields = asdict(config)
    for name, default in (("images_dir", IMAGE_DIR), ("masks_dir", MASK_DIR), ("ignore_index", None),
                          ("class_names", None)):
        if fields[name] == default:
            fields.pop(name)
    return fields


class _Stages:
    """Bookkeeping of which stages are done, under which key, and how long they took."""

    def __init__(self, path: Path, force: bool, log: Callable[[str], None]):
        self.path = path
        self.state = {"stages": {}}
        if self.path.exists() and not force:  # --force redoes every stage: an old (even broken) state is moot
            self.state = read_json(self.path, "pipeline state")
            if not isinstance(self.state.get("stages"), dict):
                raise UserError(f"{self.path}: pipeline state has no 'stages'; delete it or pass --force")
        self.force, self.log = force, log
        self.seconds: dict[str, float] = {}
        self.skipped: list[str] = []

    def done(self, name: str, key: str, outputs: list[Path]) -> bool:
        entry = self.state["stages"].get(name)
        if not self.force and entry and entry.get("key") == key and all(p.exists() for p in outputs):
            self.log(f"== {name}: up to date (done in {entry['seconds']:.0f}s earlier), skipped")
            self.seconds[name] = 0.0
            self.skipped.append(name)
            return True
        self.log(f"== {name}")
        return False

    def record(self, name: str, key: str, started: float, **info) -> None:
        seconds = time.perf_counter() - started
        self.seconds[name] = seconds
        self.state["stages"][name] = {"key": key, "seconds": round(seconds, 1), **info}
        write_json_atomic(self.path, self.state)
        self.log(f"   {name} took {seconds:.0f}s")


class _Journey:
    """The stages of one pipeline run over a run folder, each skipped when up to date."""

    def __init__(self, run: RunDir, options: PipelineOptions, stages: _Stages, log: Callable[[str], None],
                 verbose: int) -> None:
        self.run, self.options, self.stages, self.log, self.verbose = run, options, stages, log, verbose
        self.data_dir = Path(options.data_dir) if options.data_dir else run.path / "data"
        self.context = None  # the export stage's ExportContext, reused by the pack stage when it ran

    def data(self) -> str:
        options, config = self.options, self.options.training
        layout = config.data_format().layout()
        key = _key("data", options.data_dir, options.synth_count, options.synth_seed, config.input_size,
                   *([layout] if layout != CARLA.layout() else []))
        if self.stages.done("data", key, [self.data_dir / config.images_dir]):
            return key
        started = time.perf_counter()
        if options.model:  # the model's own input size and classes: checked when the export opens it
            info = {"frames": "checked at export, at the model's input size"}
        elif options.data_dir:
            from exporter.data.index import index_dataset

            info = {"frames": len(index_dataset(self.data_dir, config.data_format()))}
        else:
            from exporter.data.synth import write_synthetic_dataset

            summary = write_synthetic_dataset(self.data_dir, options.synth_count, options.synth_seed,
                                              tuple(config.input_size), overwrite=True)  # the run's own folder
            info = {"frames": summary["count"], "synthetic": True}
        self.stages.record("data", key, started, **info)
        return key

    def model(self, data_key: str) -> None:
        """The model the user brought, copied in as RUN/model.keras, and a config.json naming its data."""
        import shutil

        from exporter.export.api import load_keras_model

        run, options, source = self.run, self.options, Path(self.options.model)
        key = _key("model", data_key, sha256_file(source) if source.is_file() else str(source),
                   options.data.layout_key())
        if self.stages.done("model", key, [run.model, run.config_path]):
            return
        started = time.perf_counter()
        model = load_keras_model(source, self.log)  # a model that is not one stops here, with one line
        # --labels, else labels.txt beside the model, else CARLA's for 23 classes, else class_0…: recorded, so the
        # exports, the pack, the bench and the report all name the classes alike
        labels = options.data.class_names({}, source, int(model.output_shape[-1]))
        config = {"source_model": str(source.resolve()), "data_dir": str(self.data_dir.resolve()),
                  "parameters": int(model.count_params()), "input_size": list(model.input_shape[1:3]),
                  "n_classes": int(model.output_shape[-1]), "images_dir": options.data.images or IMAGE_DIR,
                  "masks_dir": options.data.masks or MASK_DIR, "ignore_index": options.data.ignore_index,
                  "class_names": labels}
        with atomic_path(run.model, suffix=".keras") as tmp:
            shutil.copyfile(source, tmp)
        write_json_atomic(run.config_path, config)
        self.stages.record("model", key, started, parameters=config["parameters"])

    def train(self, data_key: str) -> None:
        from exporter.train import train

        run, config = self.run, self.options.training
        key = _key("train", data_key, _identity_fields(config))
        if self.stages.done("train", key, [run.model]):
            return
        started = time.perf_counter()
        resumable = not self.stages.force and run.training_state.exists() and \
            config.same_run(read_training_state(run.training_state).get("config"))
        result = train(self.data_dir, run.path, config, resume=resumable, overwrite=not resumable, log=self.log,
                       verbose=self.verbose)
        self.stages.record("train", key, started, best_epoch=result.best_epoch, val_miou=result.best_val_miou,
                           val_pixel_accuracy=result.best_val_pixel_accuracy,
                           images_per_second=result.images_per_second)

    def export(self, data_key: str) -> str:
        """Every export; redone when the model, the data (its validation frames) or how it is read changes."""
        from exporter.export.api import ExportContext

        run, options = self.run, self.options
        key = _key("export", sha256_file(run.model), data_key, options.data.layout_key(),
                   [e.to_dict() for e in options.exports],
                   options.calibration_samples, options.validation_samples, asdict(options.budget), options.eval_frames)
        if self.stages.done("export", key, [run.path / e.file_name for e in options.exports]):
            return key
        started = time.perf_counter()
        self.context = ExportContext.open(run.model, self.data_dir, options.validation_samples, options.seed, self.log,
                                          data=options.data)
        outside_budget = []
        for spec in options.exports:
            result = self.context.export(spec, calibration_samples=options.calibration_samples)
            v = result.validation
            within = not drift.validation_problems(v, options.budget)
            if not within:
                outside_budget.append(result.path.name)
            self.log(f"   {result.path.name}: {result.entry.size_bytes / 1e6:.2f} MB in "
                     f"{result.entry.conversion_seconds:.1f}s, agreement {v.pixel_agreement:.4f}, mIoU drop "
                     f"{v.miou_drop_points:.2f} pt"
                     + ("" if within else "  (outside the accuracy budget: kept, flagged in the report)"))
        self.stages.record("export", key, started, outside_budget=outside_budget)
        return key

    def pack(self, export_key: str) -> str:
        from exporter.pack_builder import PackContents, build_pack

        run, options, context = self.run, self.options, self.context
        key = _key("pack", export_key, options.eval_frames)
        if not self.stages.done("pack", key, [run.pack, run.eval_path]):
            started = time.perf_counter()
            build_pack(run.path, self.data_dir, run.pack,
                       PackContents(options.eval_frames, seed=options.seed, data=options.data), log=self.log,
                       context=context if context and len(context.validation) >= options.eval_frames else None)
            self.stages.record("pack", key, started, size_bytes=run.pack.stat().st_size)
        return key

    def bench(self, pack_key: str) -> None:
        from exporter.bench.runner import run_bench
        from exporter.bench.tables import write_reports
        from exporter.contracts.pack import open_run_dir

        run = self.run
        bench_json = run.bench_dir / "bench.json"
        key = _key("bench", pack_key, asdict(self.options.bench))
        if not self.stages.done("bench", key, [bench_json]):
            started = time.perf_counter()
            bench = run_bench(open_run_dir(run.path), run.bench_dir, self.options.bench, progress=self.log)
            write_reports(bench, bench_json, run.bench_dir / "bench.csv", run.bench_dir / "bench.md")
            self.stages.record("bench", key, started)

    def report(self) -> Path:
        """report.md, always rewritten: cheap, and it shows this run's stage times."""
        from exporter.run_report import write_report

        started = time.perf_counter()
        report = write_report(self.run, self.options, self.stages.seconds, self.stages.state,
                              skipped=self.stages.skipped)
        self.stages.seconds["report"] = time.perf_counter() - started
        self.log(f"wrote {report}")
        return report


def run_pipeline(run_dir: str | Path, options: PipelineOptions | None = None, force: bool = False,
                 log: Callable[[str], None] | None = print, verbose: int = 2) -> PipelineResult:
    """Run every stage (skipping those already done with the same options); write RUN_DIR/report.md."""
    options = options or PipelineOptions()
    log = log or (lambda message: None)
    run = RunDir(run_dir)
    if options.model and not options.data_dir:
        raise UserError(f"{options.model}: --model needs --data (the frames to calibrate and validate it on)")
    if options.model and not Path(options.model).is_file():
        raise UserError(f"{options.model}: model file not found")
    if options.data_dir:  # a wrong --data stops before the run folder is made, not after
        from exporter.data.carla import find_pairs

        find_pairs(options.data_dir, fmt=options.training.data_format())
    try:
        run.path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{run.path}: cannot create run folder ({exc.strerror or exc})") from None
    stages = _Stages(run.pipeline_state, force, log)
    journey = _Journey(run, options, stages, log, verbose)
    data_key = journey.data()
    if options.model:
        journey.model(data_key)
    else:
        journey.train(data_key)
    journey.bench(journey.pack(journey.export(data_key)))
    report = journey.report()
    return PipelineResult(run.path, report, stages.seconds, stages.skipped)
