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

from exporter.errors import UserError
from exporter.fileio import read_json, sha256_file, write_json_atomic

STATE = "pipeline.json"


@dataclass(frozen=True)
class ExportSpec:
    """One artifact the pipeline writes."""

    format: str
    quantization: str
    io: str = "float32"
    argmax: bool = False
    float_head: bool = False

    @property
    def name(self) -> str:
        from exporter.export.api import onnx_name, tflite_name
        from exporter.export.modes import IOType, Quantization

        if self.format == "onnx":
            return onnx_name(Quantization(self.quantization), self.float_head)
        return tflite_name(Quantization(self.quantization), IOType(self.io), self.argmax, self.float_head)


DEFAULT_EXPORTS = (
    ExportSpec("tflite", "fp32"),
    ExportSpec("tflite", "fp16"),
    ExportSpec("tflite", "int8"),  # full integer: what integer-only accelerators need
    ExportSpec("tflite", "int8", float_head=True),
    # mobile-ready: camera bytes in, class map out; the float head keeps int8's accuracy loss small
    ExportSpec("tflite", "int8", io="uint8", argmax=True, float_head=True),
    ExportSpec("onnx", "fp32"),
    ExportSpec("onnx", "int8"),
    ExportSpec("onnx", "int8", float_head=True),
)


@dataclass
class PipelineOptions:
    """Everything the journey depends on; defaults are the demo's (see README for why)."""

    data_dir: str | None = None
    synth_count: int = 600
    synth_seed: int = 0
    epochs: int = 8
    batch_size: int = 8
    learning_rate: float = 1e-3
    n_filters: int = 32
    input_size: tuple[int, int] = (96, 128)
    n_classes: int = 23
    val_split: float = 0.1
    seed: int = 0
    calibration_samples: int = 256
    validation_samples: int = 48
    eval_frames: int = 24
    exports: tuple[ExportSpec, ...] = DEFAULT_EXPORTS
    runtimes: list[str] | None = None
    devices: tuple[str, ...] = ("cpu",)
    batch_sizes: tuple[int, ...] = (1,)
    threads: int | None = None
    min_runs: int = 10
    min_seconds: float = 1.0
    max_miou_drop: float = 1.0
    min_agreement: float = 0.98
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


class _Stages:
    """Bookkeeping of which stages are done, under which key, and how long they took."""

    def __init__(self, run_dir: Path, force: bool, log: Callable[[str], None]):
        self.path = run_dir / STATE
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


def run_pipeline(run_dir: str | Path, options: PipelineOptions | None = None, force: bool = False,
                 log: Callable[[str], None] | None = print, verbose: int = 2) -> PipelineResult:
    """Run every stage (skipping those already done with the same options); write RUN_DIR/report.md."""
    from exporter.bench.pack import open_run_dir
    from exporter.bench.runner import BenchSettings, run_bench
    from exporter.bench.tables import write_reports
    from exporter.export.api import ExportContext, export_onnx, export_tflite
    from exporter.packing import build_pack
    from exporter.train import TrainConfig, train

    options = options or PipelineOptions()
    log = log or (lambda message: None)
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{run_dir}: cannot create run folder ({exc.strerror or exc})") from None
    stages = _Stages(run_dir, force, log)

    # 1. data
    data_dir = Path(options.data_dir) if options.data_dir else run_dir / "data"
    data_key = _key("data", options.data_dir, options.synth_count, options.synth_seed, options.input_size)
    if not stages.done("data", data_key, [data_dir / "CameraRGB"]):
        started = time.perf_counter()
        if options.data_dir:
            from exporter.data.carla import load_frames

            frames = load_frames(data_dir, tuple(options.input_size), options.n_classes)
            info = {"frames": len(frames)}
        else:
            from exporter.data.synth import write_synthetic_dataset

            summary = write_synthetic_dataset(data_dir, options.synth_count, options.synth_seed,
                                              tuple(options.input_size))
            info = {"frames": summary["count"], "synthetic": True}
        stages.record("data", data_key, started, **info)

    # 2. train
    config = TrainConfig(epochs=options.epochs, batch_size=options.batch_size, learning_rate=options.learning_rate,
                         n_filters=options.n_filters, input_size=tuple(options.input_size),
                         n_classes=options.n_classes, val_split=options.val_split, seed=options.seed)
    train_key = _key("train", data_key, asdict(config))
    model_path = run_dir / "model.keras"
    if not stages.done("train", train_key, [model_path]):
        started = time.perf_counter()
        state_file = run_dir / "checkpoint" / "state.json"
        resumable = not force and state_file.exists() and \
            read_json(state_file, "training checkpoint state").get("config") == config.identity()
        result = train(data_dir, run_dir, config, resume=resumable, overwrite=not resumable, log=log,
                       verbose=verbose)
        stages.record("train", train_key, started, best_epoch=result.best_epoch,
                      val_miou=result.best_val_miou, val_pixel_accuracy=result.best_val_pixel_accuracy,
                      images_per_second=result.images_per_second)

    # 3. export + validate (and the evaluation frames the bench scores against)
    model_sha = sha256_file(model_path)
    export_key = _key("export", model_sha, [asdict(e) for e in options.exports], options.calibration_samples,
                      options.validation_samples, options.max_miou_drop, options.min_agreement, options.eval_frames)
    context = None
    if not stages.done("export", export_key, [run_dir / e.name for e in options.exports]):
        started = time.perf_counter()
        context = ExportContext(model_path, data_dir, options.validation_samples, options.seed, log)
        gate_failures = []
        for spec in options.exports:
            kwargs = dict(quantization=spec.quantization, calibration_samples=options.calibration_samples,
                          context=context, seed=options.seed)
            if spec.format == "tflite":
                result = export_tflite(model_path, io=spec.io, argmax=spec.argmax, float_head=spec.float_head,
                                       **kwargs)
            else:
                result = export_onnx(model_path, float_head=spec.float_head, **kwargs)
            v = result.validation
            within = not (v.miou_drop_points > options.max_miou_drop or v.pixel_agreement < options.min_agreement)
            if not within:
                gate_failures.append(result.path.name)
            log(f"   {result.path.name}: {result.size_bytes / 1e6:.2f} MB in {result.conversion_seconds:.1f}s, "
                f"agreement {v.pixel_agreement:.4f}, mIoU drop {v.miou_drop_points:.2f} pt"
                + ("" if within else "  (outside the accuracy budget: kept, flagged in the report)"))
        stages.record("export", export_key, started, outside_budget=gate_failures)

    # 4. pack
    pack_path = run_dir / "unet.pack"
    pack_key = _key("pack", export_key, options.eval_frames)
    if not stages.done("pack", pack_key, [pack_path, run_dir / "eval.npz"]):
        started = time.perf_counter()
        build_pack(run_dir, data_dir, pack_path, frames=options.eval_frames, seed=options.seed, log=log,
                   context=context if context and len(context.validation) >= options.eval_frames else None)
        stages.record("pack", pack_key, started, size_bytes=pack_path.stat().st_size)

    # 5. bench
    bench_json = run_dir / "bench" / "bench.json"
    bench_key = _key("bench", pack_key, options.runtimes, options.devices, options.batch_sizes, options.threads,
                     options.min_runs, options.min_seconds)
    if not stages.done("bench", bench_key, [bench_json]):
        started = time.perf_counter()
        import os

        settings = BenchSettings(runtimes=tuple(options.runtimes) if options.runtimes else None,
                                 devices=tuple(options.devices), threads=(options.threads or os.cpu_count(),),
                                 batch_sizes=tuple(options.batch_sizes), min_runs=options.min_runs,
                                 min_seconds=options.min_seconds)
        bench = run_bench(open_run_dir(run_dir), run_dir / "bench", settings, progress=log)
        write_reports(bench, bench_json, run_dir / "bench" / "bench.csv", run_dir / "bench" / "bench.md")
        stages.record("bench", bench_key, started)

    # 6. report (always rewritten: cheap, and it shows this run's stage times)
    started = time.perf_counter()
    from exporter.report import write_report

    report = write_report(run_dir, options, stages.seconds, stages.state)
    stages.seconds["report"] = time.perf_counter() - started
    log(f"wrote {report}")
    return PipelineResult(run_dir, report, stages.seconds, stages.skipped)
