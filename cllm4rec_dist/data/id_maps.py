"""A prepared dataset's id maps (``id_maps/{users,items}.parquet``: raw_id, index)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def raw_ids_by_index(data_dir: str | Path, kind: str) -> pa.Array:
    """The raw ids of ``kind`` (users | items) ordered by index: element i has index i. A fresh
    map is stored sorted by raw id (index = position), a grown one in index order (data prep
    ``id_maps_from``); either way the index must be 0..n-1 (checked)."""
    path = Path(data_dir) / "id_maps" / f"{kind}.parquet"
    table = pq.read_table(path, columns=["raw_id", "index"])
    index = table.column("index").to_numpy()
    if np.array_equal(index, np.arange(len(index))):
        return table.column("raw_id").combine_chunks()
    order = np.argsort(index, kind="stable")
    if not np.array_equal(index[order], np.arange(len(index))):
        raise ValueError(f"{path}: index is not 0..{len(index) - 1}")
    return table.column("raw_id").take(pa.array(order)).combine_chunks()
