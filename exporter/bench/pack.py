"""Packs: one zip holding artifacts, manifest, evaluation frames and reference outputs — opened safely.

Safe means: only expected member names (no path can escape the folder), sizes and compression ratios
bounded, every member's sha256 checked against pack.json, no pickle ever loaded.
"""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

from exporter.bench.evaldata import EVAL_FILE
from exporter.errors import UserError
from exporter.fileio import atomic_path, read_json

PACK_FORMAT = "unet-export-pack"
PACK_VERSION = 1
META = "pack.json"
MEMBER_NAME = re.compile(r"^(pack\.json|eval\.npz|artifacts/[A-Za-z0-9][A-Za-z0-9._-]{0,200})$")
MAX_MEMBER_BYTES = 4 << 30
MAX_TOTAL_BYTES = 8 << 30
MAX_RATIO = 200


@dataclass(frozen=True)
class BenchTarget:
    """What unet-bench measures: artifacts (absolute paths), the eval file, labels."""

    root: Path
    artifacts: list[dict]
    eval_path: Path
    labels: list[str]


def _sha256(data_path: Path) -> str:
    digest = hashlib.sha256()
    with open(data_path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_pack(out: str | Path, artifacts: list[tuple[Path, dict]], eval_path: Path, labels: list[str],
               extra: dict | None = None) -> Path:
    """Zip artifacts (file, manifest entry) + eval.npz + pack.json atomically."""
    out = Path(out)
    files, entries = {}, []
    for path, entry in artifacts:
        member = f"artifacts/{path.name}"
        if not MEMBER_NAME.match(member):
            raise UserError(f"{path}: file name not allowed in a pack (letters, digits, . _ - only)")
        files[member] = {"sha256": _sha256(path), "size_bytes": path.stat().st_size}
        entries.append({**entry, "path": member})
    files[EVAL_FILE] = {"sha256": _sha256(eval_path), "size_bytes": eval_path.stat().st_size}
    meta = {"format": PACK_FORMAT, "version": PACK_VERSION, "labels": labels, "artifacts": entries,
            "files": files, **(extra or {})}
    with atomic_path(out, suffix=".pack") as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(META, json.dumps(meta, indent=2))
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
            meta = json.loads(zf.read(META))
            if not isinstance(meta, dict) or meta.get("format") != PACK_FORMAT or meta.get("version") != PACK_VERSION:
                found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
                raise UserError(f"{pack}: not a unet-export pack (format {found!r})")
            expected = _check_meta(pack, meta)
            names = {i.filename for i in infos} - {META}
            if names != set(expected):
                raise UserError(f"{pack}: members {sorted(names ^ set(expected))} disagree with pack.json")
            dest.mkdir(parents=True, exist_ok=True)
            for info in infos:
                if info.filename == META:
                    continue
                target = dest / info.filename
                target.parent.mkdir(parents=True, exist_ok=True)
                digest, size = hashlib.sha256(), 0
                with zf.open(info) as src, open(target, "wb") as dst:
                    for chunk in iter(lambda src=src: src.read(1 << 20), b""):
                        size += len(chunk)
                        if size > MAX_MEMBER_BYTES:
                            raise UserError(f"{pack}: {info.filename} is larger than declared")
                        digest.update(chunk)
                        dst.write(chunk)
                want = expected[info.filename]
                if digest.hexdigest() != want.get("sha256") or size != want.get("size_bytes"):
                    raise UserError(f"{pack}: {info.filename} does not match its sha256 in pack.json (tampered?)")
    except zipfile.BadZipFile as exc:
        raise UserError(f"{pack}: truncated or corrupt pack ({exc})") from None
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError) as exc:
        raise UserError(f"{pack}: unreadable pack.json ({exc.__class__.__name__})") from None
    except FileNotFoundError:
        raise UserError(f"{pack}: pack not found") from None
    except (OSError, EOFError) as exc:
        raise UserError(f"{pack}: cannot read pack ({exc})") from None
    artifacts = [{**a, "artifact_path": str(dest / a["path"]), "path": Path(a["path"]).name}
                 for a in meta["artifacts"]]
    _check_eval(pack, dest / EVAL_FILE)
    return BenchTarget(dest, artifacts, dest / EVAL_FILE, [str(label) for label in meta.get("labels", [])])


def _check_meta(pack: Path, meta: dict) -> dict:
    """pack.json's ``files`` and ``artifacts``, checked: every artifact is a listed member under artifacts/."""
    files, artifacts = meta.get("files"), meta.get("artifacts")
    if not isinstance(files, dict) or not all(isinstance(v, dict) for v in files.values()):
        raise UserError(f"{pack}: pack.json has no valid 'files' table")
    if not isinstance(artifacts, list) or not isinstance(meta.get("labels", []), list):
        raise UserError(f"{pack}: pack.json has no valid 'artifacts' list")
    for entry in artifacts:
        path = entry.get("path") if isinstance(entry, dict) else None
        if not isinstance(path, str) or not path.startswith("artifacts/") or not MEMBER_NAME.match(path) \
                or path not in files:
            raise UserError(f"{pack}: pack.json names an artifact {path!r} that is not one of its members")
    return files


def _check_eval(pack: Path, eval_path: Path) -> None:
    """The evaluation frames must load (numpy, no pickles) and agree in shape; name the pack if not."""
    from exporter.bench.evaldata import load_eval

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


def open_run_dir(run_dir: str | Path, warn=None) -> BenchTarget:
    """A run folder on the host: its manifest's artifacts, model.keras, and eval.npz (written by pack)."""
    from exporter.export.manifest import current_artifacts

    run_dir = Path(run_dir)
    eval_path = run_dir / EVAL_FILE
    if not eval_path.exists():
        raise UserError(f"{run_dir}: no {EVAL_FILE}; run `unet-export pack {run_dir} --data DIR --out FILE.pack` "
                        "first (it writes the evaluation frames), or bench the pack")
    artifacts = []
    keras_path = run_dir / "model.keras"
    if keras_path.exists():
        artifacts.append({"path": keras_path.name, "format": "keras", "precision": "fp32",
                          "size_bytes": keras_path.stat().st_size, "artifact_path": str(keras_path)})
    for entry in current_artifacts(run_dir, warn=warn):
        path = Path(entry["path"]) if Path(entry["path"]).is_absolute() else run_dir / entry["path"]
        artifacts.append({**entry, "path": path.name, "artifact_path": str(path)})
    labels = []
    if (run_dir / "config.json").exists():
        labels = list(read_json(run_dir / "config.json", "run config").get("class_names", []))
    return BenchTarget(run_dir, artifacts, eval_path, labels)
