"""``unet-bench``: latency and pixel-accuracy drift of every artifact on every runtime present — no TensorFlow."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import click

from exporter import drift
from exporter.bench.runner import BenchSettings
from exporter.cli.common import OneLineErrors, echo, handle_errors, warn
from exporter.errors import UserError
from exporter.fleet import FleetOptions
from exporter.parameters import Device
from exporter.runtimes import runtime_names

DEFAULTS = BenchSettings()
FLEET = FleetOptions()

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


# What to measure and how long (BenchSettings' fields): unet-bench run's options, which remote passes on.
MEASURE_OPTIONS = (
    click.option("--runtimes", callback=_csv_list(str), default=None,
                 help=f"Comma list of {', '.join(runtime_names())}, or web for every browser runtime (default: "
                      "every runtime but the browser ones, in that order)."),
    click.option("--devices", callback=_csv_list(str), default=",".join(DEFAULTS.devices), show_default=True,
                 help=",".join(Device.values())),
    click.option("--threads", callback=_csv_list(int), default=None,
                 help="Thread counts to try, comma list (default: all cores)."),
    click.option("--batch-sizes", callback=_csv_list(int), default=",".join(map(str, DEFAULTS.batch_sizes)),
                 show_default=True),
    click.option("--warmup", default=DEFAULTS.warmup, show_default=True, type=click.IntRange(min=0)),
    click.option("--min-runs", default=DEFAULTS.min_runs, show_default=True, type=click.IntRange(min=1)),
    click.option("--min-seconds", default=DEFAULTS.min_seconds, show_default=True, type=click.FloatRange(min=0)),
    click.option("--timeout", default=DEFAULTS.timeout, show_default=True, type=float,
                 help="Seconds per worker process."),
)
GATE_OPTIONS = (
    click.option("--max-miou-drop", type=click.FloatRange(min=0), default=None, metavar="POINTS",
                 help="Gate: exit 1 if any row's mIoU is more than this many points below the Keras reference."),
    click.option("--min-agreement", type=click.FloatRange(0, 1), default=None,
                 help="Gate: exit 1 if any row's pixel agreement with the Keras reference is below this (0-1)."),
)


def _options(*groups):
    """Apply groups of click options, first listed first in --help."""
    def decorate(func):
        for option in reversed([o for group in groups for o in group]):
            func = option(func)
        return func
    return decorate


def _settings(label: str | None, runtimes, devices, threads, batch_sizes, **timing):
    """The measuring options as BenchSettings (checked: unknown runtimes, counts ≥ 1)."""
    from exporter.bench.runner import BenchSettings

    return BenchSettings(runtimes=tuple(runtimes) if runtimes else None, devices=tuple(devices),
                         threads=tuple(threads) if threads else None, batch_sizes=tuple(batch_sizes), label=label,
                         **timing)


@cli.command()
@click.argument("target", type=click.Path(exists=True))
@_options(MEASURE_OPTIONS)
@click.option("--label", default=None, help="Name of this device/run in reports (e.g. pi4).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None)
@click.option("--csv", "csv_out", type=click.Path(dir_okay=False), default=None)
@click.option("--markdown", "markdown_out", type=click.Path(dir_okay=False), default=None)
@click.option("--plots", "plots_dir", type=click.Path(file_okay=False), default=None)
@click.option("--work-dir", type=click.Path(file_okay=False), default=None,
              help="Where a pack is unpacked and previews go (default: a temporary folder).")
@_options(GATE_OPTIONS)
@handle_errors
def run(target, label, json_out, csv_out, markdown_out, plots_dir, work_dir, max_miou_drop, min_agreement,
        **measure) -> None:
    """Benchmark a pack (FILE.pack) or a run folder on every runtime present.

    With --max-miou-drop/--min-agreement it is a release gate: the reports are written, then it exits 1
    naming every row outside the budget (or that failed to run). Skipped rows (runtime not installed) pass.
    """
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

    settings = _settings(label, **measure)
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
        echo(terminal_table(list(bench.rows), verdicts, bench.environment))
        for written in write_reports(bench, json_out, csv_out, markdown_out, verdicts=verdicts):
            echo(f"wrote {written}")
        if plots_dir:
            from exporter.figures.bench import write_plots

            evaldata = load_eval(bench_target.eval_path)
            for written in write_plots(bench, plots_dir, bench_target.labels, evaldata.images, evaldata.labels,
                                       evaldata.reference_map, maps_root=work_dir,
                                       max_miou_drop=max_miou_drop, ignore_index=evaldata.ignore_index):
                echo(f"wrote {written}")
        if budget.is_set:
            drift.check(bench, budget)
            echo(f"every measured row is within the budget ({budget.describe()})")
    finally:
        if temp:
            shutil.rmtree(temp, ignore_errors=True)


@cli.command()
@click.argument("pack", type=click.Path(exists=True, dir_okay=False))
@click.option("--host", "host_specs", multiple=True, metavar="LABEL=USER@HOST[:PORT]",
              help="A device to bench on (repeat for each); LABEL names it in the table.")
@click.option("--hosts", "hosts_file", type=click.Path(dir_okay=False), default=None,
              help="A file of hosts, one LABEL=USER@HOST[:PORT] a line.")
@click.option("--extra", default=FLEET.extra, show_default=True,
              help="The runtime extra installed on each device (litert, onnxruntime, openvino).")
@click.option("--python", "python", default=FLEET.python, show_default=True, help="The devices' interpreter.")
@click.option("--cache", default=FLEET.cache, show_default=True, help="The cache folder on each device.")
@click.option("--identity", type=click.Path(dir_okay=False), default=None,
              help="A private key file (default: the SSH agent's keys and ~/.ssh's).")
@click.option("--known-hosts", type=click.Path(dir_okay=False), default=None,
              help="Host keys to check against [default: ~/.ssh/known_hosts].")
@click.option("--accept-new-host-keys", is_flag=True,
              help="Accept (and record) the key of a host known_hosts does not list yet; a changed key never.")
@click.option("--wheel", type=click.Path(exists=True, dir_okay=False), default=None,
              help="The device side's wheel to install (default: built from this checkout).")
@click.option("--wheelhouse", type=click.Path(exists=True, file_okay=False), default=None,
              help="A folder of wheels for the devices (numpy, click, the runtime: pip download): copied over and "
                   "installed from with no package index, for devices without internet.")
@click.option("--host-timeout", default=FLEET.timeout, show_default=True, type=click.FloatRange(min=1),
              help="Seconds for one host, install and bench included.")
@click.option("--all-hosts", is_flag=True, help="Exit 2 when any host could not run (default: its row says why).")
@click.option("--dry-run", is_flag=True, help="List the hosts and the unet-bench run arguments, connect to none.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None)
@click.option("--markdown", "markdown_out", type=click.Path(dir_okay=False), default=None)
@_options(MEASURE_OPTIONS, GATE_OPTIONS)
@handle_errors
def remote(pack, host_specs, hosts_file, extra, python, cache, identity, known_hosts, accept_new_host_keys, wheel,
           wheelhouse, host_timeout, all_hosts, dry_run, json_out, markdown_out, max_miou_drop, min_agreement, **measure) -> None:
    """Benchmark a pack on several devices over SSH, in parallel: one table across them (README, "Benchmark a
    fleet")."""
    from exporter import fleet
    from exporter.fileio import check_writable

    given = [fleet.Host.parse(spec) for spec in host_specs]
    listed = fleet.read_hosts(hosts_file) if hosts_file else []  # its own labels checked there, by line
    hosts = fleet.unique_labels(given + listed, f"--host and {hosts_file}" if given and listed else "--host")
    if not hosts:
        raise UserError("remote: name the devices with --host LABEL=USER@HOST or --hosts FILE")
    _settings(None, **measure)  # checked here, not once on every device
    for out in (json_out, markdown_out):
        if out:
            check_writable(out)
    options = fleet.FleetOptions(extra=extra, python=python, cache=cache, identity=identity, known_hosts=known_hosts,
                                 accept_new_host_keys=accept_new_host_keys, timeout=host_timeout,
                                 run_args=tuple(_run_args(measure)), wheelhouse=wheelhouse)
    if wheelhouse:
        fleet.wheelhouse_wheels(wheelhouse)
    if identity and not Path(identity).is_file():  # once here, not once per host
        raise UserError(f"{identity}: no such key file (--identity)")
    if dry_run:
        for host in hosts:
            echo(f"{host.label}: {host} (python {python}, [{extra}], cache {cache}): unet-bench run "
                 + " ".join(options.run_args))
        return
    fleet.check_available()
    with tempfile.TemporaryDirectory(prefix="unet-fleet-") as scratch:
        built = Path(wheel) if wheel else fleet.build_wheel(scratch)
        outcomes = fleet.run_fleet(Path(pack), hosts, built, options, progress=fleet.HostLines(hosts))
    report = fleet.FleetReport(tuple(outcomes), drift.Budget(max_miou_drop, min_agreement))
    echo(report.text())
    for written in report.write(json_out, markdown_out):
        echo(f"wrote {written}")
    report.check(all_hosts)


def _run_args(measure: dict) -> list[str]:
    """The measuring options as unet-bench run arguments for a device."""
    args = []
    for name, value in measure.items():
        if value is not None:
            shown = ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
            args += ["--" + name.replace("_", "-"), shown]
    return args


@cli.command("setup-web")
@click.option("--dir", "folder", type=click.Path(file_okay=False), default=None,
              help="Where to install the npm packages (default: ~/.cache/unet-export/web; else set UNET_WEB_DIR).")
@handle_errors
def setup_web(folder) -> None:
    """Install what the web rows need besides a browser: the npm packages pinned with this version (npm ci)."""
    from exporter.runtimes.web import WEB_DIR_ENV, find_browser, install_packages, user_web_dir

    target = Path(folder) if folder else user_web_dir()
    try:
        modules = install_packages(target)
    except (RuntimeError, OSError) as exc:
        raise UserError(f"setup-web: {exc}") from None
    echo(f"installed the web packages in {modules}")
    if folder:
        echo(f"export {WEB_DIR_ENV}={target.resolve()}  (so that unet-bench finds them)")
    if find_browser() is None:
        echo("no Chromium or Chrome on the PATH: apt-get install chromium (or set UNET_BROWSER); the web rows skip "
             "until there is one")


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
