"""Side-by-side comparison of several unet-bench runs (devices, machines, versions) against one baseline row.

Device side: numpy + click + the standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from exporter.bench.tables import fmt_ms, fmt_num
from exporter.contracts.bench_json import BenchResult, BenchRow
from exporter.errors import UserError
from exporter.text_table import align

MAX_LISTED_KEYS = 12


@dataclass
class Comparison:
    """What ``compare`` renders: run labels, row keys, cells, the baseline and every ratio."""

    labels: list[str]
    keys: list[tuple]                      # (artifact, runtime, device, threads, batch_size), first-seen order
    cells: dict[tuple[str, tuple], BenchRow]  # (label, key) → the run's row
    baseline_label: str
    baseline_key: tuple
    baseline_p50: float
    ratios: dict[tuple[str, tuple], float] = field(default_factory=dict)  # (label, key) → p50 / baseline p50


def short_key(key: tuple) -> str:
    """'artifact/runtime/device' (the form ``--baseline`` takes)."""
    return "/".join(str(part) for part in key[:3])


def long_key(key: tuple) -> str:
    """'artifact/runtime/device' plus threads and batch when set."""
    text = short_key(key)
    if key[3] is not None:
        text += f" threads={key[3]}"
    if key[4] is not None:
        text += f" batch={key[4]}"
    return text


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


def _find_baseline(baseline: str | None, labels: list[str], benches: list[tuple[str, BenchResult]],
                   cells: dict, keys: list[tuple]) -> tuple[str, tuple, float]:
    def ok_p50(label, key):
        row = cells.get((label, key))
        return row.p50 if row is not None and row.ok else None

    if baseline is None:
        for label in labels:  # the first ok row of the first run (of the first run with any ok row)
            for row in benches[labels.index(label)][1].rows:
                if ok_p50(label, row.key) is not None:
                    return label, row.key, ok_p50(label, row.key)
        raise UserError("no run has an ok row with a p50 latency to use as the baseline")

    text = baseline.strip()
    run_labels = labels
    # optional "LABEL:" prefix picks the run the baseline is taken from
    if ":" in text and text.split(":", 1)[0] in labels:
        prefix, text = text.split(":", 1)
        run_labels = [prefix]
    parts = text.split("/")
    matching = [k for k in keys if [str(p) for p in k[: len(parts)]] == parts] if 3 <= len(parts) <= 5 else []
    if not matching:
        raise UserError(f"unknown baseline {baseline!r}: expected artifact/runtime/device, one of: "
                        f"{_key_list(keys)}")
    for label in run_labels:
        for key in matching:
            if ok_p50(label, key) is not None:
                return label, key, ok_p50(label, key)
    raise UserError(f"baseline {baseline!r} has no ok row with a p50 latency in "
                    f"{'run ' + run_labels[0] if len(run_labels) == 1 else 'any run'}")


def comparison(benches: list[tuple[str, BenchResult]], baseline: str | None = None) -> Comparison:
    """Collect rows by key across runs and compute p50 ratios against one baseline row.

    ``benches``: (name, bench) pairs; a run is labelled ``environment.label`` or else ``name`` (repeats get
    ``#2``...). ``baseline``: ``artifact/runtime/device`` (optionally ``/threads/batch``, optionally prefixed
    ``LABEL:`` to take it from that run; else the first run holding it ok); None = the first ok row of the
    first run. Ratio = p50 / baseline p50, so < 1 is faster than the baseline.
    """
    if not benches:
        raise UserError("nothing to compare: give at least one bench result file")
    labels = _labels(benches)
    keys: list[tuple] = []
    cells: dict[tuple[str, tuple], BenchRow] = {}
    for label, (_, bench) in zip(labels, benches, strict=True):
        for row in bench.rows:
            key = row.key
            if key not in keys:
                keys.append(key)
            # a repeated key within one run: keep the first ok one
            if (label, key) not in cells or (not cells[(label, key)].ok and row.ok):
                cells[(label, key)] = row
    base_label, base_key, base_p50 = _find_baseline(baseline, labels, benches, cells, keys)
    result = Comparison(labels, keys, cells, base_label, base_key, base_p50)
    for (label, key), row in cells.items():
        p50 = row.p50 if row.ok else None
        if p50 is not None and base_p50 > 0:
            result.ratios[(label, key)] = p50 / base_p50
    return result


def render(result: Comparison) -> str:
    """The comparison as an aligned GitHub Markdown table (readable in a terminal too)."""
    headers = ["artifact", "runtime", "device", "threads", "batch"]
    for label in result.labels:
        headers += [f"{label} p50 ms", f"{label} mIoU", f"{label} p50 vs baseline"]
    right = set(headers[3:])
    rows = []
    for key in result.keys:
        cells = [str(key[0]), str(key[1]), str(key[2]),
                 "-" if key[3] is None else str(key[3]), "-" if key[4] is None else str(key[4])]
        for label in result.labels:
            row = result.cells.get((label, key))
            if row is None:
                cells += ["-", "-", "-"]
            elif not row.ok:
                cells += [row.status, "-", "-"]
            else:
                cells += [fmt_ms(row.p50), fmt_num(row.score("miou"), 4), fmt_ratio(result.ratios.get((label, key)))]
        rows.append(cells)
    intro = [
        f"Runs: {', '.join(result.labels)}",
        f"Baseline: {long_key(result.baseline_key)} in run '{result.baseline_label}' "
        f"(p50 {fmt_ms(result.baseline_p50)} ms); ratio = p50 / baseline p50, < 1 is faster.",
        "",
    ]
    return "\n".join(intro) + align(headers, rows, right, markdown=True) + "\n"


def compare(benches: list[tuple[str, BenchResult]], baseline: str | None = None) -> str:
    """Side-by-side table of p50 ms, mIoU and p50 ratio vs the baseline for every run; see ``comparison``."""
    return render(comparison(benches, baseline))
