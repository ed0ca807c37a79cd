"""RUN_DIR/report.md: what the journey measured, and which artifact to use, derived from the numbers."""

from __future__ import annotations

from pathlib import Path

from exporter.budget import Budget
from exporter.contracts.bench_json import BenchResult
from exporter.contracts.rundir import RunDir
from exporter.fileio import write_text_atomic
from exporter.text_table import align

MOBILE_PREFERENCE = ("unet_int8_floathead_uint8io_argmax_b1.tflite", "unet_int8_floathead_uint8io_argmax.tflite",
                     "unet_int8_uint8io_argmax.tflite", "unet_int8_floathead_uint8io.tflite", "unet_int8_uint8io.tflite",
                     "unet_int8_floathead.tflite", "unet_int8.tflite", "unet_fp16_b1.tflite", "unet_fp16.tflite",
                     "unet_fp32.tflite")


def _fmt(value, spec=".4f", missing="-"):
    return missing if value is None else format(value, spec)


def comparison_rows(bench: BenchResult, budget: Budget) -> list[dict]:
    """Ok CPU rows at the smallest batch, with mIoU drop vs the Keras row and the budget verdict."""
    rows = [r for r in bench.rows if r.ok and r.device == "cpu" and r.p50 is not None]
    if not rows:
        return []
    batch = min(r.batch_size or 1 for r in rows)
    rows = [r for r in rows if (r.batch_size or 1) == batch]
    reference = next((r for r in rows if r.format == "keras"), None)
    # Without a Keras row (a device without TensorFlow), drift is measured from the stored reference outputs.
    ref_miou = reference.score("miou") if reference else bench.reference_miou
    table = []
    for r in rows:
        miou = r.score("miou")
        drop = None if ref_miou is None or miou is None else 100.0 * (ref_miou - miou)
        agreement = r.score("agreement_vs_reference")
        table.append({"artifact": r.artifact, "runtime": r.runtime, "precision": r.precision,
                      "size_mb": (r.size_bytes or 0) / 1e6, "p50": r.p50, "p90": r.stat("p90"),
                      "fps": r.throughput_fps, "miou": miou, "drop": drop, "agreement": agreement,
                      "within": drop is not None and agreement is not None and budget.within(drop, agreement),
                      "precision_ran": r.inference_precision})
    return sorted(table, key=lambda row: row["p50"])


def recommend(rows: list[dict]) -> dict[str, dict | None]:
    """Fastest artifact within the accuracy budget; the one to embed in a mobile app."""
    within = [r for r in rows if r["within"] and r["runtime"] != "keras"]
    fastest = min(within, key=lambda r: r["p50"], default=None)
    mobile = None
    for name in MOBILE_PREFERENCE:
        candidates = [r for r in within if r["artifact"] == name and r["runtime"] == "litert"]
        if candidates:
            mobile = candidates[0]
            break
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


def write_report(run: RunDir, options, stage_seconds: dict[str, float], state: dict, skipped=()) -> Path:
    """Write report.md (and its plots under RUN_DIR/plots) from the run folder's files."""
    from exporter.contracts.bench_json import load_bench
    from exporter.contracts.evaldata import load_eval
    from exporter.figures.bench import write_plots

    bench = load_bench(run.bench_dir / "bench.json")
    config = run.config()
    artifacts = run.current_artifacts()
    evaldata = load_eval(run.eval_path)
    budget: Budget = options.budget
    rows = comparison_rows(bench, budget)
    keras = next((r for r in rows if r["runtime"] == "keras"), None)
    plots = write_plots(bench, run.plots_dir, run.class_names(), evaldata.images, evaldata.labels,
                        evaldata.reference_map, maps_root=run.bench_dir,
                        reference_miou=keras["miou"] if keras else bench.reference_miou,
                        max_miou_drop=budget.max_miou_drop)
    picks = recommend(rows)
    train_state = state["stages"].get("train", {})
    lines = [f"# unet-export report: {run.path.name}", ""]

    lines += ["## Recommendation", ""]
    fastest, mobile = picks["fastest"], picks["mobile"]
    if fastest:
        lines.append(f"- **Fastest within the accuracy budget** ({budget.describe()}) on this machine: "
                     f"`{fastest['artifact']}` on **{fastest['runtime']}**: p50 {fastest['p50']:.2f} ms, "
                     f"{fastest['fps']:.1f} frames/s, mIoU drop {fastest['drop']:.2f} pt, agreement "
                     f"{fastest['agreement']:.2%}.")
    else:
        lines.append(f"- No exported artifact is within the accuracy budget ({budget.describe()}) on this machine.")
    if mobile:
        lines.append(f"- **To embed in a mobile app**: `{mobile['artifact']}` ({mobile['size_mb']:.1f} MB; "
                     f"LiteRT p50 {mobile['p50']:.2f} ms here, agreement {mobile['agreement']:.2%}). "
                     + ("It takes camera bytes (uint8 RGB) and returns the class map, with labels embedded."
                        if "uint8io_argmax" in mobile["artifact"] else "See the README for its input and output."))
    else:
        lines.append("- No TFLite artifact is within the budget; embed none until the drift is fixed.")
    lines.append("")

    lines += ["## Artifacts × runtimes (CPU, batch 1, sorted by p50)", ""]
    headers = ("artifact", "runtime", "size MB", "p50 ms", "p90 ms", "fps", "mIoU", "mIoU drop pt", "agreement",
               "ran as", "budget")
    lines.append(align(headers, [
        [r["artifact"], r["runtime"], f"{r['size_mb']:.2f}", f"{r['p50']:.2f}", _fmt(r["p90"], ".2f"),
         _fmt(r["fps"], ".1f"), _fmt(r["miou"]), _fmt(r["drop"], ".2f"), _fmt(r["agreement"]),
         r["precision_ran"] or "-", "✓" if r["within"] else ("ref" if r["runtime"] == "keras" else "✗")]
        for r in rows], set(headers[2:9]), markdown=True))
    others = [r for r in bench.rows if not r.ok]
    if others:
        lines += ["", "Not measured:", ""]
        lines += [f"- {r.artifact} on {r.runtime}/{r.device}: {r.status} ({r.reason})" for r in others]
    lines.append("")

    lines += ["## Export validation (held-out frames, vs Keras, right after writing)", ""]
    headers = ("artifact", "size MB", "convert s", "agreement", "mIoU", "Keras mIoU", "drop pt", "max abs Δlogit",
               "frames")
    lines.append(align(headers, [
        [a.path, f"{a.size_bytes / 1e6:.2f}", f"{a.conversion_seconds or 0:.1f}", f"{a.validation.pixel_agreement:.4f}",
         f"{a.validation.miou:.4f}", f"{a.validation.miou_reference:.4f}", f"{a.validation.miou_drop_points:.2f}",
         _fmt(a.validation.max_abs_error), str(a.validation.samples)]
        for a in artifacts if a.validation is not None], set(headers[1:]), markdown=True))
    lines.append("")
    kept_float = fallback_lines(artifacts)
    lines += [*kept_float, ""] if kept_float else []

    best = max(run.history(), key=lambda r: r["val_miou"], default=None)
    by_path = {a.path: a for a in artifacts}
    budget_rows = []
    if best:
        budget_rows.append(_budget_row("trained model: pixel accuracy (held-out)", f"≥ {options.target_pixel_accuracy}",
                                       best["val_pixel_accuracy"],
                                       best["val_pixel_accuracy"] >= options.target_pixel_accuracy))
        budget_rows.append(_budget_row("trained model: mIoU (held-out)", f"≥ {options.target_miou}", best["val_miou"],
                                       best["val_miou"] >= options.target_miou))
    for label, name in (("int8 TFLite (full integer)", "unet_int8.tflite"),
                        ("int8 TFLite (float head)", "unet_int8_floathead.tflite")):
        int8 = by_path.get(name)
        if int8 is None or int8.validation is None:
            continue
        v = int8.validation
        if budget.max_miou_drop is not None:
            budget_rows.append(_budget_row(f"{label}: mIoU drop (points)", f"≤ {budget.max_miou_drop:g}",
                                           v.miou_drop_points, budget.miou_drop_ok(v.miou_drop_points), ".2f"))
        if budget.min_agreement is not None:
            budget_rows.append(_budget_row(f"{label}: pixel agreement", f"≥ {budget.min_agreement}",
                                           v.pixel_agreement, budget.agreement_ok(v.pixel_agreement)))
    lines += ["## Budgets", "", align(("budget", "target", "measured", ""), budget_rows, markdown=True), ""]

    lines += ["## Training", "", f"{config['parameters']:,} parameters, {config['n_train']} training / "
              f"{config['n_val']} validation frames, {config['epochs']} epochs, batch {config['batch_size']}, "
              f"Adam {config['learning_rate']:g}; best epoch {train_state.get('best_epoch', '?')}; "
              f"{train_state.get('images_per_second', 0):.1f} training images/s.", "",
              "![training curves](training_curves.png)", ""]
    titles = {"latency_vs_miou": "Latency vs mIoU", "per_class_iou": "Per-class IoU", "drift": "Drift picture"}
    lines += ["## Plots", ""]
    for path in plots:
        title = next((t for k, t in titles.items() if k in Path(path).stem), Path(path).stem)
        lines += [f"### {title}", "", f"![{title}](plots/{Path(path).name})", ""]

    env = bench.environment
    lines += ["## Environment", "", f"- CPU: {env.get('cpu')} ({env.get('cores')} cores; flags: "
              f"{', '.join(env.get('cpu_flags', [])) or '-'}; int8 dot product: {env.get('int8_dot_product', '-')})",
              f"- OS: {env.get('os')}, Python {env.get('python')}",
              "- Runtimes: " + ", ".join(f"{k} {v}" for k, v in env.get("runtime_versions", {}).items()),
              f"- Benchmarked {env.get('timestamp')}", ""]
    lines += ["## Stage times", "",
              align(("stage", "seconds", "measured in"), stage_rows(stage_seconds, state, skipped), {"seconds"},
                    markdown=True), ""]
    return write_text_atomic(run.report, "\n".join(lines))


def fallback_lines(artifacts) -> list[str]:
    """One line for each artifact made by --auto-fallback: the layers it keeps float, and why."""
    return [f"- `{a.path}` keeps {', '.join(a.fallback.get('float_layers') or []) or 'no layer'} in float: "
            f"{a.fallback.get('reason', '')}." for a in artifacts if a.fallback]


def _budget_row(name: str, target: str, value: float, ok: bool, spec: str = ".4f") -> list[str]:
    return [name, target, f"{value:{spec}}", "✓ met" if ok else "✗ missed"]
