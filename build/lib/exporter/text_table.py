"""Aligned text tables, for the terminal or as GitHub Markdown (still aligned): the one table writer."""

from __future__ import annotations

from collections.abc import Sequence


def align(headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[str] | frozenset[str] = frozenset(),
          markdown: bool = False) -> str:
    """Columns padded to a common width; the columns named in ``right`` right-aligned (numbers)."""
    rows = [[str(cell) for cell in row] for row in rows]
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
