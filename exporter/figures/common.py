"""What the figures share: pyplot on the Agg backend, the PNG writer, a figure that only says something, label text.

Every PNG is written atomically and kept small (re-encoded with a 256-colour palette when the plain PNG would be
over ~190 KB). Figures read on a screen (latency vs mIoU, drift) are saved at ``SCREEN_DPI`` with text of at least
``FONT`` points, so that they read at 100 %; the others at ``DPI``.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from exporter.errors import UserError
from exporter.fileio import atomic_path

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 80
SCREEN_DPI = 100
FONT = 9.5  # points: 13 px at SCREEN_DPI
SMALL_PNG_BYTES = 190_000
MAX_PNG_BYTES = 190_000
MISSING_MATPLOTLIB = "matplotlib is not installed: pip install 'unet-export[plots]' for --plots"


def pyplot() -> ModuleType:
    """matplotlib.pyplot on the Agg backend, or UserError when matplotlib is missing."""
    try:
        import matplotlib
    except ImportError:
        raise UserError(MISSING_MATPLOTLIB) from None
    if matplotlib is None:  # blocked in sys.modules
        raise UserError(MISSING_MATPLOTLIB)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _smaller_png(data: bytes) -> bytes:
    """``data`` palette-quantised, with fewer colours until it fits MAX_PNG_BYTES; the smallest if none does."""
    from PIL import Image  # a hard dependency of matplotlib

    rgb = Image.open(io.BytesIO(data)).convert("RGB")
    for colors, dither in ((256, True), (128, True), (64, True), (64, False)):
        palette = rgb.quantize(colors=colors, method=Image.Quantize.MEDIANCUT)
        image = rgb.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG if dither else Image.Dither.NONE)
        smaller = io.BytesIO()
        image.save(smaller, format="png", optimize=True)
        data = min(data, smaller.getvalue(), key=len)
        if len(data) <= MAX_PNG_BYTES:
            break
    return data


def save_png(fig: Figure, path: str | os.PathLike[str], dpi: float = DPI) -> Path:
    """Render ``fig`` to PNG atomically and close it; palette-quantise it when the plain PNG is large."""
    plt = pyplot()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    data = buffer.getvalue()
    if len(data) > SMALL_PNG_BYTES:
        data = _smaller_png(data)
    with atomic_path(path, suffix=".png") as tmp:
        tmp.write_bytes(data)
    return Path(path)


def message_figure(plt: ModuleType, text: str, size: tuple[float, float] = (6, 2)) -> Figure:
    """A figure that only says ``text``: what a picture shows when there is nothing to draw."""
    fig = plt.figure(figsize=size, dpi=DPI)
    fig.text(0.5, 0.5, text, ha="center", va="center", wrap=True)
    return fig


def shorten_middle(text: str, width: int) -> str:
    """``text`` in at most ``width`` characters, its middle replaced by "..." when it is longer."""
    return text if len(text) <= width else text[: width // 2 - 1] + "..." + text[-(width - width // 2 - 2):]


def distinct_labels(names: Sequence[str], width: int) -> list[str]:
    """Each name in at most ``width`` characters, and different names stay different.

    A name that fits is kept; a longer one is shortened in the middle. Where that makes different names equal
    (``unet_int8_floathead_v2…`` and ``unet_int8_floathead_v3…``), what they share at the start and the end is
    cut instead and the part that tells them apart is kept, with "…" where text was cut; as a last resort
    " #2", " #3"… is appended.
    """
    width = max(width, 8)
    labels = [shorten_middle(n, width) for n in names]
    for label in dict.fromkeys(labels):
        group = [i for i, other in enumerate(labels) if other == label]
        texts = [names[i] for i in group]
        if len(set(texts)) < 2:
            continue
        prefix = len(os.path.commonprefix(texts))
        suffix = len(os.path.commonprefix([t[::-1] for t in texts]))
        for i in group:
            labels[i] = _telling_part(names[i], prefix, suffix, width)
    seen: dict[str, str] = {}
    counts: dict[str, int] = {}
    for i, (name, label) in enumerate(zip(names, labels, strict=True)):
        if seen.setdefault(label, name) != name:
            counts[label] = counts.get(label, 1) + 1
            labels[i] = f"{label} #{counts[label]}"
    return labels


def _telling_part(name: str, prefix: int, suffix: int, width: int) -> str:
    """The part of ``name`` between a shared ``prefix`` and ``suffix`` (lengths), widened to ``width``, with "…"."""
    lo, hi = prefix, max(prefix, len(name) - min(suffix, len(name) - prefix))
    room = width - 2 - (hi - lo)
    if room < 0:  # the differing part alone is too long: its middle goes
        return "\u2026" + shorten_middle(name[lo:hi], width - 2) + "\u2026"
    grow_right = min(len(name) - hi, max(room // 2, room - lo))
    hi += grow_right
    lo = max(0, lo - (room - grow_right))
    return ("\u2026" if lo > 0 else "") + name[lo:hi] + ("\u2026" if hi < len(name) else "")
