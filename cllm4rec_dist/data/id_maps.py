"""A prepared dataset's id maps (``id_maps/{users,items}.parquet``: raw_id, index), and the files
of raw ids users hand in (new items' texts, new users' histories) read and mapped through them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from cllm4rec_dist.data.manifest import load_manifest


def raw_ids_by_index(data_dir: str | Path, kind: str) -> pa.Array:
    """The raw ids of ``kind`` (users | items) ordered by index: element i has index i. A fresh
    map is stored sorted by raw id (index = position), a grown one in index order (data prep
    ``id_maps_from``); either way the index must be 0..n-1 (checked)."""
    manifest = load_manifest(data_dir)  # local or remote; the file is digest-checked
    path = f"id_maps/{kind}.parquet"
    table = pq.read_table(pa.BufferReader(manifest.read_file(path)), columns=["raw_id", "index"])
    index = table.column("index").to_numpy()
    if np.array_equal(index, np.arange(len(index))):
        return table.column("raw_id").combine_chunks()
    order = np.argsort(index, kind="stable")
    if not np.array_equal(index[order], np.arange(len(index))):
        raise ValueError(f"{manifest.data_dir}/{path}: index is not 0..{len(index) - 1}")
    return table.column("raw_id").take(pa.array(order)).combine_chunks()


class IdFileError(ValueError):
    """A file of raw ids is missing or malformed, or names ids the dataset's map lacks."""


def read_id_file(path: str | Path, columns: tuple[str, ...]) -> pa.Table:
    """A Parquet or ``.csv`` file's ``columns``, as strings (raw ids are strings everywhere);
    IdFileError naming the file when it is missing, unreadable, lacks a column or has no row."""
    file = Path(path)
    if not file.exists():
        raise IdFileError(f"{file}: not found")
    try:
        if file.suffix == ".csv":
            types = {c: pa.string() for c in columns}
            table = pacsv.read_csv(file, convert_options=pacsv.ConvertOptions(column_types=types))
        else:
            table = pq.read_table(file)
    except (pa.ArrowInvalid, OSError) as err:
        raise IdFileError(
            f"{file}: not a readable {file.suffix or 'Parquet'} file ({err})"
        ) from None
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise IdFileError(f"{file}: missing column(s) {missing} (it has {table.column_names})")
    if table.num_rows == 0:
        raise IdFileError(f"{file}: no rows (columns {', '.join(columns)}, nothing below them)")
    return table.select(list(columns)).cast(pa.schema([(c, pa.string()) for c in columns]))


def indices_of(
    path: str | Path, raw: pa.ChunkedArray, data_dir: str | Path, kind: str
) -> np.ndarray:
    """int64 index of each raw id of ``kind`` (users | items) read from ``path``; an unknown or
    null id is an error naming the file, the count and the first one (new ids enter the map
    through data prep's grow step, ``id_maps_from``)."""
    index = pc.index_in(raw, value_set=raw_ids_by_index(data_dir, kind))
    bad = pc.sum(pc.is_null(index)).as_py() or 0
    if bad:
        first = raw.filter(pc.is_null(index))[0].as_py()
        raise IdFileError(
            f"{path}: {bad} {kind[:-1]} id(s) not in the dataset's id map (first: {first!r}); "
            "add them with data prep's id_maps_from (the grow step) first"
        )
    return index.to_numpy().astype(np.int64)
