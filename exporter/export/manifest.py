"""RUN_DIR/manifest.json: one entry per exported artifact (fields in DESIGN.md), updated atomically."""

from __future__ import annotations

from pathlib import Path

from exporter.errors import UserError
from exporter.fileio import read_json, sha256_file, write_json_atomic

MANIFEST = "manifest.json"


def load_manifest(run_dir: str | Path) -> dict:
    """The manifest of a run folder ({"artifacts": []} if none yet)."""
    path = Path(run_dir) / MANIFEST
    if not path.exists():
        return {"artifacts": []}
    manifest = read_json(path, "manifest")
    artifacts = manifest.get("artifacts")
    if not isinstance(artifacts, list) or not all(isinstance(a, dict) and isinstance(a.get("path"), str)
                                                  and isinstance(a.get("sha256"), str) for a in artifacts):
        raise UserError(f"{path}: no 'artifacts' list of entries with a path and a sha256")
    return manifest


def current_artifacts(run_dir: str | Path, warn=None) -> list[dict]:
    """Manifest entries exported from the run's present model.keras; entries of an earlier model are left out.

    A run retrained with ``--force`` keeps its old exports on disk: benchmarking them beside the new model's
    reference outputs would report drift that is really the difference between two models.
    """
    run_dir = Path(run_dir)
    model = run_dir / "model.keras"
    model_sha = sha256_file(model) if model.is_file() else None
    entries = []
    for entry in load_manifest(run_dir)["artifacts"]:
        source = entry.get("source_model_sha256")
        if source is not None and model_sha is not None and source != model_sha:
            if warn:
                warn(f"{entry['path']}: left out, exported from an earlier model.keras (export it again)")
            continue
        entries.append(entry)
    return entries


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
