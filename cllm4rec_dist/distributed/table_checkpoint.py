"""Per-rank checkpoints of ID tables and their row-wise optimizer state, reshardable on load.

Layout of a checkpoint directory::

    index.json                            {"format": 1, "world_size": W, "tables": {name: {
                                            "num_rows", "dim", "state": [keys],
                                            "files": [{"file", "row_range": [lo, hi]}]}}}
    tables-rank00000-of-00002.safetensors  "<name>/weight" [hi-lo, dim] and
                                           "<name>/state/<key>" [hi-lo, ...] for every table

Every rank writes the rows it owns (a replicated ``DenseTable`` is written by rank 0 only);
rank 0 writes ``index.json``. Loading reads, for each table, the row slices of whichever files
overlap this rank's row range, so a checkpoint saved at one world size loads at any other.
Callers synchronise (barrier) after saving, before treating the checkpoint as complete.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from cllm4rec_dist.distributed.partitioned_table import PartitionedTable, row_ranges

FORMAT = 1
INDEX = "index.json"


def _file_name(rank: int, world_size: int) -> str:
    return f"tables-rank{rank:05d}-of-{world_size:05d}.safetensors"


def _writers(table: nn.Module, world_size: int) -> list[tuple[int, tuple[int, int]]]:
    """(rank, row range) of every rank that writes ``table``."""
    if isinstance(table, PartitionedTable):
        return list(enumerate(row_ranges(table.num_rows, world_size)))
    return [(0, (0, table.num_rows))]


def _row_state(optimizer: torch.optim.Optimizer | None, weight: Tensor) -> dict[str, Tensor]:
    """Per-row optimizer state of ``weight``: every state tensor whose first dim is the rows."""
    if optimizer is None or weight not in optimizer.state:
        return {}
    state = optimizer.state[weight]
    rows = weight.shape[0]
    per_row = {
        k: v for k, v in state.items() if torch.is_tensor(v) and v.dim() and v.shape[0] == rows
    }
    if len(per_row) != len(state):
        raise ValueError(f"optimizer state {sorted(state)} is not all per-row; cannot reshard it")
    return per_row


def save_tables(
    directory: str | os.PathLike,
    tables: dict[str, nn.Module],
    optimizer: torch.optim.Optimizer | None,
    rank: int,
    world_size: int,
) -> None:
    """Write this rank's rows of every table (+ optimizer state) and, on rank 0, ``index.json``.

    tables: name -> PartitionedTable (each rank writes its block) or DenseTable (rank 0 writes it).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, Tensor] = {}
    index: dict[str, dict] = {}
    for name, table in tables.items():
        if "/" in name:
            raise ValueError(f"table name {name!r} must not contain '/'")
        state = _row_state(optimizer, table.weight)
        writers = _writers(table, world_size)
        if any(r == rank for r, _ in writers):
            tensors[f"{name}/weight"] = table.weight.detach()
            tensors.update({f"{name}/state/{k}": v.detach() for k, v in state.items()})
        index[name] = {
            "num_rows": table.num_rows,
            "dim": table.dim,
            "state": sorted(state),
            "files": [
                {"file": _file_name(r, world_size), "row_range": list(rr)} for r, rr in writers
            ],
        }
    # Write to a temporary name and rename, so a crash never leaves a truncated file behind.
    path = directory / _file_name(rank, world_size)
    tmp = path.with_suffix(".tmp")
    save_file({k: v.contiguous().cpu() for k, v in tensors.items()}, str(tmp))
    os.replace(tmp, path)
    if rank == 0:
        tmp = directory / (INDEX + ".tmp")
        tmp.write_text(
            json.dumps({"format": FORMAT, "world_size": world_size, "tables": index}, indent=1)
        )
        os.replace(tmp, directory / INDEX)


class TableCheckpointError(ValueError):
    """A table checkpoint file is missing, truncated or corrupt; the message names the file."""


def safetensors_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` is not a whole safetensors file (None if it is), from its header alone:
    the 8-byte header length, the JSON header, and the data size the header implies."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8).ljust(8, b"\0"))
            if size < 8 or length > size - 8:
                return f"{path}: truncated safetensors file ({size} bytes, header says more)"
            header = json.loads(f.read(length))
        ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, IndexError) as err:
        return f"{path}: corrupt safetensors header ({type(err).__name__}: {err})"
    if 8 + length + max(ends, default=0) != size:
        return f"{path}: truncated safetensors file ({size} bytes, header implies more)"
    return None


def read_index(directory: str | os.PathLike) -> dict:
    """The parsed ``index.json`` of a table checkpoint (TableCheckpointError naming the file)."""
    path = Path(directory) / INDEX
    try:
        index = json.loads(path.read_text())
    except FileNotFoundError:
        raise TableCheckpointError(f"{path}: missing") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise TableCheckpointError(f"{path}: truncated or corrupt ({err})") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        found = index.get("format") if isinstance(index, dict) else type(index).__name__
        raise TableCheckpointError(f"{path}: unknown table checkpoint format {found!r}")
    return index


def _read_rows(
    directory: Path, entry: dict, key: str, lo: int, hi: int
) -> list[tuple[int, Tensor]]:
    """Rows [lo, hi) of tensor ``key`` from the files of one table entry: [(first row, rows)]."""
    pieces = []
    for f in entry["files"]:
        a, b = f["row_range"]
        s, e = max(a, lo), min(b, hi)
        if s >= e:
            continue
        path = directory / f["file"]
        problem = safetensors_problem(path)
        if problem:
            raise TableCheckpointError(problem)
        try:
            with safe_open(str(path), framework="pt", device="cpu") as fh:
                pieces.append((s, fh.get_slice(key)[s - a : e - a]))
        except SafetensorError as err:
            raise TableCheckpointError(f"{path}: {key}: {err}") from None
    if sum(p.shape[0] for _, p in pieces) != hi - lo:
        raise ValueError(f"checkpoint files do not cover rows [{lo}, {hi}) of {key}")
    return pieces


def load_tables(
    directory: str | os.PathLike,
    tables: dict[str, nn.Module],
    optimizer: torch.optim.Optimizer | None = None,
) -> None:
    """Fill every table's local rows (and the optimizer's per-row state) from a checkpoint saved
    at any world size. Shapes must match; missing tables or state raise."""
    directory = Path(directory)
    index = read_index(directory)["tables"]
    for name, table in tables.items():
        if name not in index:
            raise KeyError(f"table {name!r} not in checkpoint {directory}")
        entry = index[name]
        if (entry["num_rows"], entry["dim"]) != (table.num_rows, table.dim):
            raise ValueError(
                f"table {name!r}: checkpoint has {entry['num_rows']}x{entry['dim']}, "
                f"model has {table.num_rows}x{table.dim}"
            )
        lo, hi = table.row_range
        targets = {"weight": table.weight.data}
        state = _row_state(optimizer, table.weight)
        missing = set(state) - set(entry["state"])
        if missing:
            raise KeyError(f"table {name!r}: checkpoint lacks optimizer state {sorted(missing)}")
        targets.update({f"state/{k}": v for k, v in state.items()})
        with torch.no_grad():
            for key, dst in targets.items():
                for first, rows in _read_rows(directory, entry, f"{name}/{key}", lo, hi):
                    dst[first - lo : first - lo + rows.shape[0]] = rows.to(dst.device, dst.dtype)


# Rows copied per read while exporting: the export's transient is one such block, not a table.
EXPORT_BLOCK_ROWS = 65536


def table_blocks(
    directory: str | os.PathLike,
) -> Iterator[tuple[str, tuple[int, int], Iterator[Tensor]]]:
    """Single process: each table of a checkpoint whole, as (name, (num_rows, dim), its fp32 row
    blocks in order), read from the checkpoint's pieces one block of EXPORT_BLOCK_ROWS rows at a
    time, so an export (``cllm4rec_dist/export.py``) streams a table of any size to its file."""
    directory = Path(directory)
    for name, entry in read_index(directory)["tables"].items():
        rows, dim = entry["num_rows"], entry["dim"]

        def blocks(entry=entry, name=name, rows=rows) -> Iterator[Tensor]:
            for lo in range(0, rows, EXPORT_BLOCK_ROWS):
                hi = min(rows, lo + EXPORT_BLOCK_ROWS)
                for _, piece in _read_rows(directory, entry, f"{name}/weight", lo, hi):
                    yield piece.to(torch.float32).contiguous()

        yield name, (rows, dim), blocks()


__all__ = [
    "TableCheckpointError",
    "load_tables",
    "read_index",
    "safetensors_problem",
    "save_tables",
    "table_blocks",
]
