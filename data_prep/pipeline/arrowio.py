"""Small helpers for the intermediate files: Arrow IPC tables and atomic writes."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def tmp_path(path: Path) -> Path:
    """The temporary name a file is written under before being renamed to ``path``."""
    return path.with_name(path.name + ".tmp")


def write_bytes_atomic(path: Path, data: bytes, durable: bool = True) -> None:
    """Write ``data`` to ``path`` via a temporary file + rename (readers never see a partial file).

    durable: fsync before the rename, so the file also survives a machine crash.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(path)
    with open(tmp, "wb") as f:
        f.write(data)
        if durable:
            f.flush()
            os.fsync(f.fileno())
    tmp.replace(path)


def write_ipc(path: Path, table: pa.Table) -> None:
    """Write ``table`` as one Arrow IPC file (atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(path)
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    tmp.replace(path)


def read_ipc(path: Path) -> pa.Table:
    """Memory-mapped read of a file written by ``write_ipc``."""
    return pa.ipc.open_file(pa.memory_map(str(path))).read_all()


def write_parquet(path: Path, table: pa.Table) -> None:
    """Write ``table`` as Parquet (zstd, atomically). Same table in, same bytes out."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(path)
    pq.write_table(table, tmp, compression="zstd")
    tmp.replace(path)
