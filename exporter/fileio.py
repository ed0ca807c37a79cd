"""Atomic writes and file hashing: an interrupted write never leaves a truncated final file."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # once, at import: os.umask can only be read by setting it


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temp path beside ``final``; on success flush it to disk and rename it into place, on error delete it.

    The temp file is named ``.NAME.PID.random…``: a process killed mid-write (SIGKILL runs no cleanup) leaves
    it behind, and the next write to the same name removes it once that PID is gone.

    A folder that cannot be created or written, or a write that fails (disk full), is a ``UserError``
    naming ``final`` (exit 2 at the CLI). The file gets the usual permissions (0666 less the umask),
    not ``mkstemp``'s owner-only 0600.
    """
    from exporter.errors import UserError

    final = Path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(final)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{final.name}.{os.getpid()}.", suffix=suffix if suffix is not None else final.suffix + ".tmp",
            dir=final.parent,
        )
    except OSError as exc:
        raise UserError(f"{final}: cannot write ({exc.strerror or exc})") from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        fd = os.open(tmp_path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp_path, 0o666 & ~_UMASK)
        os.replace(tmp_path, final)
    except OSError as exc:
        other = f": {exc.filename}" if exc.filename and str(exc.filename) != str(tmp_path) else ""
        raise UserError(f"{final}: cannot write ({exc.strerror or exc}{other})") from None
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but not ours (PermissionError), or cannot tell: keep its files
        return True
    return True


def remove_stale_temp_files(final: str | os.PathLike) -> list[Path]:
    """Delete temp files of earlier atomic writes to ``final`` whose writing process no longer runs."""
    final = Path(final)
    pattern = re.compile(rf"^\.{re.escape(final.name)}\.(\d+)\.")
    removed = []
    try:
        candidates = [p for p in final.parent.iterdir() if pattern.match(p.name)]
    except OSError:
        return removed
    for path in candidates:
        if not _process_alive(int(pattern.match(path.name).group(1))):
            try:
                path.unlink()
                removed.append(path)
            except OSError:
                pass
    return removed


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """An exclusive advisory lock (``flock``) held while the block runs, for read-change-write of shared files.

    Every process that updates the file takes the same lock file first, so concurrent updates serialise
    instead of losing each other's changes. Where ``fcntl`` does not exist (Windows) the block runs unlocked.
    """
    from exporter.errors import UserError

    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    path = Path(path)
    try:
        handle = open(path, "a+")  # noqa: SIM115 - held for the duration of the block
    except OSError as exc:
        raise UserError(f"{path}: cannot lock ({exc.strerror or exc})") from None
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def check_writable(final: str | os.PathLike) -> Path:
    """Fail early (``UserError``) when ``final`` could not be written, before any long work is done."""
    from exporter.errors import UserError

    final = Path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{final.parent}: cannot create output folder ({exc.strerror or exc})") from None
    if final.is_dir():
        raise UserError(f"{final}: is a folder; give a file name")
    if not os.access(final.parent, os.W_OK | os.X_OK):
        raise UserError(f"{final.parent}: output folder is not writable")
    return final


def read_json(path: str | os.PathLike, what: str = "JSON file") -> dict:
    """A JSON object from ``path``; a missing, unreadable or non-object file is a ``UserError`` naming it."""
    from exporter.errors import UserError

    path = Path(path)
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: {what} not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: unreadable {what} ({exc.__class__.__name__}: {exc})"[:300]) from None
    if not isinstance(value, dict):
        raise UserError(f"{path}: {what} is not a JSON object")
    return value


def read_lines(path: str | os.PathLike, what: str) -> list[str]:
    """The lines of a UTF-8 text file; a missing or unreadable one is a ``UserError`` naming it and ``what``."""
    from exporter.errors import UserError

    try:
        return Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read the {what} ({exc.__class__.__name__})") from None


def write_bytes_atomic(final: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``final`` atomically."""
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)
    return Path(final)


def write_text_atomic(final: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``final`` atomically."""
    return write_bytes_atomic(final, text.encode("utf-8"))


def write_json_atomic(final: str | os.PathLike, obj: object) -> Path:
    """Write ``obj`` as indented JSON atomically."""
    return write_text_atomic(final, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
