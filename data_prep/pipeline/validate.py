"""``prepare.py --validate <dir>``: re-check a prepared directory against its manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cllm4rec_dist.data.format import (
    CORPORA,
    REQUIRED_FIELDS,
    ROW_FIELD,
    SCHEMA_VERSION,
    sha256_file,
)
from cllm4rec_dist.data.manifest import Shard
from cllm4rec_dist.data.samples import check_shard
from data_prep.pipeline.manifest import read_manifest


def _escapes(relative: Any) -> str | None:
    """Why a path listed in the manifest is refused (None if it is a plain relative path): it
    must stay inside the dataset directory, so nothing outside it is read or trusted."""
    if not isinstance(relative, str) or not relative:
        return f"{relative!r}: not a path"
    parts = Path(relative).parts
    if Path(relative).is_absolute() or ".." in parts:
        return f"{relative}: path leaves the dataset directory (absolute or '..')"
    return None


def _parquet_rows(path: Path) -> int:
    """Row count from a Parquet footer; ValueError naming the file if it is unreadable."""
    try:
        return pq.ParquetFile(path).metadata.num_rows
    except (OSError, pa.ArrowException) as err:
        raise ValueError(f"unreadable Parquet ({type(err).__name__}: {err})") from None


def _check_shard(root: Path, corpus: str, entry: dict[str, Any]) -> list[str]:
    escapes = _escapes(entry["path"])
    if escapes:
        return [escapes]
    # The reader's shard check (size, sha256, decoded samples and rows): one validator for both.
    shard = Shard(
        path=entry["path"],
        samples=entry["samples"],
        rows=entry[ROW_FIELD[corpus]],
        sha256=entry["sha256"],
        bytes=entry["bytes"],
    )
    return check_shard(root / entry["path"], shard, corpus)


def _check_id_map(root: Path, name: str, expected: int) -> list[str]:
    path = root / "id_maps" / f"{name}.parquet"
    if not path.is_file():
        return [f"id_maps/{name}.parquet: missing"]
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as err:
        return [f"id_maps/{name}.parquet: unreadable Parquet ({type(err).__name__}: {err})"]
    if table.column_names != ["raw_id", "index"]:
        return [f"id_maps/{name}.parquet: columns {table.column_names}, expected [raw_id, index]"]
    problems = []
    if table.num_rows != expected:
        problems.append(f"id_maps/{name}.parquet: {table.num_rows} rows, counts say {expected}")
    if not np.array_equal(table["index"].to_numpy(), np.arange(table.num_rows)):
        problems.append(f"id_maps/{name}.parquet: index is not 0..n-1 in order")
    distinct = pc.count_distinct(table["raw_id"], mode="all").as_py()
    if distinct != table.num_rows:
        problems.append(
            f"id_maps/{name}.parquet: {table.num_rows - distinct} raw id(s) appear more than once"
        )
    return problems


def validate_dir(root: Path) -> list[str]:
    """Every problem found in ``root`` (empty list = valid): manifest fields, shard checksums,
    sizes and sample/row counts, shard counts, id maps, split parts and other listed files."""
    try:
        manifest = read_manifest(root)
    except ValueError as err:
        return [str(err)]
    problems = [
        f"manifest: missing field {key!r}" for key in REQUIRED_FIELDS if key not in manifest
    ]
    if problems:
        return problems
    if manifest["schema_version"] != SCHEMA_VERSION:
        return [f"manifest: schema_version {manifest['schema_version']} != {SCHEMA_VERSION}"]
    try:
        return _check_contents(root, manifest)
    except (KeyError, TypeError, AttributeError) as err:
        return [f"manifest: malformed ({type(err).__name__}: {err})"]


def _check_contents(root: Path, manifest: dict[str, Any]) -> list[str]:
    problems = []
    multiple = manifest["config"]["layout"]["shard_multiple"]
    for corpus in CORPORA:
        info = manifest["corpora"].get(corpus)
        if info is None:
            problems.append(f"manifest: corpus {corpus!r} missing")
            continue
        if info["num_shards"] != len(info["shards"]) or info["num_shards"] % multiple:
            problems.append(
                f"{corpus}: num_shards {info['num_shards']} with {len(info['shards'])} listed "
                f"(must match and be a multiple of {multiple})"
            )
        for entry in info["shards"]:
            problems.extend(_check_shard(root, corpus, entry))
        listed = {e["path"] for e in info["shards"]}
        for path in sorted((root / corpus).glob("*")) if (root / corpus).is_dir() else []:
            if f"{corpus}/{path.name}" not in listed:
                problems.append(f"{corpus}/{path.name}: not listed in the manifest")
    counts = manifest["counts"]
    problems.extend(_check_id_map(root, "users", counts["users"]))
    problems.extend(_check_id_map(root, "items", counts["items"]))
    files = manifest.get("files", {})
    for split, expected in counts["interactions"].items():
        parts = sorted((root / "splits" / split).glob("part-*.parquet"))
        if not parts:
            problems.append(f"splits/{split}: no parts")
            continue
        try:
            rows = sum(_parquet_rows(p) for p in parts)
        except ValueError as err:
            problems.append(f"splits/{split}: {err}")
            continue
        if rows != expected:
            problems.append(f"splits/{split}: {rows} rows, counts say {expected}")
    for relative, info in sorted(files.items()):
        path = root / relative
        if _escapes(relative):
            problems.append(f"files: {_escapes(relative)}")
        elif not path.is_file():
            problems.append(f"{relative}: missing")
        elif sha256_file(path) != info["sha256"]:
            problems.append(f"{relative}: sha256 differs from the manifest")
    tokenizer = manifest["tokenizer"]
    if tokenizer is not None and _escapes(tokenizer):
        problems.append(f"tokenizer: {_escapes(tokenizer)}")
    elif tokenizer is not None and not (root / tokenizer).is_file():
        problems.append(f"{tokenizer}: missing")
    return problems
