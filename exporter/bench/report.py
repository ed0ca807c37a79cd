"""Turn a unet-bench result (JSON contract in DESIGN.md) into a terminal table, CSV, Markdown; load/validate it.

Device side: numpy + click + the standard library only.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path

from exporter.errors import UserError
from exporter.fileio import write_json_atomic, write_text_atomic

LATENCY_FIELDS = ("p50", "p90", "p99", "mean", "std", "min", "max", "n")
ACCURACY_FIELDS = ("pixel_accuracy", "miou", "agreement_vs_reference", "max_abs_logit_error")
SCALAR_FIELDS = (
    "artifact", "format", "precision", "runtime", "runtime_version", "device", "threads", "batch_size",
    "status", "reason", "size_bytes", "cold_start_ms", "throughput_fps", "peak_rss_mb", "inference_precision",
)
CSV_FIELDS = (
    *SCALAR_FIELDS,
    *(f"latency_{name}_ms" if name != "n" else "latency_n" for name in LATENCY_FIELDS),
    *ACCURACY_FIELDS, "per_class_iou", "providers", "preview_maps",
)
REASON_WIDTH = 60


# ---------------------------------------------------------------- small helpers shared with compare/plots


def is_number(value) -> bool:
    """A finite int/float (not bool, not NaN/inf)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def latency(row: dict, stat: str = "p50") -> float | None:
    """``row["latency_ms"][stat]`` if it is a finite number, else None."""
    value = (row.get("latency_ms") or {}).get(stat)
    return float(value) if is_number(value) else None


def accuracy(row: dict, field: str) -> float | None:
    """``row["accuracy"][field]`` if it is a finite number, else None."""
    value = (row.get("accuracy") or {}).get(field)
    return float(value) if is_number(value) else None


def is_ok(row: dict) -> bool:
    return row.get("status") == "ok"


def row_key(row: dict) -> tuple:
    """(artifact, runtime, device, threads, batch_size): one measured configuration."""
    return (row.get("artifact"), row.get("runtime"), row.get("device"), row.get("threads"), row.get("batch_size"))


def reference_row(results: list[dict]) -> dict | None:
    """The reference: the first ok Keras fp32 row, else the first ok Keras row, else None."""
    keras = [r for r in results if is_ok(r) and r.get("format") == "keras"]
    fp32 = [r for r in keras if r.get("precision") == "fp32"]
    return (fp32 or keras or [None])[0]


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
    return f"{value:.{digits}f}" if is_number(value) else "-"


def fmt_pct(value) -> str:
    return f"{100 * value:.2f}%" if is_number(value) else "-"


def fmt_int(value) -> str:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else "-"


def status_text(row: dict) -> str:
    status = str(row.get("status") or "-")
    if status == "ok":
        return "ok"
    reason = shorten(row.get("reason"))
    return f"{status}: {reason}" if reason else status


TABLE_HEADERS = ("artifact", "runtime", "device", "threads", "batch", "size MB", "p50 ms", "p90 ms", "fps",
                 "mIoU", "agreement", "status")
TABLE_RIGHT = {"threads", "batch", "size MB", "p50 ms", "p90 ms", "fps", "mIoU", "agreement"}


def table_cells(row: dict) -> list[str]:
    size = row.get("size_bytes")
    return [
        str(row.get("artifact") or "-"),
        str(row.get("runtime") or "-"),
        str(row.get("device") or "-"),
        fmt_int(row.get("threads")),
        fmt_int(row.get("batch_size")),
        f"{size / 1e6:.2f}" if is_number(size) else "-",
        fmt_ms(latency(row, "p50")),
        fmt_ms(latency(row, "p90")),
        fmt_num(row.get("throughput_fps"), 1),
        fmt_num(accuracy(row, "miou"), 4),
        fmt_pct(accuracy(row, "agreement_vs_reference")),
        status_text(row),
    ]


def align(headers: list[str] | tuple[str, ...], rows: list[list[str]], right: set[str],
          markdown: bool = False) -> str:
    """Columns padded to a common width; as a GitHub table (still aligned) when ``markdown``."""
    if markdown:
        rows = [[cell.replace("|", "\\|") for cell in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    widths = [max(w, 3) for w in widths] if markdown else widths

    def line(cells):
        padded = [c.rjust(w) if h in right else c.ljust(w) for c, w, h in zip(cells, widths, headers, strict=True)]
        return ("| " + " | ".join(padded) + " |") if markdown else "  ".join(padded).rstrip()

    if markdown:
        rule = "|" + "|".join(("-" * (w + 1) + ":") if h in right else ("-" * (w + 2))
                              for w, h in zip(widths, headers, strict=True)) + "|"
    else:
        rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


# ---------------------------------------------------------------- public API


def terminal_table(results: list[dict]) -> str:
    """One aligned line per result row (after a header and a rule); '-' where a value is missing."""
    return align(TABLE_HEADERS, [table_cells(r) for r in results], TABLE_RIGHT)


def _csv_value(value) -> str | int | float:
    if value is None:
        return ""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else str(value)
    if isinstance(value, list | dict | tuple):
        return json.dumps(value)
    return value


def to_csv(results: list[dict]) -> str:
    """Flat CSV: scalar fields, ``latency_<stat>_ms``, the accuracy fields, per_class_iou as a JSON string.

    Empty cells for missing values; any extra top-level scalar keys follow the standard columns.
    """
    extra = []
    for row in results:
        for key, value in row.items():
            if (key not in CSV_FIELDS and key not in ("latency_ms", "accuracy") and key not in extra
                    and not isinstance(value, list | dict)):
                extra.append(key)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[*CSV_FIELDS, *extra], lineterminator="\n")
    writer.writeheader()
    for row in results:
        flat = {key: row.get(key) for key in (*SCALAR_FIELDS, *extra, "providers", "preview_maps")}
        lat = row.get("latency_ms") or {}
        for name in LATENCY_FIELDS:
            flat["latency_n" if name == "n" else f"latency_{name}_ms"] = lat.get(name)
        acc = row.get("accuracy") or {}
        for name in (*ACCURACY_FIELDS, "per_class_iou"):
            flat[name] = acc.get(name)
        writer.writerow({key: _csv_value(value) for key, value in flat.items()})
    return buffer.getvalue()


def environment_lines(environment: dict) -> list[str]:
    """'- key: value' lines describing where the bench ran."""
    env = environment or {}
    lines = []
    for key, title in (("label", "label"), ("host", "host"), ("cpu", "CPU"), ("cores", "cores"),
                       ("os", "OS"), ("python", "Python"), ("timestamp", "timestamp")):
        if env.get(key) not in (None, ""):
            lines.append(f"- {title}: {env[key]}")
    flags = env.get("cpu_flags") or []
    if flags:
        lines.append(f"- CPU flags: {shorten(' '.join(map(str, flags)), 120)}")
    versions = env.get("runtime_versions") or {}
    if versions:
        lines.append("- runtimes: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    return lines


def to_markdown(bench: dict, title: str = "unet-bench results") -> str:
    """Environment summary, the results as a GitHub table, then every skipped/failed row with its reason."""
    results = bench.get("results") or []
    parts = [f"# {title}", "", "## Environment", "", *(environment_lines(bench.get("environment")) or ["- (none)"])]
    reference = reference_row(results)
    if reference is not None:
        parts.append(f"- reference (agreement is measured against): {reference.get('artifact')} "
                     f"on {reference.get('runtime')}/{reference.get('device')}")
    stored = bench.get("reference") or {}
    if is_number(stored.get("miou")):
        parts.append(f"- Keras reference outputs stored with the {stored.get('frames', '?')} evaluation frames: "
                     f"mIoU {stored['miou']:.4f}, pixel accuracy {fmt_num(stored.get('pixel_accuracy'), 4)}")
    parts += ["", "## Results", ""]
    rows = []
    for r in results:
        cells = table_cells(r)
        cells[-1] = str(r.get("status") or "-")  # reasons go to the list below, in full
        rows.append(cells)
    parts.append(align(TABLE_HEADERS, rows, TABLE_RIGHT, markdown=True) if results else "(no results)")
    not_ok = [r for r in results if not is_ok(r)]
    if not_ok:
        parts += ["", "## Skipped and failed", ""]
        for r in not_ok:
            where = f"{r.get('artifact')} on {r.get('runtime')}/{r.get('device')}"
            threads = r.get("threads")
            if threads is not None:
                where += f", {threads} threads"
            reason = shorten(" ".join(str(r.get("reason") or "no reason given").split()), 400)
            parts.append(f"- **{r.get('status')}** {where}: {reason}")
    return "\n".join(parts) + "\n"


def write_reports(bench: dict, json_path=None, csv_path=None, markdown_path=None) -> list[Path]:
    """Write the requested reports atomically; return the paths written (in the order json, csv, markdown)."""
    written = []
    if json_path is not None:
        written.append(write_json_atomic(json_path, bench))
    if csv_path is not None:
        written.append(write_text_atomic(csv_path, to_csv(bench.get("results") or [])))
    if markdown_path is not None:
        written.append(write_text_atomic(markdown_path, to_markdown(bench)))
    return [Path(p) for p in written]


def load_bench(path: str | os.PathLike) -> dict:
    """Read and check a bench result file; UserError naming the file for anything else."""
    def bad(why: str) -> UserError:
        return UserError(f"{path}: not a unet-bench result file ({why})")

    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise bad("no such file") from None
    except IsADirectoryError:
        raise bad("is a directory") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise bad(f"cannot read it: {exc.__class__.__name__}") from None
    try:
        bench = json.loads(text)
    except json.JSONDecodeError as exc:
        raise bad(f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    if not isinstance(bench, dict):
        raise bad(f"top level is a {type(bench).__name__}, expected an object")
    if not isinstance(bench.get("environment"), dict):
        raise bad("no 'environment' object")
    if not isinstance(bench.get("results"), list):
        raise bad("no 'results' list")
    if not isinstance(bench.get("reference", {}), dict):
        raise bad("'reference' is not an object")
    for i, row in enumerate(bench["results"]):
        if not isinstance(row, dict) or "artifact" not in row or "status" not in row:
            raise bad(f"results[{i}] is not a result row with 'artifact' and 'status'")
    return bench
