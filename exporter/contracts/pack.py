"""FILE.pack: one zip holding artifacts, pack.json, evaluation frames and reference outputs — opened safely.

Safe means: only expected member names (no path can escape the folder), sizes and compression ratios
bounded, every member's sha256 checked against pack.json, no pickle ever loaded. ``pack.json`` is a
``PackMeta`` record: the artifacts are manifest entries (``ArtifactEntry``) whose paths are members.
"""

from __future__ import annotations

import errno
import hashlib
import json
import re
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from exporter.contracts import checks
from exporter.contracts.checks import ContractError
from exporter.contracts.evaldata import EVAL_FILE
from exporter.contracts.manifest import ArtifactEntry
from exporter.contracts.rundir import RunDir
from exporter.errors import UserError
from exporter.fileio import atomic_path, sha256_file

PACK_FORMAT = "unet-export-pack"
PACK_VERSION = 1
META = "pack.json"
MEMBER_NAME = re.compile(r"^(pack\.json|eval\.npz|artifacts/[A-Za-z0-9][A-Za-z0-9._-]{0,200})$")
MAX_MEMBER_BYTES = 4 << 30
MAX_TOTAL_BYTES = 8 << 30
MAX_RATIO = 200
# A damaged deflate stream (zlib.error), a flipped compression method (NotImplementedError) or encryption
# flag (RuntimeError), a bad header field (struct.error, ValueError, OverflowError): all mean a corrupt pack.
CORRUPT_ZIP_ERRORS = (zlib.error, NotImplementedError, RuntimeError, struct.error, ValueError, OverflowError)


@dataclass(frozen=True)
class PackMeta:
    """pack.json: what the pack holds and the sha256 and size of every member."""

    labels: tuple[str, ...]
    artifacts: tuple[ArtifactEntry, ...]  # paths are members: artifacts/NAME
    files: dict[str, tuple[str, int]]  # member → (sha256, size in bytes)
    eval_frames: int | None = None

    def to_dict(self) -> dict:
        meta = {"format": PACK_FORMAT, "version": PACK_VERSION, "labels": list(self.labels),
                "artifacts": [a.to_dict() for a in self.artifacts],
                "files": {name: {"sha256": sha, "size_bytes": size} for name, (sha, size) in self.files.items()}}
        if self.eval_frames is not None:
            meta["eval_frames"] = self.eval_frames
        return meta

    @classmethod
    def from_dict(cls, data) -> PackMeta:
        """Check pack.json: every artifact is a listed member under artifacts/, every member has a digest."""
        if not isinstance(data, dict) or data.get("format") != PACK_FORMAT or data.get("version") != PACK_VERSION:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise ContractError(f"not a unet-export pack (format {found!r})")
        files = data.get("files")
        if not isinstance(files, dict) or not all(isinstance(v, dict) for v in files.values()):
            raise ContractError("pack.json has no valid 'files' table")
        digests = {}
        for name, digest in files.items():
            sha, size = digest.get("sha256"), digest.get("size_bytes")
            if not isinstance(sha, str) or isinstance(size, bool) or not isinstance(size, int):
                raise ContractError(f"pack.json: files[{name!r}] needs a sha256 and a size_bytes")
            digests[name] = (sha, size)
        if not isinstance(data.get("artifacts"), list) or not isinstance(data.get("labels", []), list):
            raise ContractError("pack.json has no valid 'artifacts' list")
        artifacts = []
        for i, entry in enumerate(data["artifacts"]):
            path = entry.get("path") if isinstance(entry, dict) else None
            if not isinstance(path, str) or not path.startswith("artifacts/") or not MEMBER_NAME.match(path) \
                    or path not in files:
                raise ContractError(f"pack.json names an artifact {path!r} that is not one of its members")
            artifacts.append(ArtifactEntry.from_dict(entry, f"pack.json artifacts[{i}]"))
        return cls(labels=checks.texts(data.get("labels", []), "pack.json labels"), artifacts=tuple(artifacts),
                   files=digests, eval_frames=checks.integer(data.get("eval_frames"), "pack.json eval_frames"))


@dataclass(frozen=True)
class PackedArtifact:
    """An artifact ready to measure: its manifest entry and the file on this machine."""

    entry: ArtifactEntry
    file: Path

    @property
    def name(self) -> str:
        return self.entry.name


@dataclass(frozen=True)
class BenchTarget:
    """What unet-bench measures: artifacts, the evaluation frames, class names."""

    root: Path
    artifacts: tuple[PackedArtifact, ...]
    eval_path: Path
    labels: tuple[str, ...]


def write_pack(out: str | Path, artifacts: list[tuple[Path, ArtifactEntry]], eval_path: Path, labels: list[str],
               eval_frames: int | None = None) -> Path:
    """Zip artifacts (file, manifest entry) + eval.npz + pack.json atomically."""
    out = Path(out)
    files, entries = {}, []
    for path, entry in artifacts:
        member = f"artifacts/{path.name}"
        if not MEMBER_NAME.match(member):
            raise UserError(f"{path}: file name not allowed in a pack (letters, digits, . _ - only)")
        files[member] = (sha256_file(path), path.stat().st_size)
        entries.append(entry.moved(member))
    files[EVAL_FILE] = (sha256_file(eval_path), eval_path.stat().st_size)
    meta = PackMeta(tuple(labels), tuple(entries), files, eval_frames)
    with atomic_path(out, suffix=".pack") as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(META, json.dumps(meta.to_dict(), indent=2))
        zf.write(eval_path, EVAL_FILE)
        for path, _ in artifacts:
            zf.write(path, f"artifacts/{path.name}")
    return out


def open_pack(pack: str | Path, dest: str | Path) -> BenchTarget:
    """Check and extract a pack into ``dest``; any problem is a UserError naming the pack."""
    pack, dest = Path(pack), Path(dest)
    try:
        with zipfile.ZipFile(pack) as zf:
            infos = zf.infolist()
            _check_members(pack, infos)
            meta = PackMeta.from_dict(json.loads(zf.read(META)))
            names = {i.filename for i in infos} - {META}
            if names != set(meta.files):
                raise UserError(f"{pack}: members {sorted(names ^ set(meta.files))} disagree with pack.json")
            dest.mkdir(parents=True, exist_ok=True)
            for info in infos:
                if info.filename != META:
                    _extract_checked(pack, zf, info, dest / info.filename, meta.files[info.filename])
    except ContractError as exc:
        raise UserError(f"{pack}: {exc}") from None
    except zipfile.BadZipFile as exc:
        raise UserError(f"{pack}: truncated or corrupt pack ({exc})") from None
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError) as exc:
        raise UserError(f"{pack}: unreadable pack.json ({exc.__class__.__name__})") from None
    except FileNotFoundError:
        raise UserError(f"{pack}: pack not found") from None
    except (OSError, EOFError) as exc:
        if getattr(exc, "errno", None) == errno.EINVAL:  # zipfile seeking to an offset a damaged header gave
            raise UserError(f"{pack}: truncated or corrupt pack (an offset points outside the file)") from None
        raise UserError(f"{pack}: cannot read pack ({exc})") from None
    except CORRUPT_ZIP_ERRORS as exc:  # what zipfile and zlib raise on damaged bytes besides BadZipFile
        raise UserError(f"{pack}: truncated or corrupt pack ({exc.__class__.__name__}: {exc})"[:300]) from None
    artifacts = tuple(PackedArtifact(entry.moved(entry.name), dest / entry.path) for entry in meta.artifacts)
    _check_eval(pack, dest / EVAL_FILE)
    return BenchTarget(dest, artifacts, dest / EVAL_FILE, meta.labels)


def _extract_checked(pack: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path,
                     expected: tuple[str, int]) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    with zf.open(info) as src, open(target, "wb") as dst:
        for chunk in iter(lambda: src.read(1 << 20), b""):
            size += len(chunk)
            if size > MAX_MEMBER_BYTES:
                raise UserError(f"{pack}: {info.filename} is larger than declared")
            digest.update(chunk)
            dst.write(chunk)
    if (digest.hexdigest(), size) != expected:
        raise UserError(f"{pack}: {info.filename} does not match its sha256 in pack.json (tampered?)")


def _check_eval(pack: Path, eval_path: Path) -> None:
    """The evaluation frames must load (numpy, no pickles) and agree in shape; name the pack if not."""
    from exporter.contracts.evaldata import load_eval

    try:
        load_eval(eval_path)
    except UserError as exc:
        raise UserError(f"{pack}: {EVAL_FILE} is not usable ({str(exc).split(': ', 1)[-1]})") from None


def _check_members(pack: Path, infos: list[zipfile.ZipInfo]) -> None:
    total = 0
    names = [i.filename for i in infos]
    if META not in names or EVAL_FILE not in names:
        raise UserError(f"{pack}: not a unet-export pack (no {META} or {EVAL_FILE})")
    if len(set(names)) != len(names):
        raise UserError(f"{pack}: duplicate member names")
    for info in infos:
        if not MEMBER_NAME.match(info.filename):
            raise UserError(f"{pack}: member {info.filename!r} is not allowed (path escape or unexpected file)")
        if info.file_size > MAX_MEMBER_BYTES or info.file_size > MAX_RATIO * max(info.compress_size, 1) + (1 << 20):
            raise UserError(f"{pack}: member {info.filename} is too large or too compressed")
        total += info.file_size
    if total > MAX_TOTAL_BYTES:
        raise UserError(f"{pack}: unpacks to more than {MAX_TOTAL_BYTES >> 30} GiB")


def keras_entry(run: RunDir, path: Path | None = None) -> ArtifactEntry:
    """The run's model.keras as an artifact (the reference every export is held to); ``path``: a copy of it
    (the pack's: float32, without optimizer state) to describe instead. The run's own file keeps the
    precision it was trained in (``config.json``: a mixed-precision run runs mixed in Keras)."""
    trained = "float32" if path else str(run.config().get("precision") or "float32")
    path = path or run.model
    return ArtifactEntry(path=run.model.name, format="keras", precision="fp32" if trained == "float32" else trained,
                         size_bytes=path.stat().st_size, sha256=sha256_file(path))


def open_run_dir(run_dir: str | Path, warn: Callable[[str], None] | None = None) -> BenchTarget:
    """A run folder on the host: model.keras, its current exports, and eval.npz (written by pack)."""
    run = RunDir(run_dir)
    if not run.eval_path.exists():
        raise UserError(f"{run.path}: no {EVAL_FILE}; run `unet-export pack {run.path} --data DIR --out FILE.pack` "
                        "first (it writes the evaluation frames), or bench the pack")
    artifacts = [PackedArtifact(keras_entry(run), run.model)] if run.model.exists() else []
    for entry in run.current_artifacts(warn=warn):
        artifacts.append(PackedArtifact(entry.moved(entry.name), run.resolve(entry.path)))
    return BenchTarget(run.path, tuple(artifacts), run.eval_path, tuple(run.class_names()))
