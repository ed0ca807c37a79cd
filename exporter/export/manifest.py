"""RUN_DIR/manifest.json: one entry per exported artifact (fields in DESIGN.md), updated atomically."""

from __future__ import annotations

import json
from pathlib import Path

from exporter.errors import UserError
from exporter.fileio import sha256_file, write_json_atomic

MANIFEST = "manifest.json"


def load_manifest(run_dir: str | Path) -> dict:
    """The manifest of a run folder ({"artifacts": []} if none yet)."""
    path = Path(run_dir) / MANIFEST
    if not path.exists():
        return {"artifacts": []}
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(manifest.get("artifacts"), list):
        raise UserError(f"{path}: no 'artifacts' list")
    return manifest


def artifact_entry(path: Path, run_dir: Path, fmt: str, precision: str, input_dtype: str, output: str,
                   validation: dict | None, **extra) -> dict:
    """A manifest entry for a file already in place; ``path`` is stored relative to the run folder."""
    try:
        rel = str(path.resolve().relative_to(run_dir.resolve()))
    except ValueError:
        rel = str(path.resolve())
    return {"path": rel, "format": fmt, "precision": precision, "input_dtype": input_dtype, "output": output,
            "size_bytes": path.stat().st_size, "sha256": sha256_file(path), "validation": validation, **extra}


def record_artifact(run_dir: str | Path, entry: dict) -> Path:
    """Add or replace (same path) an entry in RUN_DIR/manifest.json."""
    run_dir = Path(run_dir)
    manifest = load_manifest(run_dir)
    manifest["artifacts"] = [a for a in manifest["artifacts"] if a.get("path") != entry["path"]] + [entry]
    return write_json_atomic(run_dir / MANIFEST, manifest)
