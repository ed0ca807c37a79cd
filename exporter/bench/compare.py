"""Side-by-side comparison of several unet-bench runs (devices, machines, versions) against one baseline row.

Rows pair by what a user means: the same artifact on the same runtime and device. Runs rarely use the same
thread counts and batch sizes (a Pi at 1 thread and batch 1,4 against a laptop at 2 threads), so each run's
cell is its fastest configuration per frame (p50 of a call / batch size), and the cell says which
threads × batch that was. Keys that only some runs measured are listed as having no partner.

Device side: numpy + click + the standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from exporter.bench.tables import fmt_ms, fmt_num, is_emulated
from exporter.contracts.bench_json import BenchResult, BenchRow
from exporter.errors import UserError
from exporter.text_table import align

MAX_LISTED_KEYS = 12


def per_frame_ms(row: BenchRow) -> float | None:
    """Median milliseconds per frame: a call's p50 divided by its batch size (None if not measured)."""
    p50 = row.p50 if row.ok else None
    return None if p50 is None else p50 / (row.batch_size or 1)


def config_text(row: BenchRow) -> str:
    """'2t×4b': the threads and batch size a row ran with ('-' for an unset part)."""
    threads = "-" if row.threads is None else str(row.threads)
    batch = "-" if row.batch_size is None else str(row.batch_size)
    return f"{threads}t×{batch}b"


@dataclass
class Comparison:
    """What ``compare`` renders: run labels, (artifact, runtime, device) keys, each run's chosen row, ratios."""

    labels: list[str]
    keys: list[tuple[str, str, str]]          # (artifact, runtime, device), first-seen order
    cells: dict[tuple[str, tuple], BenchRow]  # (label, key) → the run's fastest ok row per frame (or a not-ok row)
    configs: dict[tuple[str, tuple], int]     # (label, key) → how many ok configurations the run measured
    baseline_label: str
    baseline_row: BenchRow
    baseline_ms: float                        # per frame
    ratios: dict[tuple[str, tuple], float] = field(default_factory=dict)  # (label, key) → ms/frame ÷ baseline's
    unpaired: dict[str, list[tuple]] = field(default_factory=dict)        # label → keys only that run measured ok
    emulated: set[str] = field(default_factory=set)  # runs under user-mode emulation: accuracy only, no latency

    @property
    def baseline_key(self) -> tuple[str, str, str]:
        return key_of(self.baseline_row)


def key_of(row: BenchRow) -> tuple[str, str, str]:
    return (row.artifact, str(row.runtime), str(row.device))


def short_key(key: tuple) -> str:
    """'artifact/runtime/device' (the form ``--baseline`` takes)."""
    return "/".join(str(part) for part in key[:3])


def fmt_ratio(ratio: float | None) -> str:
    """'0.45x'; three decimals below 0.1 so that very fast rows keep a digit."""
    if ratio is None:
        return "-"
    return f"{ratio:.3f}x" if ratio < 0.1 else f"{ratio:.2f}x"


def _labels(benches: list[tuple[str, BenchResult]]) -> list[str]:
    labels: list[str] = []
    for name, bench in benches:
        label = bench.label or name
        candidate, n = label, 2
        while candidate in labels:
            candidate, n = f"{label}#{n}", n + 1
        labels.append(candidate)
    return labels


def _key_list(keys: list[tuple]) -> str:
    names = list(dict.fromkeys(short_key(k) for k in keys))
    shown = ", ".join(names[:MAX_LISTED_KEYS])
    return shown + (f", ... ({len(names) - MAX_LISTED_KEYS} more)" if len(names) > MAX_LISTED_KEYS else "")


def _fastest(rows: list[BenchRow]) -> BenchRow | None:
    measured = [r for r in rows if per_frame_ms(r) is not None]
    return min(measured, key=per_frame_ms) if measured else None


def _find_baseline(baseline: str | None, labels: list[str], by_run: dict, keys: list[tuple],
                   emulated: set[str] = frozenset()) -> tuple[str, BenchRow]:
    if baseline is None:  # the first measured key of the first run with any ok row, a measured run before an emulated
        for label in sorted(labels, key=lambda label: label in emulated):
            for key in keys:
                row = _fastest(by_run[label].get(key, []))
                if row is not None:
                    return label, row
        raise UserError("no run has an ok row with a p50 latency to use as the baseline")

    text = baseline.strip()
    run_labels = labels
    if ":" in text and text.split(":", 1)[0] in labels:  # "LABEL:" picks the run the baseline is taken from
        prefix, text = text.split(":", 1)
        run_labels = [prefix]
    parts = text.split("/")
    if not 3 <= len(parts) <= 5 or tuple(parts[:3]) not in {tuple(map(str, k)) for k in keys}:
        raise UserError(f"unknown baseline {baseline!r}: expected artifact/runtime/device[/threads[/batch]], "
                        f"one of: {_key_list(keys)}")
    key = next(k for k in keys if tuple(map(str, k)) == tuple(parts[:3]))
    for label in sorted(run_labels, key=lambda label: label in emulated):  # a measured run's row first
        rows = [r for r in by_run[label].get(key, [])
                if [str(v) for v in (r.threads, r.batch_size)][: len(parts) - 3] == parts[3:]]
        row = _fastest(rows)
        if row is not None:
            return label, row
    raise UserError(f"baseline {baseline!r} has no ok row with a p50 latency in "
                    f"{'run ' + run_labels[0] if len(run_labels) == 1 else 'any run'}")


def comparison(benches: list[tuple[str, BenchResult]], baseline: str | None = None) -> Comparison:
    """Pair rows across runs by (artifact, runtime, device) and compute per-frame ratios against one baseline.

    ``benches``: (name, bench) pairs; a run is labelled ``environment.label`` or else ``name`` (repeats get
    ``#2``...). ``baseline``: ``artifact/runtime/device`` (optionally ``/threads/batch`` to pick one
    configuration, optionally prefixed ``LABEL:`` to take it from that run; else the first run holding it
    ok); None = the first ok row of the first run. Ratio = ms per frame / the baseline's, < 1 is faster.
    Skipped rows (a runtime not installed there) are not part of the comparison.
    """
    if not benches:
        raise UserError("nothing to compare: give at least one bench result file")
    labels = _labels(benches)
    keys: list[tuple] = []
    by_run: dict[str, dict[tuple, list[BenchRow]]] = {}
    for label, (_, bench) in zip(labels, benches, strict=True):
        rows_by_key: dict[tuple, list[BenchRow]] = {}
        for row in bench.rows:
            if row.status == "skipped":
                continue
            key = key_of(row)
            if key not in keys:
                keys.append(key)
            rows_by_key.setdefault(key, []).append(row)
        by_run[label] = rows_by_key
    emulated = {label for label, (_, bench) in zip(labels, benches, strict=True) if is_emulated(bench.environment)}
    base_label, base_row = _find_baseline(baseline, labels, by_run, keys, emulated)
    base_ms = per_frame_ms(base_row)
    cells: dict[tuple[str, tuple], BenchRow] = {}
    configs: dict[tuple[str, tuple], int] = {}
    for label in labels:
        for key, rows in by_run[label].items():
            chosen = base_row if (label, key) == (base_label, key_of(base_row)) else _fastest(rows)
            cells[(label, key)] = chosen or rows[0]  # no ok row: show the first row's status
            configs[(label, key)] = sum(1 for r in rows if per_frame_ms(r) is not None)
    result = Comparison(labels, keys, cells, configs, base_label, base_row, base_ms, emulated=emulated)
    for (label, key), row in cells.items():
        ms = per_frame_ms(row)
        if ms is not None and base_ms > 0 and label not in emulated and base_label not in emulated:
            result.ratios[(label, key)] = ms / base_ms
    if len(labels) > 1:
        measured = {label: {k for k in keys if configs.get((label, k))} for label in labels}
        for label in labels:
            others = set().union(*(measured[other] for other in labels if other != label))
            alone = [k for k in keys if k in measured[label] and k not in others]
            if alone:
                result.unpaired[label] = alone
    return result


def render(result: Comparison) -> str:
    """The comparison as an aligned GitHub Markdown table (readable in a terminal too)."""
    headers = ["artifact", "runtime", "device"]
    for label in result.labels:
        headers += [f"{label} ms/frame", f"{label} threads×batch", f"{label} mIoU", f"{label} vs baseline"]
    right = set(headers[3:])
    rows = []
    for key in result.keys:
        cells = list(key)
        for label in result.labels:
            row = result.cells.get((label, key))
            if row is None:
                cells += ["-", "-", "-", "-"]
            elif not row.ok:
                cells += [row.status, config_text(row), "-", "-"]
            else:
                config = config_text(row)
                if result.configs.get((label, key), 0) > 1:
                    config += f" (best of {result.configs[(label, key)]})"
                ms = "emulated" if label in result.emulated else fmt_ms(per_frame_ms(row))
                cells += [ms, config, fmt_num(row.score("miou"), 4), fmt_ratio(result.ratios.get((label, key)))]
        rows.append(cells)
    base = result.baseline_row
    intro = [
        f"Runs: {', '.join(result.labels)}",
        f"Baseline: {short_key(key_of(base))} ({config_text(base)}) in run '{result.baseline_label}' "
        f"({'emulated' if result.baseline_label in result.emulated else fmt_ms(result.baseline_ms) + ' ms/frame'}).",
        "Rows pair by artifact × runtime × device; each run shows its fastest threads × batch per frame "
        "(ms/frame = p50 of a call ÷ batch size); vs baseline < 1 is faster.",
        *([f"Emulated (no latency: the emulator's time describes no device): {', '.join(sorted(result.emulated))}."]
          if result.emulated else []),
        "",
    ]
    outro = []
    if result.unpaired:
        outro.append("")
        for label, keys in result.unpaired.items():
            outro.append(f"No partner in the other run{'s' if len(result.labels) > 2 else ''}: "
                         f"{len(keys)} row{'s' if len(keys) != 1 else ''} only in '{label}': {_key_list(keys)}")
    return "\n".join(intro) + align(headers, rows, right, markdown=True) + "\n" + \
        ("\n".join(outro) + "\n" if outro else "")


def compare(benches: list[tuple[str, BenchResult]], baseline: str | None = None) -> str:
    """Side-by-side table of ms/frame, configuration, mIoU and ratio vs the baseline; see ``comparison``."""
    return render(comparison(benches, baseline))
