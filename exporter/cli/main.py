"""``unet-export``: data, train, tflite, onnx, pack, pipeline — thin wrappers over the library."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from exporter.cli.common import OneLineErrors, echo, handle_errors, warn
from exporter.contracts.export_spec import FORMAT_OPTIONS
from exporter.data.carla import IMAGE_DIR, MASK_DIR
from exporter.errors import UserError
from exporter.export.qat import QATOptions
from exporter.export.quant_report import SENSITIVITY_LAYERS
from exporter.parameters import (
    CALIBRATION_SAMPLES,
    EVAL_FRAMES,
    INPUT_SIZE,
    MAX_CLASSES,
    N_CLASSES,
    ONNX_OPSET,
    ONNX_OPSETS,
    REPORT_FRAMES,
    SYNTH_COUNT,
    VALIDATION_SAMPLES,
    ArtifactFormat,
    Int8Scheme,
    IOType,
    LRSchedule,
    Quantization,
    Strategy,
    TrainPrecision,
)
from exporter.pipeline import DEMO_BENCH, DEMO_TRAINING, PipelineOptions
from exporter.train import TrainConfig

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

def _quantize_choices(fmt: ArtifactFormat) -> list[str]:
    """The precisions ``--quantize`` takes for a format (fp32 is the default without it)."""
    return Quantization.values(q for q in FORMAT_OPTIONS[fmt].quantizations if q is not Quantization.FP32)


EQUALIZE_HELP = ("With --quantize int8: cross-layer equalization (rescale channel pairs across conv → ReLU → conv, "
                 "the float outputs kept) and bias correction before quantizing; adds _eq to the file name.")
FLOAT_HEAD_HELP = ("With --quantize int8: keep the final 1×1 classifier conv in float (int8 elsewhere). "
                   "Recovers most of int8's mIoU loss at about the same speed; not for integer-only accelerators.")


@click.group(cls=OneLineErrors)
@click.version_option(package_name="unet-export")
def cli() -> None:
    """Train the seed U-Net, export it for the edge (TFLite, ONNX), pack it for the device."""


@cli.group()
def data() -> None:
    """Data sets in the CARLA layout (CameraRGB/ + CameraMask/)."""


@data.command("synth")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Folder to write.")
@click.option("--count", default=SYNTH_COUNT, show_default=True, type=click.IntRange(min=1), help="Frames to write.")
@click.option("--seed", default=0, show_default=True, type=int, help="Same seed → byte-identical files.")
@click.option("--size", nargs=2, type=int, default=INPUT_SIZE, show_default=True, metavar="H W",
              help="Frame size.")
@click.option("--force", is_flag=True, help="Replace the frames of a folder that already holds some.")
@handle_errors
def data_synth(out_dir: str, count: int, seed: int, size: tuple[int, int], force: bool) -> None:
    """Write synthetic driving scenes with CARLA's 23 classes."""
    from exporter.data.synth import write_synthetic_dataset

    summary = write_synthetic_dataset(out_dir, count=count, seed=seed, size=tuple(size), overwrite=force)
    present = {k: v for k, v in summary["class_pixel_fraction"].items() if v > 0}
    echo(f"wrote {count} frames ({size[0]}x{size[1]}) to {out_dir}; {len(present)} classes present")
    if summary["removed"]:
        echo(f"removed {summary['removed']} file(s) of the earlier data set that were not rewritten")


def _data_options(func):
    """How a data folder is read and its classes named (default: the run's config.json, else CARLA's layout)."""
    func = click.option("--labels", "labels_file", type=click.Path(dir_okay=False), default=None, metavar="FILE",
                        help="Class names, one a line [default: the run's; CARLA's for 23 classes; else "
                             "class_0…].")(func)
    func = click.option("--ignore-index", type=click.IntRange(0, 255), default=None, metavar="N",
                        help="Mask value to leave out of the loss, the metrics, calibration coverage and drift "
                             "(e.g. 255, \"don't care\").")(func)
    func = click.option("--masks-dir", default=None, metavar="NAME",
                        help=f"Mask folder inside the data folder [default: {MASK_DIR}].")(func)
    func = click.option("--images-dir", default=None, metavar="NAME",
                        help=f"Image folder inside the data folder [default: {IMAGE_DIR}].")(func)
    return func


def _data_choice(options: dict):
    """The ``_data_options`` (taken out of ``options``) as a ``DataOptions``; the labels file read now."""
    from exporter.export.api import DataOptions, read_labels

    labels = options.pop("labels_file")
    return DataOptions(options.pop("images_dir"), options.pop("masks_dir"), options.pop("ignore_index"),
                       tuple(read_labels(labels)) if labels else None, labels)


@data.command("check")
@click.argument("data_dir", type=click.Path())
@click.option("--n-classes", default=N_CLASSES, show_default=True, type=click.IntRange(2, MAX_CLASSES),
              help="Classes; masks hold 8-bit class ids.")
@click.option("--input-size", nargs=2, type=int, default=INPUT_SIZE, show_default=True, metavar="H W")
@click.option("--skip-bad", is_flag=True, help="Warn about bad files and go on instead of stopping.")
@_data_options
@handle_errors
def data_check(data_dir: str, n_classes: int, input_size: tuple[int, int], skip_bad: bool, **options) -> None:
    """Read every frame of a data folder and report the first problem (or each, with --skip-bad)."""
    import numpy as np

    from exporter.classes import class_names
    from exporter.data.index import INDEX_FILE, index_dataset

    choice = _data_choice(options)
    frames = index_dataset(data_dir, choice.data_format({}, tuple(input_size), n_classes), skip_bad=skip_bad,
                           warn=warn)
    counts = frames.class_pixels()
    choice.check_labels(n_classes)
    names = list(choice.labels) if choice.labels else class_names(n_classes)
    present = ", ".join(f"{names[i]} {counts[i] / counts.sum():.1%}" for i in np.flatnonzero(counts))
    reused = f" (the check stored in {INDEX_FILE}; the files have not changed)" if frames.reused else ""
    echo(f"{data_dir}: {len(frames)} usable frames{reused}; classes: {present}")
    if frames.skipped:
        echo(f"skipped {len(frames.skipped)} bad file(s)")


def _input_size(ctx, param, value):
    from exporter.model import check_input_size

    try:
        return check_input_size((*value, 3))[:2]
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _model_options(defaults):
    """Options shared by train and pipeline; their defaults differ: ``defaults`` is a TrainConfig."""

    def decorate(func):
        for option in reversed([
            click.option("--epochs", default=defaults.epochs, show_default=True, type=click.IntRange(min=1),
                         help="Epochs (the cosine schedule ends at the last one)."),
            click.option("--batch-size", default=defaults.batch_size, show_default=True, type=click.IntRange(min=1)),
            click.option("--learning-rate", default=defaults.learning_rate, show_default=True,
                         type=click.FloatRange(min=0, min_open=True), help="Adam's (peak) learning rate."),
            click.option("--n-filters", default=defaults.n_filters, show_default=True, type=click.IntRange(min=1)),
            click.option("--input-size", nargs=2, type=int, default=defaults.input_size, show_default=True,
                         metavar="H W", callback=_input_size, help="Model input; height and width divisible by 16."),
            click.option("--n-classes", default=defaults.n_classes, show_default=True,
                         type=click.IntRange(2, MAX_CLASSES), help="Classes; masks hold 8-bit class ids."),
            click.option("--lr-schedule", type=click.Choice(LRSchedule.values()), default=None,
                         help=f"constant, or cosine: warm-up to --learning-rate, then decay to 0 at the last epoch "
                              f"[default: {defaults.lr_schedule}]"),
            click.option("--warmup-epochs", type=click.FloatRange(min=0), default=None,
                         help=f"Warm-up of the cosine schedule [default: {defaults.warmup_epochs:g}]"),
            click.option("--target-miou", type=click.FloatRange(0, 1, min_open=True), default=None,
                         help="Stop after the first epoch whose validation mIoU reaches this."),
            click.option("--time-budget", type=click.FloatRange(min=0, min_open=True), default=None,
                         metavar="SECONDS", help="Stop training before an epoch that would not fit in this time."),
            click.option("--precision", type=click.Choice(TrainPrecision.values()), default=None, help="Keras dtype policy for training (the classifier and the loss stay "
                                            "float32; model.keras exports as float32). mixed_bfloat16 needs a "
                                            "CPU with AVX-512 bf16/AMX or a GPU to pay off [default: float32]"),
        ]):
            func = option(func)
        return func

    return decorate


@cli.command()
@click.option("--data", "data_dir", required=True, type=click.Path(), help="CARLA-layout folder.")
@click.option("--out", "run_dir", required=True, type=click.Path(file_okay=False), help="Run folder to write.")
@_model_options(TrainConfig())
@click.option("--dropout", default=TrainConfig().dropout, show_default=True, type=click.FloatRange(0, 1, max_open=True))
@click.option("--val-split", default=TrainConfig().val_split, show_default=True, type=float)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--resume", is_flag=True, help="Continue a run from its last completed epoch.")
@click.option("--force", is_flag=True, help="Start over in a folder that already holds a run.")
@click.option("--skip-bad", is_flag=True, help="Skip bad frames with a warning instead of stopping.")
@click.option("--strategy", type=click.Choice(Strategy.values()), default=Strategy.NONE.value, show_default=True,
              help="data-parallel: every GPU (device) JAX sees, and every worker process, on Keras' JAX backend; "
                   "--batch-size is then the global batch. docs: README, 'Training on several GPUs or hosts'.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Worker processes in all (one per host) [default: $KERAS_DISTRIBUTION_NUM_PROCESSES or 1].")
@click.option("--worker-index", type=click.IntRange(min=0), default=None,
              help="This worker's index; 0 is the chief, which writes the run folder "
                   "[default: $KERAS_DISTRIBUTION_PROCESS_ID or 0].")
@click.option("--coordinator", default=None, metavar="HOST:PORT",
              help="Worker 0's address, the same on every worker [default: $KERAS_DISTRIBUTION_JOB_ADDRESSES].")
@_data_options
@handle_errors
def train(data_dir, run_dir, epochs, batch_size, learning_rate, n_filters, input_size, n_classes, lr_schedule,
          warmup_epochs, target_miou, time_budget, precision, dropout, val_split, seed, resume, force,
          skip_bad, strategy, workers, worker_index, coordinator, **options) -> None:
    """Train the seed U-Net; writes model.keras (best val mIoU), config.json, history.csv, curves."""
    from exporter.distributed import Distribution
    from exporter.train import train as run_training

    distribution = Distribution.from_environment(strategy, workers, worker_index, coordinator)
    data = _data_choice(options)
    data.check_labels(n_classes)
    config = _training(TrainConfig(), epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                       n_filters=n_filters, input_size=tuple(input_size), n_classes=n_classes, dropout=dropout,
                       val_split=val_split, seed=seed, lr_schedule=lr_schedule, warmup_epochs=warmup_epochs,
                       target_miou=target_miou, time_budget=time_budget, precision=precision,
                       images_dir=data.images, masks_dir=data.masks, ignore_index=data.ignore_index,
                       class_names=data.labels)
    try:
        result = run_training(data_dir, run_dir, config, resume=resume, overwrite=force, skip_bad=skip_bad,
                              log=echo, verbose=1 if os.isatty(1) else 2, distribution=distribution)
    except UserError as exc:
        if distribution.workers < 2:
            raise
        # leave at once: JAX's exit would wait a minute at a shutdown barrier for the lost worker, then abort
        click.echo(f"error: {exc}", err=True)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(2)
    where = Path(result.model_path) if distribution.chief else f"written by worker 0 to {Path(result.model_path)}"
    echo(f"best epoch {result.best_epoch}: val mIoU {result.best_val_miou:.4f}, "
         f"val pixel accuracy {result.best_val_pixel_accuracy:.4f}; "
         f"{result.images_per_second:.1f} train images/s → {where}")


def _training(defaults, **given):
    """``defaults`` with every option the user gave (None: not given, the default stays)."""
    from dataclasses import replace

    return replace(defaults, **{k: v for k, v in given.items() if v is not None})


def _budget_options(func):
    func = click.option("--min-agreement", type=click.FloatRange(0, 1), default=None,
                        help="Fail (exit 1, nothing written) if pixel agreement with Keras is below this.")(func)
    func = click.option("--max-miou-drop", type=click.FloatRange(min=0), default=None, metavar="POINTS",
                        help="Fail (exit 1, nothing written) if mIoU drops more than this many points.")(func)
    func = click.option("--validation-samples", default=VALIDATION_SAMPLES, show_default=True,
                        type=click.IntRange(min=1),
                        help="Held-out frames the artifact is checked on.")(func)
    func = click.option("--calibration-samples", default=CALIBRATION_SAMPLES, show_default=True,
                        type=click.IntRange(min=1),
                        help="Frames used to calibrate int8/int16x8 (class-balanced).")(func)
    func = click.option("--seed", default=0, show_default=True, type=int)(func)
    func = click.option("--out", type=click.Path(dir_okay=False), default=None,
                        help="Output file (default: next to the model, named after the mode).")(func)
    func = click.option("--data", "data_dir", type=click.Path(), default=None,
                        help="Data folder for calibration and validation (default: the run's data).")(func)
    func = click.option("--model", "model_path", required=True, type=click.Path(),
                        help="The Keras model: RUN_DIR/model.keras, or any .keras segmentation model.")(func)
    return _data_options(func)


def _fallback_options(func):
    from exporter.export.fallback import FallbackOptions

    func = click.option("--max-float-layers", default=FallbackOptions().max_float_layers, show_default=True,
                        type=click.IntRange(min=1),
                        help="With --auto-fallback: give up (exit 1) after keeping this many layers float.")(func)
    func = click.option("--auto-fallback", is_flag=True,
                        help="With --quantize int8 and a budget: keep the most error-adding layers float, one at "
                             "a time, until --max-miou-drop/--min-agreement hold.")(func)
    return func


def _export(spec_fields: dict, options: dict) -> None:
    """Export one artifact as ``spec_fields`` say, with the shared options of ``_budget_options`` and
    ``_fallback_options``; print its validation table."""
    from exporter.contracts.export_spec import ExportSpec
    from exporter.drift import Budget
    from exporter.errors import CheckFailed
    from exporter.export.api import ExportContext
    from exporter.export.fallback import FallbackOptions, export_with_fallback
    from exporter.export.validate import format_table

    spec = ExportSpec(**spec_fields)  # a bad combination stops here, before the model is loaded
    ctx = ExportContext.open(options["model_path"], options["data_dir"], options["validation_samples"],
                             options["seed"], log=echo, data=_data_choice(options))
    budget = Budget(options["max_miou_drop"], options["min_agreement"])
    out, samples = options["out"], options["calibration_samples"]
    try:
        if options["auto_fallback"]:
            result = export_with_fallback(ctx, spec, out, budget, samples,
                                          FallbackOptions(max_float_layers=options["max_float_layers"]))
        else:
            result = ctx.export(spec, out, budget, samples)
    except CheckFailed as exc:
        if exc.measured:
            echo(format_table([exc.measured]))
        raise
    echo(format_table([(result.path.name, spec.quantization.value, result.validation)]))
    echo(f"wrote {result.path} ({result.entry.size_bytes / 1e6:.2f} MB, converted in "
         f"{result.entry.conversion_seconds:.1f}s)")
    written = result.entry.spec
    if written.format is ArtifactFormat.TFLITE and (written.equalize or written.int16_layers or written.float_scope.layers):
        from exporter.contracts.export_spec import recipe_of
        from exporter.fileio import write_json_atomic

        recipe = write_json_atomic(result.path.with_suffix(".recipe.json"), recipe_of(written))
        echo(f"wrote {recipe} (apply it again with --recipe)")
    if result.fallback_latency_ms:
        before, after = result.fallback_latency_ms
        start = "int8 with float head" if spec.float_head else "full int8"
        echo(f"p50 here, one frame: {start} {before:.2f} ms, with {len(result.entry.fallback.float_layers)} "
             f"layer(s) {result.entry.fallback.precision} {after:.2f} ms ({after / before - 1:+.1%})")


STATIC_TARGETS = {"web": "LiteRT.js and MediaPipe's GPU delegate in the browser",
                  "gpu": "GPU delegates and LiteRT's GPU accelerator", "app": "mobile GPU delegates and MediaPipe"}


def _float_scope(float_head: bool):
    from exporter.contracts.export_spec import HEAD, FloatScope

    return HEAD if float_head else FloatScope()


@cli.command()
@_budget_options
@click.option("--quantize", type=click.Choice(_quantize_choices(ArtifactFormat.TFLITE)), default=None,
              is_flag=False, flag_value="int8",
              help="Quantize: bare --quantize means full-integer int8; without it, fp32.")
@click.option("--io", "io", type=click.Choice(IOType.values()), default=None,
              help="Input/output type of a full-int8 model; uint8 takes camera bytes 0..255 directly. Default float32 "
                   "(uint8 with --integer-only or --int16).")
@click.option("--float-head", is_flag=True, help=FLOAT_HEAD_HELP)
@click.option("--argmax", is_flag=True, help="Append an in-graph argmax: output an H×W uint8 class map.")
@click.option("--no-metadata", is_flag=True, help="Skip the embedded TFLite metadata (labels, normalisation).")
@click.option("--static-batch", type=click.IntRange(min=1), default=None, metavar="N",
              help="Fix the batch to N (e.g. 1) so every tensor has a static shape: LiteRT's GPU accelerator and "
                   "GPU delegates refuse the default dynamic batch, and XNNPACK runs dynamic-range int8 only with "
                   "it (1 is the default for --quantize dynamic, --integer-only, --int16). Adds _bN to the file name.")
@click.option("--target", type=click.Choice(("web", "gpu", "app")), default=None,
              help="Where the file goes: web (LiteRT.js, MediaPipe in the browser), gpu (GPU delegates, LiteRT's "
                   "GPU accelerator) or app (mobile): each takes static shapes only, so the batch is fixed to 1 "
                   "unless --static-batch says otherwise.")
@click.option("--equalize", is_flag=True, help=EQUALIZE_HELP)
@click.option("--integer-only", is_flag=True,
              help="With --quantize int8: no float op in the file (read back and checked; for NPUs, Edge TPU, "
                   "microcontrollers); --auto-fallback then keeps tensors in int16, never float. Implies --io uint8 "
                   "and --static-batch 1 unless given.")
@click.option("--int16", "int16_layers", multiple=True, metavar="LAYER",
              help="With --quantize int8: carry this conv's output tensor in int16 (A16W8, from the conv to the "
                   "convs reading it) through ai-edge-quantizer; repeat for more.")
@click.option("--recipe", "recipe_file", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Apply a recipe written beside an earlier export (*.recipe.json: int16 islands, float layers, "
                   "equalization).")
@_fallback_options
@handle_errors
def tflite(quantize, io, float_head, argmax, no_metadata, static_batch, target, equalize, integer_only,
           int16_layers, recipe_file, **options) -> None:
    """Export to TFLite (fp32, fp16, dynamic, int8, int16x8), validate it in LiteRT, write atomically."""
    fields = dict(float_scope=_float_scope(float_head), equalize=equalize, integer_only=integer_only,
                  int16_layers=tuple(int16_layers))
    if recipe_file:
        fields.update(_recipe_fields(recipe_file, fields))
    integer = fields["integer_only"] or fields["int16_layers"]
    if target and not static_batch:
        static_batch = 1
        echo(f"--target {target}: batch fixed to 1 ({STATIC_TARGETS[target]} take static shapes only; "
             "--static-batch N for another)")
    _export(dict(format="tflite", quantization=quantize or ("int8" if recipe_file or integer else "fp32"),
                 io=io or ("uint8" if integer else "float32"), argmax=argmax, metadata=not no_metadata,
                 static_batch=static_batch or (1 if integer or quantize == "dynamic" else None), **fields), options)


def _recipe_fields(path: str, given: dict) -> dict:
    """A recipe's spec fields; the flags given on the command line add to it (a flag set in both is fine)."""
    from exporter.contracts.export_spec import FloatScope, read_recipe

    recipe = read_recipe(path)
    scope = given.get("float_scope", FloatScope())
    return {"equalize": recipe["equalize"] or given.get("equalize", False),
            "integer_only": recipe.get("integer_only", False) or given.get("integer_only", False),
            "int16_layers": tuple(dict.fromkeys(recipe["int16_layers"] + given.get("int16_layers", ()))),
            "float_scope": FloatScope(tuple(dict.fromkeys(recipe["float_scope"].layers + scope.layers)),
                                      recipe["float_scope"].head or scope.head)}


@cli.command()
@_budget_options
@click.option("--quantize", type=click.Choice(_quantize_choices(ArtifactFormat.ONNX)),
              default=None, is_flag=False, flag_value="int8",
              help="int8: ORT static QDQ, per-channel; fp16: float16 weights, float32 I/O. Default fp32.")
@click.option("--float-head", is_flag=True, help=FLOAT_HEAD_HELP)
@click.option("--opset", type=click.IntRange(*ONNX_OPSETS), default=None, help=f"ONNX opset (default {ONNX_OPSET}).")
@click.option("--int8-scheme", type=click.Choice(Int8Scheme.values()), default=Int8Scheme.U8S8.value,
              show_default=True,
              help="int8 types: u8s8 is ONNX Runtime's default; reduce-range (7-bit weights) or u8u8 keep x86 CPUs "
                   "without VNNI from saturating 16-bit sums (benchmarks/RESULTS.md).")
@click.option("--equalize", is_flag=True, help=EQUALIZE_HELP)
@click.option("--integer-only", is_flag=True,
              help="With --quantize int8: every convolution, pooling and concatenation reads dequantized integer "
                   "tensors (checked); --auto-fallback then keeps tensors in 16 bits (A16W8 QDQ), never float.")
@click.option("--int16", "int16_layers", multiple=True, metavar="LAYER",
              help="With --quantize int8: carry this conv's output tensor in uint16 (QDQ, opset 21); repeat for more.")
@_fallback_options
@handle_errors
def onnx(quantize, float_head, opset, int8_scheme, equalize, integer_only, int16_layers, **options) -> None:
    """Export to ONNX (fp32, fp16, int8), validate it in ONNX Runtime, write atomically."""
    integer = integer_only or bool(int16_layers)
    _export(dict(format="onnx", quantization=quantize or ("int8" if integer else "fp32"),
                 float_scope=_float_scope(float_head), opset=opset, int8_scheme=int8_scheme, equalize=equalize,
                 integer_only=integer_only, int16_layers=tuple(int16_layers)), options)


@cli.command()
@_budget_options
@click.option("--epochs", default=QATOptions().epochs, show_default=True, type=click.IntRange(min=1),
              help="Fine-tuning epochs over the training side of the data.")
@click.option("--batch-size", default=QATOptions().batch_size, show_default=True, type=click.IntRange(min=1))
@click.option("--learning-rate", default=QATOptions().learning_rate, show_default=True,
              type=click.FloatRange(min=0, min_open=True))
@click.option("--argmax/--logits", default=True, show_default=True,
              help="TFLite: a class map out (in-graph argmax on the int8 logits), or the int8 logits.")
@click.option("--onnx/--no-onnx", default=True, show_default=True,
              help="Also an int8 QDQ ONNX: the fine-tuned weights, each layer's learned range as its range.")
@handle_errors
def qat(epochs, batch_size, learning_rate, argmax, onnx, **options) -> None:
    """Quantization-aware fine-tuning in Keras 3, then a full-integer TFLite (uint8 in, batch 1, no float op)
    from the learned ranges and an int8 QDQ ONNX, validated against the original model."""
    from exporter.contracts.export_spec import ExportSpec
    from exporter.drift import Budget
    from exporter.export.api import ExportContext
    from exporter.export.qat import fine_tune
    from exporter.export.validate import format_table

    specs = [ExportSpec("tflite", "int8", io="uint8", argmax=argmax, static_batch=1, integer_only=True, qat=True)]
    if onnx:
        specs.append(ExportSpec("onnx", "int8", qat=True))
    ctx = ExportContext.open(options["model_path"], options["data_dir"], options["validation_samples"],
                             options["seed"], log=echo, data=_data_choice(options))
    ctx.qat_model = fine_tune(ctx, QATOptions(epochs, batch_size, learning_rate), log=echo)
    budget = Budget(options["max_miou_drop"], options["min_agreement"])
    results = [ctx.export(spec, options["out"] if spec.format is ArtifactFormat.TFLITE else None, budget,
                          options["calibration_samples"]) for spec in specs]
    echo(format_table([(r.path.name, "int8", r.validation) for r in results]))
    for result in results:
        echo(f"wrote {result.path} ({result.entry.size_bytes / 1e6:.2f} MB, converted in "
             f"{result.entry.conversion_seconds:.1f}s)")


@cli.command("quant-report")
@click.option("--model", "model_path", required=True, type=click.Path(),
              help="The Keras model: RUN_DIR/model.keras, or any .keras segmentation model.")
@click.option("--data", "data_dir", type=click.Path(), default=None,
              help="Data folder (default: the run's data; its held-out frames are used).")
@click.option("--format", "fmt", type=click.Choice(ArtifactFormat.values()), default=ArtifactFormat.TFLITE.value,
              show_default=True)
@click.option("--artifact", type=click.Path(dir_okay=False), default=None,
              help="Report on this int8 file (default: convert the model to full int8 now).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Folder for quant_report.json/.md/.png (default: the run folder).")
@click.option("--frames", default=REPORT_FRAMES, show_default=True, type=click.IntRange(min=1),
              help="Held-out frames the layer outputs are compared on.")
@click.option("--sensitivity", default=SENSITIVITY_LAYERS, show_default=True, type=click.IntRange(min=0),
              help="For this many of the worst layers: mIoU drop and agreement with only that layer kept float.")
@click.option("--calibration-samples", default=CALIBRATION_SAMPLES, show_default=True, type=click.IntRange(min=1))
@click.option("--validation-samples", default=VALIDATION_SAMPLES, show_default=True, type=click.IntRange(min=1))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--equalize", is_flag=True,
              help="Report on the model after cross-layer equalization and bias correction (an --artifact must have "
                   "been exported with --equalize).")
@_data_options
@handle_errors
def quant_report_command(model_path, data_dir, fmt, artifact, out_dir, frames, sensitivity, calibration_samples,
                         validation_samples, seed, equalize, **options) -> None:
    """Where int8 loses accuracy: every quantized layer's error against the float model, worst ones marked."""
    from exporter.export import quant_report
    from exporter.export.api import ExportContext

    ctx = ExportContext.open(model_path, data_dir, validation_samples, seed, log=echo, data=_data_choice(options))
    if artifact is not None and not Path(artifact).is_file():
        raise UserError(f"{artifact}: file not found")
    rep = quant_report.report_for(ctx, fmt, artifact, frames, sensitivity, calibration_samples, equalize)
    echo(quant_report.table(rep))
    if rep.sensitivity:
        echo(quant_report.sensitivity_table(rep))
    for written in quant_report.write(rep, Path(out_dir) if out_dir else ctx.run.path):
        echo(f"wrote {written}")


@cli.command()
@click.argument("run_dir", metavar="MODEL", type=click.Path())
@click.option("--data", "data_dir", type=click.Path(), default=None,
              help="Data folder for the evaluation frames (default: the run's data).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="FILE.pack to write.")
@click.option("--frames", default=EVAL_FRAMES, show_default=True, type=click.IntRange(min=1),
              help="Held-out evaluation frames to include.")
@click.option("--with-keras/--no-keras", default=False, show_default=True,
              help="Also carry model.keras (without optimizer state), for a device with TensorFlow or JAX "
                   "(KERAS_BACKEND=jax) that should bench a Keras row too. Not needed for drift: the Keras "
                   "reference outputs are always in the pack.")
@click.option("--artifacts", "only", default=None, metavar="NAME[,NAME...]",
              help="Carry only these artifact files (e.g. unet_fp32.tflite,model.keras); default: every one.")
@click.option("--seed", default=0, show_default=True, type=int)
@_data_options
@handle_errors
def pack(run_dir, data_dir, out, frames, with_keras, only, seed, **options) -> None:
    """Bundle a model's exported artifacts, evaluation frames and Keras reference outputs into one file for the
    device. MODEL: a run folder, a .keras model file, or a folder holding one."""
    from exporter.pack_builder import PackContents, build_pack

    names = None if only is None else tuple(n.strip() for n in only.split(",") if n.strip())
    contents = PackContents(frames, with_keras, names, seed, _data_choice(options))
    path = build_pack(run_dir, data_dir, out, contents, log=echo, warn=warn)
    echo(f"wrote {path} ({Path(path).stat().st_size / 1e6:.1f} MB); on the device: unet-bench run {Path(path).name}")


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--dry-run", is_flag=True, help="Only list the entries that would be removed.")
@handle_errors
def prune(run_dir, dry_run) -> None:
    """Remove manifest entries whose artifact file was deleted (pack and bench leave them out meanwhile)."""
    from exporter.contracts.rundir import RunDir

    run = RunDir(run_dir)
    if not run.manifest_path.is_file():
        raise UserError(f"{run.manifest_path}: no manifest (is this a run folder?)")
    gone = run.prune(dry_run=dry_run)
    for entry in gone:
        echo(f"{'would remove' if dry_run else 'removed'} {entry.path} (file not found)")
    echo(f"{run.manifest_path}: {len(gone)} entr{'y' if len(gone) == 1 else 'ies'} "
         f"{'to remove' if dry_run else 'removed'}, {len(run.manifest().artifacts)} listed")


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="The site's folder (written whole).")
@click.option("--runtime", type=click.Choice(("litertjs", "mediapipe-web")), default="litertjs", show_default=True,
              help="LiteRT.js on the mobile file (class map out), or MediaPipe's ImageSegmenter on a logits file.")
@click.option("--model", "model_path", type=click.Path(dir_okay=False), default=None,
              help="The .tflite to embed (default: the run's first file for apps that the runtime takes).")
@click.option("--check", is_flag=True,
              help="Open the page in headless Chromium on the demo frame, compare the overlay with the Keras class "
                   "map, keep a screenshot (OUT.png).")
@handle_errors
def webapp(run_dir, out, runtime, model_path, check) -> None:
    """Write a static web page (no build step) that segments an image or the camera with the run's model."""
    from exporter.webapp import check_site, write_site

    site = write_site(run_dir, out, runtime, model_path)
    config = json.loads((site / "model.json").read_text())
    echo(f"wrote {site}/ ({config['model']} on {runtime}); serve it, e.g. python -m http.server -d {site}")
    if check:
        seen = check_site(site, run_dir)
        echo(f"checked in {seen.browser}: the page's class map agrees with Keras on {seen.agreement:.2%} of the "
             f"demo frame's pixels, {seen.ms:.1f} ms; screenshot {seen.screenshot}")


@cli.command()
@click.option("--out", "run_dir", required=True, type=click.Path(file_okay=False), help="Run folder.")
@click.option("--data", "data_dir", type=click.Path(), default=None,
              help="Your data folder (default: synthesize driving scenes).")
@click.option("--model", "model_path", type=click.Path(dir_okay=False), default=None,
              help="A Keras segmentation model you already have: no training; export → pack → bench → report "
                   "(needs --data).")
@click.option("--synth-count", default=PipelineOptions().synth_count, show_default=True, type=click.IntRange(min=4))
@_model_options(DEMO_TRAINING)
@click.option("--calibration-samples", default=PipelineOptions().calibration_samples, show_default=True,
              type=click.IntRange(min=1))
@click.option("--validation-samples", default=PipelineOptions().validation_samples, show_default=True,
              type=click.IntRange(min=1))
@click.option("--eval-frames", default=PipelineOptions().eval_frames, show_default=True, type=click.IntRange(min=1))
@click.option("--runtimes", default=None, help="Comma list (default: every runtime present).")
@click.option("--min-runs", default=DEMO_BENCH.min_runs, show_default=True, type=click.IntRange(min=1))
@click.option("--min-seconds", default=DEMO_BENCH.min_seconds, show_default=True, type=click.FloatRange(min=0))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--force", is_flag=True, help="Redo every stage, even those already done.")
@click.option("--all", "all_exports", is_flag=True,
              help="Export and bench every mode (adds fp16 TFLite and full-int8 ONNX to the demo's six).")
@_data_options
@handle_errors
def pipeline(run_dir, data_dir, model_path, synth_count, epochs, batch_size, learning_rate, n_filters, input_size,
             n_classes, lr_schedule, warmup_epochs, target_miou, time_budget, precision, calibration_samples,
             validation_samples, eval_frames, runtimes, min_runs, min_seconds, seed, force, all_exports,
             **options) -> None:
    """Synthesize (or read) data → train (or take --model) → export → validate → pack → benchmark → report.md."""
    from dataclasses import replace

    from exporter.pipeline import ALL_EXPORTS, DEFAULT_EXPORTS, run_pipeline

    data = _data_choice(options)
    if model_path is None:  # a model brought along has its own class count, checked when it is opened
        data.check_labels(n_classes)
    training = _training(DEMO_TRAINING, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                         n_filters=n_filters, input_size=tuple(input_size), n_classes=n_classes, seed=seed,
                         lr_schedule=lr_schedule, warmup_epochs=warmup_epochs, target_miou=target_miou,
                         time_budget=time_budget, precision=precision, images_dir=data.images,
                         masks_dir=data.masks, ignore_index=data.ignore_index,
                         class_names=data.labels if model_path is None else None)
    bench = replace(DEMO_BENCH, runtimes=tuple(r.strip() for r in runtimes.split(",")) if runtimes else None,
                    min_runs=min_runs, min_seconds=min_seconds)
    options = PipelineOptions(data_dir=data_dir, model=model_path, data=data, synth_count=synth_count,
                              synth_seed=seed, training=training, calibration_samples=calibration_samples,
                              validation_samples=validation_samples, eval_frames=eval_frames, seed=seed, bench=bench,
                              exports=ALL_EXPORTS if all_exports else DEFAULT_EXPORTS)
    result = run_pipeline(run_dir, options, force=force, log=echo, verbose=1 if os.isatty(1) else 2)
    times = ", ".join(f"{k} {v:.0f}s" for k, v in result.stage_seconds.items())
    total = sum(result.stage_seconds.values())
    echo(f"done in {total // 60:.0f} min {total % 60:.0f} s ({times}); the report: {result.report}")
