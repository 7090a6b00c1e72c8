"""Contiguous ID maps: index = rank of the raw id in sorted (UTF-8 byte) order, or, for a catalog
that grows (``id_maps_from``), the old map's indices followed by the new ids in sorted order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from data_prep.pipeline.arrowio import write_parquet


def assign_user_indices(bucket_users: list[pa.Array]) -> tuple[pa.Array, list[np.ndarray]]:
    """Global indices of users reported per bucket (each bucket's list sorted, buckets disjoint).

    Returns (all raw ids sorted [U], per bucket int64 [n_b] index of each of its users).
    One sort of the concatenation; each user's rank in it is its index.
    """
    everything = pa.concat_arrays(bucket_users) if bucket_users else pa.array([], pa.string())
    order = pc.sort_indices(everything).to_numpy()
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order), dtype=np.int64)
    ordered = everything.take(pa.array(order))
    if len(ordered) > 1 and pc.any(pc.equal(ordered[1:], ordered[:-1])).as_py():
        raise RuntimeError("a user id was reported by two buckets; the staging hash is broken")
    bounds = np.cumsum([0] + [len(u) for u in bucket_users])
    return ordered, [rank[bounds[b] : bounds[b + 1]] for b in range(len(bucket_users))]


def write_id_map(path: Path, raw_ids: pa.Array) -> None:
    """Write the map of sorted ``raw_ids`` [n]: columns raw_id (string), index (int64 0..n-1)."""
    table = pa.table(
        {"raw_id": raw_ids.cast(pa.string()), "index": pa.array(np.arange(len(raw_ids)))}
    )
    write_parquet(path, table)


def grow_map(old_ids: pa.Array, present: pa.Array) -> tuple[pa.Array, np.ndarray, pa.Array]:
    """Extend the old map (``old_ids``: raw ids in index order) with the ids of ``present``
    (sorted) that it lacks, appended in sorted order after the old ones.

    Returns (every raw id sorted, the index of each of them, raw ids in index order): the first
    two feed the sorted-lookup ``_map_ids`` of finalize, the last is what is written. Old ids
    keep their index even when absent from ``present`` (their table rows stay reserved)."""
    old_ids = old_ids.cast(pa.string())
    present = present.cast(pa.string())
    new = present.filter(pc.invert(pc.is_in(present, value_set=old_ids)))
    by_index = pa.concat_arrays([old_ids, new])
    order = pc.sort_indices(by_index).to_numpy()
    return by_index.take(pa.array(order)), order.astype(np.int64), by_index


def write_grown_map(path: Path, by_index: pa.Array) -> None:
    """Write a grown map: ``by_index[i]`` has index i (not sorted: old ids first)."""
    table = pa.table(
        {"raw_id": by_index.cast(pa.string()), "index": pa.array(np.arange(len(by_index)))}
    )
    write_parquet(path, table)
