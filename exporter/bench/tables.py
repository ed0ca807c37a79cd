"""A unet-bench result as a terminal table, CSV and Markdown (JSON: ``exporter.contracts.bench_json``).

Device side: numpy + click + the standard library only.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from exporter.contracts.bench_json import LATENCY_STATS, SCORE_FIELDS, BenchResult, BenchRow
from exporter.contracts.checks import finite
from exporter.drift import beyond_export, reference_of
from exporter.fileio import write_json_atomic, write_text_atomic
from exporter.text_table import align

SCALAR_FIELDS = (
    "artifact", "format", "precision", "runtime", "runtime_version", "device", "threads", "batch_size",
    "status", "reason", "size_bytes", "cold_start_ms", "throughput_fps", "peak_rss_mb", "inference_precision",
    "export_agreement", "fully_accelerated", "cpu_fallback_nodes",
)
CSV_FIELDS = (
    *SCALAR_FIELDS,
    *(f"latency_{name}_ms" if name != "n" else "latency_n" for name in LATENCY_STATS),
    *SCORE_FIELDS, "per_class_iou", "providers", "preview_maps",
)
REASON_WIDTH = 60
TABLE_HEADERS = ("artifact", "runtime", "device", "threads", "batch", "size MB", "p50 ms", "p90 ms", "fps",
                 "mIoU", "agreement", "status")
TABLE_RIGHT = {"threads", "batch", "size MB", "p50 ms", "p90 ms", "fps", "mIoU", "agreement"}


def shorten(text, width: int = REASON_WIDTH) -> str:
    """First line of ``text``, cut to ``width`` characters with '...'."""
    text = " ".join(str(text or "").strip().splitlines()[:1]) if text else ""
    return text if len(text) <= width else text[: max(width - 3, 1)].rstrip() + "..."


def fmt_ms(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def fmt_num(value, digits: int) -> str:
    return "-" if finite(value) is None else f"{value:.{digits}f}"


def fmt_pct(value) -> str:
    return "-" if finite(value) is None else f"{100 * value:.2f}%"


def fmt_int(value: int | None) -> str:
    return "-" if value is None else str(value)


def status_text(row: BenchRow) -> str:
    if row.ok:
        software = row.device == "gpu" and (row.browser or {}).get("software_rasterizer")
        return "ok (software GPU: SwiftShader)" if software else "ok"
    reason = shorten(row.reason)
    return f"{row.status}: {reason}" if reason else row.status


def table_cells(row: BenchRow) -> list[str]:
    return [
        row.artifact,
        row.runtime or "-",
        row.device or "-",
        fmt_int(row.threads),
        fmt_int(row.batch_size),
        "-" if row.size_bytes is None else f"{row.size_bytes / 1e6:.2f}",
        fmt_ms(row.stat("p50")),
        fmt_ms(row.stat("p90")),
        fmt_num(row.throughput_fps, 1),
        fmt_num(row.score("miou"), 4),
        fmt_pct(row.score("agreement_vs_reference")),
        status_text(row),
    ]


def budget_cells(verdict) -> list[str]:
    """The 'mIoU drop' and 'budget' cells of a judged row (``exporter.drift.Verdict`` or None)."""
    if verdict is None:
        return ["-", "-"]
    drop = "-" if verdict.miou_drop is None else f"{verdict.miou_drop:.2f}"
    return [drop, "within" if verdict.within else "OVER"]


def skipped_groups(rows: list[BenchRow]) -> list[tuple[str, str, int]]:
    """Skipped rows grouped by why: (runtime/device, reason, how many rows), first-seen order.

    A device with one runtime installed skips every artifact on each of the others: one line per missing
    runtime says it, not one row per artifact.
    """
    groups: dict[tuple[str, str], int] = {}
    for r in rows:
        if r.status == "skipped":
            key = (f"{r.runtime}/{r.device}", " ".join(str(r.reason or "no reason given").split()))
            groups[key] = groups.get(key, 0) + 1
    return [(where, reason, n) for (where, reason), n in groups.items()]


def skipped_lines(rows: list[BenchRow], width: int | None = REASON_WIDTH * 2) -> list[str]:
    """'skipped openvino/cpu (17 rows): not installed ...' for each group of skipped rows."""
    return [f"skipped {where} ({n} row{'s' if n != 1 else ''}): {shorten(reason, width) if width else reason}"
            for where, reason, n in skipped_groups(rows)]


LATENCY_HEADERS = ("p50 ms", "p90 ms", "fps")


def is_emulated(environment) -> bool:
    """Whether a bench ran under user-mode emulation (``environment.emulated``): its times are the emulator's."""
    return bool((environment or {}).get("emulated"))


def _measured_table(rows: list[BenchRow], verdicts: list | None, markdown: bool, emulated: bool = False) -> str:
    """The rows that ran or failed (skipped ones are said once per group elsewhere), with the budget columns
    when ``verdicts`` are given; the status cell holds the reason in a terminal, the status alone in Markdown.
    ``emulated``: the latency columns are left out (an emulator's milliseconds describe no device)."""
    headers, right = list(TABLE_HEADERS), set(TABLE_RIGHT)
    if verdicts is not None:
        headers, right = [*headers[:-1], "mIoU drop", "budget", headers[-1]], {*right, "mIoU drop"}
    keep = [i for i, h in enumerate(headers) if not (emulated and h in LATENCY_HEADERS)]
    body = []
    for i, r in enumerate(rows):
        if r.status == "skipped":
            continue
        cells = table_cells(r)
        if markdown:
            cells[-1] = r.status  # reasons go to the list below the table, in full
        cells = cells if verdicts is None else [*cells[:-1], *budget_cells(verdicts[i]), cells[-1]]
        body.append([cells[k] for k in keep])
    headers = [headers[k] for k in keep]
    return align(headers, body, right, markdown=markdown) if body else "(no rows measured)"


def terminal_table(rows: list[BenchRow], verdicts: list | None = None, environment=None) -> str:
    """One aligned line per measured or failed row (after a header and a rule); '-' where a value is missing.

    Skipped rows follow as one line per runtime/device and reason. ``verdicts`` (``drift.judge``, one per row)
    adds the mIoU drop and budget columns. ``environment`` (the bench's): an emulated run shows no latency, and
    drift notes name the CPU.
    """
    emulated = is_emulated(environment)
    return "\n".join([_measured_table(rows, verdicts, markdown=False, emulated=emulated), *skipped_lines(rows),
                      *(f"gpu: {line}" for line in device_lines(rows)),
                      *(f"drift: {note}" for note in drift_notes(rows, cpu_text(environment))),
                      *([f"emulated: {emulation_text(environment)}"] if emulated else [])])


def cpu_text(environment) -> str | None:
    """'Cortex-A72, neon int8 dot product': what a drift note names as the cause's CPU (None if unknown)."""
    env = environment or {}
    dot = env.get("int8_dot_product")
    if not dot:
        return None
    cpu = env.get("cpu")
    return f"{cpu}, {dot} int8 dot product" if cpu else f"{dot} int8 dot product"


def emulation_text(environment) -> str:
    env = environment or {}
    return (f"{env.get('emulation') or 'user-mode emulation'}; latency not shown (it is the emulator's); "
            "accuracy is the emulated CPU's kernels'")


def device_lines(rows: list[BenchRow]) -> list[str]:
    """One line per artifact × runtime that ran on a GPU: what ran it, at which precision, and whether every
    op stayed on the GPU ('3 of 61 nodes fell back to the CPU')."""
    seen, lines = set(), []
    for r in rows:
        if not r.ok or r.device != "gpu" or (r.artifact, r.runtime) in seen:
            continue
        seen.add((r.artifact, r.runtime))
        parts = [", ".join(r.providers or ()) or "provider not reported"]
        if r.inference_precision:
            parts.append(f"precision {r.inference_precision}")
        if r.cpu_fallback_nodes:
            parts.append(f"{r.cpu_fallback_nodes} node{'s' if r.cpu_fallback_nodes != 1 else ''} fell back to the CPU")
        elif r.fully_accelerated is not None:
            parts.append("fully accelerated" if r.fully_accelerated else "partly on the CPU")
        lines.append(f"{r.artifact} on {r.runtime}: {'; '.join(parts)}")
    return lines


def drift_notes(rows: list[BenchRow], cpu: str | None = None) -> list[str]:
    """One line for each row whose drift is far beyond the export-time validation of the same file; ``cpu``
    (``cpu_text``) names the CPU and its int8 dot product as the likely cause."""
    return [note for r in rows if (note := beyond_export(r, rows, cpu))]


def _csv_value(value) -> str | int | float:
    if value is None:
        return ""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else str(value)
    if isinstance(value, list | dict | tuple):
        return json.dumps(value)
    return value


def to_csv(rows: list[BenchRow]) -> str:
    """Flat CSV: scalar fields, ``latency_<stat>_ms``, the accuracy fields, per_class_iou as a JSON string.

    Empty cells for missing values; any extra top-level scalar keys follow the standard columns.
    """
    extra: list[str] = []
    for row in rows:
        extra += [k for k, v in row.extra.items() if k not in extra and not isinstance(v, list | dict)]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[*CSV_FIELDS, *extra], lineterminator="\n")
    writer.writeheader()
    for row in rows:
        data = row.to_dict()
        flat = {key: data.get(key) for key in (*SCALAR_FIELDS, *extra, "providers", "preview_maps")}
        latency = data["latency_ms"] or {}
        for name in LATENCY_STATS:
            flat["latency_n" if name == "n" else f"latency_{name}_ms"] = latency.get(name)
        accuracy = data["accuracy"] or {}
        for name in (*SCORE_FIELDS, "per_class_iou"):
            flat[name] = accuracy.get(name)
        writer.writerow({key: _csv_value(value) for key, value in flat.items()})
    return buffer.getvalue()


def environment_lines(environment) -> list[str]:
    """'- key: value' lines describing where the bench ran."""
    env = environment or {}
    lines = []
    for key, title in (("label", "label"), ("host", "host"), ("cpu", "CPU"), ("cores", "cores"),
                       ("int8_dot_product", "int8 dot product"), ("os", "OS"), ("python", "Python"),
                       ("timestamp", "timestamp")):
        if env.get(key) not in (None, ""):
            lines.append(f"- {title}: {env[key]}")
    if env.get("gpus"):
        lines.append(f"- GPU: {', '.join(map(str, env['gpus']))}")
    flags = env.get("cpu_flags") or []
    if flags:
        lines.append(f"- CPU flags: {shorten(' '.join(map(str, flags)), 120)}")
    if is_emulated(env):
        lines.append(f"- emulated: {emulation_text(env)}")
    versions = env.get("runtime_versions") or {}
    if versions:
        lines.append("- runtimes: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    web = env.get("web") or {}
    if web:
        packages = ", ".join(f"{k} {v}" for k, v in (web.get("packages") or {}).items())
        lines.append(f"- browser: {web.get('browser') or 'none found'} (Node.js {web.get('node')}; {packages})")
    return lines


def to_markdown(bench: BenchResult, title: str = "unet-bench results", verdicts: list | None = None) -> str:
    """Environment summary, the results as a GitHub table, then failed rows with their reasons and skipped groups."""
    rows = list(bench.rows)
    parts = [f"# {title}", "", "## Environment", "", *(environment_lines(bench.environment) or ["- (none)"])]
    reference = reference_of(bench)
    if reference.row is not None:
        parts.append(f"- Keras row: {reference.row.artifact} on {reference.row.runtime}/{reference.row.device}")
    stored = bench.reference or {}
    if bench.reference_miou is not None:
        parts.append(f"- reference (agreement and mIoU drop are measured against): {reference.source}: "
                     f"mIoU {reference.miou:.4f}, pixel accuracy {fmt_num(stored.get('pixel_accuracy'), 4)}")
    elif reference.miou is not None:
        parts.append(f"- reference (mIoU drop is measured against): {reference.source}: mIoU {reference.miou:.4f}")
    parts += ["", "## Results", ""]
    parts.append(_measured_table(rows, verdicts, markdown=True, emulated=is_emulated(bench.environment)))
    on_gpu = device_lines(rows)
    if on_gpu:
        parts += ["", "## What ran on the GPU", ""] + [f"- {line}" for line in on_gpu]
    notes = drift_notes(rows, cpu_text(bench.environment))
    if notes:
        parts += ["", "## Drift beyond the export-time validation", ""] + [f"- {note}" for note in notes]
    failed = [r for r in rows if r.status == "failed"]
    skipped = skipped_lines(rows, width=400)
    if failed or skipped:
        parts += ["", "## Skipped and failed", ""]
        for r in failed:
            where = f"{r.artifact} on {r.runtime}/{r.device}"
            if r.threads is not None:
                where += f", {r.threads} threads"
            reason = shorten(" ".join(str(r.reason or "no reason given").split()), 400)
            parts.append(f"- **failed** {where}: {reason}")
        parts += [f"- {line}" for line in skipped]
    return "\n".join(parts) + "\n"


def write_reports(bench: BenchResult, json_path=None, csv_path=None, markdown_path=None,
                  verdicts: list | None = None) -> list[Path]:
    """Write the requested reports atomically; return the paths written (in the order json, csv, markdown)."""
    written = []
    if json_path is not None:
        written.append(write_json_atomic(json_path, bench.to_dict()))
    if csv_path is not None:
        written.append(write_text_atomic(csv_path, to_csv(list(bench.rows))))
    if markdown_path is not None:
        written.append(write_text_atomic(markdown_path, to_markdown(bench, verdicts=verdicts)))
    return [Path(p) for p in written]
