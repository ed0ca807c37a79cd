"""``unet-bench``: latency and pixel-accuracy drift of every artifact on every runtime present — no TensorFlow."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import click

from exporter.bench.runner import BenchSettings
from exporter.cli.common import OneLineErrors, echo, handle_errors, warn
from exporter.errors import UserError
from exporter.parameters import Device
from exporter.runtimes import runtime_names

DEFAULTS = BenchSettings()

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _csv_list(kind):
    def convert(ctx, param, value):
        if value is None:
            return None
        try:
            return [kind(v.strip()) for v in value.split(",") if v.strip()]
        except ValueError:
            raise click.BadParameter(f"expected a comma-separated list, got {value!r}") from None

    return convert


@click.group(cls=OneLineErrors)
@click.version_option(package_name="unet-export")
def cli() -> None:
    """Benchmark exported U-Net artifacts on this device: latency, throughput, memory, accuracy drift."""


@cli.command()
@click.argument("target", type=click.Path(exists=True))
@click.option("--runtimes", callback=_csv_list(str), default=None,
              help=f"Comma list of {', '.join(runtime_names())} (default: all, in that order).")
@click.option("--devices", callback=_csv_list(str), default=",".join(DEFAULTS.devices), show_default=True,
              help=",".join(Device.values()))
@click.option("--threads", callback=_csv_list(int), default=None,
              help="Thread counts to try, comma list (default: all cores).")
@click.option("--batch-sizes", callback=_csv_list(int), default=",".join(map(str, DEFAULTS.batch_sizes)),
              show_default=True)
@click.option("--warmup", default=DEFAULTS.warmup, show_default=True, type=click.IntRange(min=0))
@click.option("--min-runs", default=DEFAULTS.min_runs, show_default=True, type=click.IntRange(min=1))
@click.option("--min-seconds", default=DEFAULTS.min_seconds, show_default=True, type=click.FloatRange(min=0))
@click.option("--timeout", default=DEFAULTS.timeout, show_default=True, type=float,
              help="Seconds per worker process.")
@click.option("--label", default=None, help="Name of this device/run in reports (e.g. pi4).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None)
@click.option("--csv", "csv_out", type=click.Path(dir_okay=False), default=None)
@click.option("--markdown", "markdown_out", type=click.Path(dir_okay=False), default=None)
@click.option("--plots", "plots_dir", type=click.Path(file_okay=False), default=None)
@click.option("--work-dir", type=click.Path(file_okay=False), default=None,
              help="Where a pack is unpacked and previews go (default: a temporary folder).")
@click.option("--max-miou-drop", type=click.FloatRange(min=0), default=None, metavar="POINTS",
              help="Gate: exit 1 if any row's mIoU is more than this many points below the Keras reference.")
@click.option("--min-agreement", type=click.FloatRange(0, 1), default=None,
              help="Gate: exit 1 if any row's pixel agreement with the Keras reference is below this (0-1).")
@handle_errors
def run(target, runtimes, devices, threads, batch_sizes, warmup, min_runs, min_seconds, timeout, label,
        json_out, csv_out, markdown_out, plots_dir, work_dir, max_miou_drop, min_agreement) -> None:
    """Benchmark a pack (FILE.pack) or a run folder on every runtime present.

    With --max-miou-drop/--min-agreement it is a release gate: the reports are written, then it exits 1
    naming every row outside the budget (or that failed to run). Skipped rows (runtime not installed) pass.
    """
    from exporter import drift
    from exporter.bench.runner import run_bench
    from exporter.bench.tables import terminal_table, write_reports
    from exporter.contracts.evaldata import load_eval
    from exporter.contracts.pack import open_pack, open_run_dir
    from exporter.fileio import check_writable
    from exporter.runtimes.base import module_missing

    budget = drift.Budget(max_miou_drop, min_agreement)
    if plots_dir:  # an optional dependency is checked before minutes of measuring, not after
        from exporter.figures.common import MISSING_MATPLOTLIB

        if module_missing("matplotlib"):
            raise UserError(MISSING_MATPLOTLIB)

    settings = BenchSettings(runtimes=tuple(runtimes) if runtimes else None, devices=tuple(devices),
                             threads=tuple(threads) if threads else None, batch_sizes=tuple(batch_sizes),
                             warmup=warmup, min_runs=min_runs, min_seconds=min_seconds, timeout=timeout, label=label)
    for out in (json_out, csv_out, markdown_out):  # fail now, not after minutes of measuring
        if out:
            check_writable(out)
    temp = None
    if work_dir is None:
        temp = work_dir = tempfile.mkdtemp(prefix="unet-bench-")
    try:
        path = Path(target)
        bench_target = open_run_dir(path, warn=warn) if path.is_dir() else open_pack(path, Path(work_dir) / "pack")
        bench = run_bench(bench_target, work_dir, settings, progress=echo)
        verdicts = drift.judge(bench, budget) if budget.is_set else None
        echo(terminal_table(list(bench.rows), verdicts))
        for written in write_reports(bench, json_out, csv_out, markdown_out, verdicts=verdicts):
            echo(f"wrote {written}")
        if plots_dir:
            from exporter.figures.bench import write_plots

            evaldata = load_eval(bench_target.eval_path)
            for written in write_plots(bench, plots_dir, bench_target.labels, evaldata.images, evaldata.labels,
                                       evaldata.reference_map, maps_root=work_dir,
                                       max_miou_drop=max_miou_drop):
                echo(f"wrote {written}")
        if budget.is_set:
            drift.check(bench, budget)
            echo(f"every measured row is within the budget ({budget.describe()})")
    finally:
        if temp:
            shutil.rmtree(temp, ignore_errors=True)


@cli.command()
@click.argument("results", nargs=-1, required=True, type=click.Path())
@click.option("--baseline", default=None, help="Row to compare against, as artifact/runtime/device.")
@click.option("--markdown", "markdown_out", type=click.Path(dir_okay=False), default=None)
@handle_errors
def compare(results, baseline, markdown_out) -> None:
    """Side-by-side table of several bench JSON files (devices/runs), with ratios against a baseline row."""
    from exporter.bench.compare import compare as compare_benches
    from exporter.contracts.bench_json import load_bench
    from exporter.fileio import write_text_atomic

    table = compare_benches([(Path(p).stem, load_bench(p)) for p in results], baseline)
    echo(table)
    if markdown_out:
        write_text_atomic(markdown_out, table + "\n")
        echo(f"wrote {markdown_out}")


if __name__ == "__main__":  # python -m exporter.cli.bench, where the console script is not installed
    cli()
