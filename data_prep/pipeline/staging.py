"""Staging area: raw record batches, cleaned and hash-partitioned by user (or item) into buckets.

Layout under ``<work>/staging/<stream>/chunk-NNNNNN.arrow``: one Arrow IPC file per chunk of
input rows, holding exactly ``buckets`` record batches (batch b = the chunk's rows of bucket b,
possibly empty). A later task reads bucket b of every chunk by random access on a memory map,
so no process ever holds more than one chunk or one bucket.

Streams and their staged columns (``key`` decides the bucket):

| stream       | columns             | key  |
|--------------|---------------------|------|
| interactions | user, item          | user |
| reviews      | user, item, text    | user |
| user_texts   | user, text          | user |
| item_texts   | item, text          | item |
"""

from __future__ import annotations

import collections
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from data_prep.pipeline.hashing import bucket_of


@dataclass(frozen=True)
class Stream:
    name: str
    schema: pa.Schema
    key: str
    reason_prefix: str  # prefix of this stream's rejection reasons ("" for interactions)


_S = pa.string()
STREAMS: dict[str, Stream] = {
    s.name: s
    for s in (
        Stream("interactions", pa.schema([("user", _S), ("item", _S)]), "user", ""),
        Stream("reviews", pa.schema([("user", _S), ("item", _S), ("text", _S)]), "user", "review_"),
        Stream("user_texts", pa.schema([("user", _S), ("text", _S)]), "user", "user_text_"),
        Stream("item_texts", pa.schema([("item", _S), ("text", _S)]), "item", "item_text_"),
    )
}


class StagingArea:
    """The staged chunks of every stream under ``root``, partitioned into ``buckets``."""

    def __init__(self, root: str | os.PathLike, buckets: int):
        self.root = Path(root)
        self.buckets = buckets

    def chunk_path(self, stream: str, chunk: int) -> Path:
        return self.root / stream / f"chunk-{chunk:06d}.arrow"

    def chunks(self, stream: str) -> list[Path]:
        """Chunk files of ``stream`` in chunk order (empty list if the stream had no rows)."""
        folder = self.root / stream
        return sorted(folder.glob("chunk-*.arrow")) if folder.is_dir() else []

    def read_bucket(self, stream: str, bucket: int) -> pa.Table:
        """All staged rows of ``stream`` in ``bucket``, chunk order then row order."""
        schema = STREAMS[stream].schema
        batches = []
        for path in self.chunks(stream):
            reader = pa.ipc.open_file(pa.memory_map(str(path)))
            if reader.num_record_batches != self.buckets:
                raise RuntimeError(
                    f"{path}: {reader.num_record_batches} buckets staged, expected {self.buckets}"
                )
            batches.append(reader.get_batch(bucket))
        return pa.Table.from_batches(batches, schema=schema)


def clean_rows(
    table: pa.Table, stream: str, min_rating: float | None
) -> tuple[pa.Table, collections.Counter[str]]:
    """Drop rows with missing ids / empty text / failing the rating rule; count each reason.

    table: a reader batch (INTERACTIONS, REVIEWS, USER_TEXT or ITEM_TEXT columns) ->
    (the stream's staged columns, reason -> count). The rating rule keeps ``rating > min_rating``.
    """
    spec = STREAMS[stream]
    rejected: collections.Counter[str] = collections.Counter()
    keep = pa.array(np.ones(table.num_rows, dtype=bool))

    def drop(mask: pa.Array, reason: str) -> None:
        nonlocal keep
        bad = pc.and_(keep, pc.fill_null(mask, True))
        count = pc.sum(bad).as_py() or 0
        if count:
            rejected[spec.reason_prefix + reason] += count
            keep = pc.and_(keep, pc.invert(bad))

    for column in ("user", "item"):
        if column in spec.schema.names:
            ids = table[column]
            drop(pc.or_(pc.is_null(ids), pc.equal(pc.utf8_length(ids), 0)), f"missing_{column}")
    if "text" in spec.schema.names:
        text = pc.utf8_trim_whitespace(table["text"])
        drop(pc.or_(pc.is_null(text), pc.equal(pc.utf8_length(text), 0)), "empty_text")
    if stream == "interactions" and min_rating is not None:
        drop(pc.is_null(table["rating"]), "missing_rating")
        drop(pc.less_equal(table["rating"], min_rating), "rating_not_above_min")
    kept = table.select(spec.schema.names).filter(keep)
    return kept.cast(spec.schema), rejected


def write_chunk(area: StagingArea, stream: str, chunk: int, table: pa.Table) -> None:
    """Partition ``table`` (the stream's staged columns, no nulls) by bucket into one chunk file."""
    spec = STREAMS[stream]
    table = table.combine_chunks()
    buckets = bucket_of(table[spec.key], area.buckets)
    order = np.argsort(buckets, kind="stable")
    starts = np.searchsorted(buckets[order], np.arange(area.buckets + 1))
    arrays = [col.chunk(0) if col.num_chunks else pa.array([], _S) for col in table.columns]
    batch = pa.RecordBatch.from_arrays(arrays, schema=spec.schema).take(pa.array(order))
    path = area.chunk_path(stream, chunk)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, spec.schema) as writer:
        for b in range(area.buckets):
            writer.write_batch(batch.slice(starts[b], starts[b + 1] - starts[b]))
    tmp.replace(path)


def stage_table(
    area: StagingArea, stream: str, chunk: int, table: pa.Table, min_rating: float | None
) -> tuple[int, collections.Counter[str]]:
    """Clean ``table`` and write it as chunk ``chunk`` of ``stream``; returns (rows kept, rejected)."""
    kept, rejected = clean_rows(table, stream, min_rating)
    write_chunk(area, stream, chunk, kept)
    return kept.num_rows, rejected
