"""Type checks for reading the project's JSON files: each failure names where in the file and what is wrong.

The records in ``exporter.contracts`` read their files through these, once; code that holds a record can
trust its types.
"""

from __future__ import annotations

import math


class ContractError(ValueError):
    """A file does not follow its contract; the message gives the place (``results[3].latency_ms.p50``) and why."""


def _kind(value) -> str:
    return "null" if value is None else type(value).__name__


def obj(value, where: str) -> dict:
    if not isinstance(value, dict):
        raise ContractError(f"{where}: expected an object, got {_kind(value)}")
    return value


def items(value, where: str) -> list:
    if not isinstance(value, list):
        raise ContractError(f"{where}: expected a list, got {_kind(value)}")
    return value


def _scalar(value, where: str, required: bool, accepts, expected: str):
    if value is None and not required:
        return None
    if not accepts(value):
        raise ContractError(f"{where}: expected {expected}, got {_kind(value)}")
    return value


def text(value, where: str, required: bool = False) -> str | None:
    return _scalar(value, where, required, lambda v: isinstance(v, str), "a string")


def number(value, where: str, required: bool = False) -> float | None:
    """An int or float (NaN allowed: a metric with nothing to measure); never a bool or a string."""
    value = _scalar(value, where, required, lambda v: isinstance(v, int | float) and not isinstance(v, bool),
                    "a number")
    return None if value is None else float(value)


def integer(value, where: str, required: bool = False) -> int | None:
    return _scalar(value, where, required, lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer")


def flag(value, where: str, default: bool = False) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ContractError(f"{where}: expected true or false, got {_kind(value)}")
    return value


def texts(value, where: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    return tuple(text(v, f"{where}[{i}]", required=True) for i, v in enumerate(items(value, where)))


def numbers(value, where: str) -> tuple[float | None, ...] | None:
    """A list of numbers in which null stands for "not measured" (a class absent from labels and predictions)."""
    if value is None:
        return None
    return tuple(number(v, f"{where}[{i}]") for i, v in enumerate(items(value, where)))


MAX_PATH_BYTES = 1024  # a path read from a file: longer is not a path this toolkit wrote
MAX_NAME_BYTES = 255  # one component (what file systems allow)


def path(value, where: str, absolute: bool = True) -> str | None:
    """A file path read from one of the toolkit's files, checked before it touches the file system: a string of
    printable characters, at most MAX_PATH_BYTES bytes long with components of at most MAX_NAME_BYTES bytes (as
    the file system counts them: UTF-8), no ``..`` (a relative path stays inside its folder), absolute only where
    ``absolute`` allows it."""
    value = text(value, where)
    if value is None:
        return None
    if any(not ch.isprintable() for ch in value):
        raise ContractError(f"{where}: the path holds control characters")
    size = len(value.encode("utf-8", "surrogatepass"))
    if not value or size > MAX_PATH_BYTES:
        raise ContractError(f"{where}: a path of {size} bytes (1 to {MAX_PATH_BYTES})")
    parts = value.replace("\\", "/").split("/")
    if any(len(part.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES for part in parts):
        raise ContractError(f"{where}: a path component longer than {MAX_NAME_BYTES} bytes")
    if ".." in parts:
        raise ContractError(f"{where}: {value[:80]!r} climbs out of its folder ('..')")
    if value.startswith("/") and not absolute:
        raise ContractError(f"{where}: {value[:80]!r} must be relative to its folder")
    return value


def finite(value) -> float | None:
    """``value`` if it is a finite number, else None (NaN and ±inf read as "not measured")."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) \
        else None
