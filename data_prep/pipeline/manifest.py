"""``manifest.json``: the description of a prepared directory (docs/architecture.md §1).

Written last, atomically, with sorted keys and without wall times or temporary paths, so the same
inputs and config always give the same bytes. Run timings go to ``run_log.json`` instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cllm4rec_dist
from cllm4rec_dist.data.format import MANIFEST_NAME, REQUIRED_FIELDS, sha256_file
from data_prep.pipeline.arrowio import write_bytes_atomic


def created_by() -> str:
    """Package name and version recorded in the manifest."""
    return f"cllm4rec_dist {cllm4rec_dist.__version__}"


def file_info(path: Path, rows: int | None = None) -> dict[str, Any]:
    """Manifest ``files`` entry of a written file: sha256, bytes and (for tables) rows."""
    info: dict[str, Any] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    if rows is not None:
        info["rows"] = rows
    return info


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    """Canonical JSON encoding (sorted keys, 2-space indent, trailing newline)."""
    return (json.dumps(manifest, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode()


def write_manifest(output_dir: Path, manifest: dict[str, Any]) -> None:
    """Write ``manifest.json`` atomically after checking the contract's fields are present."""
    missing = [key for key in REQUIRED_FIELDS if key not in manifest]
    if missing:
        raise ValueError(f"manifest is missing fields {missing}")
    write_bytes_atomic(output_dir / MANIFEST_NAME, manifest_bytes(manifest))


def read_manifest(output_dir: Path) -> dict[str, Any]:
    """Parse ``<output_dir>/manifest.json``; ValueError naming the file if absent or invalid."""
    path = output_dir / MANIFEST_NAME
    if not path.is_file():
        raise ValueError(f"{path}: no manifest (not a prepared directory, or preparation failed)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: invalid JSON: {err}") from None
    if not isinstance(manifest, dict):
        raise ValueError(f"{path}: top level is not an object")
    return manifest
