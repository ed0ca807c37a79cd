"""RUN_DIR/report.md: what the journey measured, and which artifact to use, derived from the numbers.

Drift is judged by ``exporter.drift``, exactly as ``unet-bench run --max-miou-drop/--min-agreement`` judges the
same bench file: the report and the gate cannot disagree on a row.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from exporter import drift
from exporter.contracts.bench_json import BenchResult, BenchRow
from exporter.contracts.export_spec import HEAD, ExportSpec
from exporter.contracts.manifest import ArtifactEntry
from exporter.contracts.rundir import RunDir
from exporter.drift import Budget
from exporter.fileio import write_text_atomic
from exporter.parameters import IOType
from exporter.text_table import align


def _fmt(value, spec=".4f", missing="-"):
    return missing if value is None else format(value, spec)


@dataclass(frozen=True)
class ComparisonRow:
    """One measured CPU row of the report's table, judged against the budget."""

    row: BenchRow
    verdict: drift.Verdict

    @property
    def is_reference(self) -> bool:
        return self.row.format == "keras"

    @property
    def within(self) -> bool:
        return self.verdict.within

    @property
    def p50(self) -> float:
        return self.row.p50

    @property
    def agreement(self) -> float | None:
        return self.row.score("agreement_vs_reference")

    @property
    def size_mb(self) -> float:
        return (self.row.size_bytes or 0) / 1e6

    def cells(self) -> list[str]:
        r = self.row
        return [r.artifact, r.runtime, f"{self.size_mb:.2f}", f"{self.p50:.2f}", _fmt(r.stat("p90"), ".2f"),
                _fmt(r.throughput_fps, ".1f"), _fmt(r.score("miou")), _fmt(self.verdict.miou_drop, ".2f"),
                _fmt(self.agreement), r.inference_precision or "-",
                "✓" if self.within else "✗"]


def comparison_rows(bench: BenchResult, budget: Budget) -> list[ComparisonRow]:
    """Ok CPU rows at the smallest batch, judged by ``drift`` (the gate's rule), fastest first."""
    rows = [r for r in bench.rows if r.ok and r.device == "cpu" and r.p50 is not None]
    if not rows:
        return []
    batch = min(r.batch_size or 1 for r in rows)
    reference = drift.reference_of(bench)
    judged = [ComparisonRow(r, drift.judge_row(r, reference, budget)) for r in rows if (r.batch_size or 1) == batch]
    return sorted(judged, key=lambda row: row.p50)


def recommend(rows: list[ComparisonRow], specs: dict[str, ExportSpec]) -> dict[str, ComparisonRow | None]:
    """Fastest artifact within the accuracy budget; the one to embed in a mobile app (``ExportSpec.app_preference``
    among the LiteRT rows within the budget)."""
    within = [r for r in rows if r.within and not r.is_reference]
    fastest = min(within, key=lambda r: r.p50, default=None)
    apps = [r for r in within if r.row.runtime == "litert" and r.row.artifact in specs
            and specs[r.row.artifact].embeds_in_apps]
    mobile = min(apps, key=lambda r: specs[r.row.artifact].app_preference(), default=None)
    return {"fastest": fastest, "mobile": mobile}


def stage_rows(stage_seconds: dict[str, float], state: dict, skipped=()) -> list[list[str]]:
    """Each stage's time: measured now, or (up to date, skipped now) what it took when it last ran."""
    rows, total = [], 0.0
    for name, seconds in stage_seconds.items():
        if name in skipped:
            seconds = float(state["stages"].get(name, {}).get("seconds") or 0.0)
            when = "earlier run (up to date, skipped this time)"
        else:
            when = "this run"
        total += seconds
        rows.append([name, f"{seconds:.1f}", when])
    rows.append(["total", f"{total:.1f}", "the whole journey, stages as last run"])
    return rows


def _recommendation(rows: list[ComparisonRow], artifacts: list[ArtifactEntry], budget: Budget) -> list[str]:
    specs = {a.name: a.spec for a in artifacts if a.spec is not None}
    picks = recommend(rows, specs)
    lines = ["## Recommendation", ""]
    fastest, mobile = picks["fastest"], picks["mobile"]
    if fastest:
        lines.append(f"- **Fastest within the accuracy budget** ({budget.describe()}) on this machine: "
                     f"`{fastest.row.artifact}` on **{fastest.row.runtime}**: p50 {fastest.p50:.2f} ms, "
                     f"{fastest.row.throughput_fps:.1f} frames/s, mIoU drop {fastest.verdict.miou_drop:.2f} pt, "
                     f"agreement {fastest.agreement:.2%}.")
    else:
        lines.append(f"- No exported artifact is within the accuracy budget ({budget.describe()}) on this machine.")
    if mobile:
        spec = specs[mobile.row.artifact]
        camera = spec.io is IOType.UINT8 and spec.argmax and spec.metadata
        lines.append(f"- **To embed in a mobile app**: `{mobile.row.artifact}` ({mobile.size_mb:.1f} MB; "
                     f"LiteRT p50 {mobile.p50:.2f} ms here, agreement {mobile.agreement:.2%}). "
                     + ("It takes camera bytes (uint8 RGB) and returns the class map, with labels embedded."
                        if camera else "See the README for its input and output."))
    else:
        lines.append("- No TFLite artifact is within the budget; embed none until the drift is fixed.")
    return [*lines, ""]


def _measured(bench: BenchResult, rows: list[ComparisonRow]) -> list[str]:
    lines = ["## Artifacts × runtimes (CPU, batch 1, sorted by p50)", ""]
    reference = drift.reference_of(bench)
    if reference.miou is not None:
        lines += [f"mIoU drop and agreement against the reference: {reference.source} (mIoU {reference.miou:.4f}).",
                  ""]
    headers = ("artifact", "runtime", "size MB", "p50 ms", "p90 ms", "fps", "mIoU", "mIoU drop pt", "agreement",
               "ran as", "budget")
    lines.append(align(headers, [r.cells() for r in rows], set(headers[2:9]), markdown=True))
    others = [r for r in bench.rows if not r.ok]
    if others:
        lines += ["", "Not measured:", ""]
        lines += [f"- {r.artifact} on {r.runtime}/{r.device}: {r.status} ({r.reason})" for r in others]
    return [*lines, ""]


def _validation(artifacts: list[ArtifactEntry]) -> list[str]:
    lines = ["## Export validation (held-out frames, vs Keras, right after writing)", ""]
    headers = ("artifact", "size MB", "convert s", "agreement", "mIoU", "Keras mIoU", "drop pt", "max abs Δlogit",
               "frames")
    lines.append(align(headers, [
        [a.path, f"{a.size_bytes / 1e6:.2f}", f"{a.conversion_seconds or 0:.1f}", f"{a.validation.pixel_agreement:.4f}",
         f"{a.validation.miou:.4f}", f"{a.validation.miou_reference:.4f}", f"{a.validation.miou_drop_points:.2f}",
         _fmt(a.validation.max_abs_error), str(a.validation.samples)]
        for a in artifacts if a.validation is not None], set(headers[1:]), markdown=True))
    lines.append("")
    kept_float = fallback_lines(artifacts)
    return [*lines, *kept_float, ""] if kept_float else lines


def _budgets(run: RunDir, options, artifacts: list[ArtifactEntry]) -> list[str]:
    """The trained model against the demo's bar; the full-int8 and float-head TFLite files against the budget."""
    budget: Budget = options.budget
    best = max(run.history(), key=lambda r: r["val_miou"], default=None)
    rows = []
    if best:
        rows.append(_budget_row("trained model: pixel accuracy (held-out)", f"≥ {options.target_pixel_accuracy}",
                                best["val_pixel_accuracy"],
                                best["val_pixel_accuracy"] >= options.target_pixel_accuracy))
        rows.append(_budget_row("trained model: mIoU (held-out)", f"≥ {options.target_miou}", best["val_miou"],
                                best["val_miou"] >= options.target_miou))
    by_path = {a.path: a for a in artifacts}
    for label, name in (("int8 TFLite (full integer)", ExportSpec("tflite", "int8").file_name),
                        ("int8 TFLite (float head)", ExportSpec("tflite", "int8", float_scope=HEAD).file_name)):
        int8 = by_path.get(name)
        if int8 is None or int8.validation is None:
            continue
        v = int8.validation
        if budget.max_miou_drop is not None:
            rows.append(_budget_row(f"{label}: mIoU drop (points)", f"≤ {budget.max_miou_drop:g}",
                                    v.miou_drop_points, budget.miou_drop_ok(v.miou_drop_points), ".2f"))
        if budget.min_agreement is not None:
            rows.append(_budget_row(f"{label}: pixel agreement", f"≥ {budget.min_agreement}",
                                    v.pixel_agreement, budget.agreement_ok(v.pixel_agreement)))
    return ["## Budgets", "", align(("budget", "target", "measured", ""), rows, markdown=True), ""]


def _training(config: dict, train_state: dict) -> list[str]:
    if config.get("source_model"):
        return ["## Model", "", f"Supplied, not trained here: `{config['source_model']}`, "
                f"{config['parameters']:,} parameters, input {config['input_size'][0]}x{config['input_size'][1]}, "
                f"{config['n_classes']} classes.", ""]
    return ["## Training", "", f"{config['parameters']:,} parameters, {config['n_train']} training / "
            f"{config['n_val']} validation frames, {config['epochs']} epochs, batch {config['batch_size']}, "
            f"Adam {config['learning_rate']:g}; best epoch {train_state.get('best_epoch', '?')}; "
            f"{train_state.get('images_per_second', 0):.1f} training images/s.", "",
            "![training curves](training_curves.png)", ""]


def _plots(plots: list[Path]) -> list[str]:
    titles = {"latency_vs_miou": "Latency vs mIoU", "per_class_iou": "Per-class IoU", "drift": "Drift picture"}
    lines = ["## Plots", ""]
    for path in plots:
        title = next((t for k, t in titles.items() if k in Path(path).stem), Path(path).stem)
        lines += [f"### {title}", "", f"![{title}](plots/{Path(path).name})", ""]
    return lines


def _environment(env: dict) -> list[str]:
    return ["## Environment", "", f"- CPU: {env.get('cpu')} ({env.get('cores')} cores; flags: "
            f"{', '.join(env.get('cpu_flags', [])) or '-'}; int8 dot product: {env.get('int8_dot_product', '-')})",
            f"- OS: {env.get('os')}, Python {env.get('python')}",
            "- Runtimes: " + ", ".join(f"{k} {v}" for k, v in env.get("runtime_versions", {}).items()),
            f"- Benchmarked {env.get('timestamp')}", ""]


def write_report(run: RunDir, options, stage_seconds: dict[str, float], state: dict, skipped=()) -> Path:
    """Write report.md (and its plots under RUN_DIR/plots) from the run folder's files."""
    from exporter.contracts.bench_json import load_bench
    from exporter.contracts.evaldata import load_eval
    from exporter.figures.bench import write_plots

    bench = load_bench(run.bench_dir / "bench.json")
    artifacts = run.current_artifacts()
    evaldata = load_eval(run.eval_path)
    rows = comparison_rows(bench, options.budget)
    plots = write_plots(bench, run.plots_dir, run.class_names(), evaldata.images, evaldata.labels,
                        evaldata.reference_map, maps_root=run.bench_dir, max_miou_drop=options.budget.max_miou_drop,
                        ignore_index=evaldata.ignore_index)
    lines = [f"# unet-export report: {run.path.name}", "",
             *_recommendation(rows, artifacts, options.budget), *_measured(bench, rows), *_validation(artifacts),
             *_budgets(run, options, artifacts), *_training(run.config(), state["stages"].get("train", {})),
             *_plots(plots), *_environment(bench.environment),
             "## Stage times", "", align(("stage", "seconds", "measured in"),
                                         stage_rows(stage_seconds, state, skipped), {"seconds"}, markdown=True), ""]
    return write_text_atomic(run.report, "\n".join(lines))


def fallback_lines(artifacts) -> list[str]:
    """One line for each artifact made by --auto-fallback: the layers it keeps float (or in int16), and why."""
    return [f"- `{a.path}` keeps {', '.join(a.fallback.float_layers) or 'no layer'} in {a.fallback.precision}: "
            f"{a.fallback.reason}." for a in artifacts if a.fallback]


def _budget_row(name: str, target: str, value: float, ok: bool, spec: str = ".4f") -> list[str]:
    return [name, target, f"{value:{spec}}", "✓ met" if ok else "✗ missed"]
