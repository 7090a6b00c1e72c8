"""Phase 1: read the source and fill the staging area (cleaned, hash-partitioned chunks).

Raw readers iterate in the driver (they are plain iterators over local files); their batches are
coalesced into chunks of ``staging.chunk_rows`` rows and handed to Ray tasks that clean, hash and
write them, with a bounded number of chunks in flight. The synthetic source has no reader: each
Ray task generates a block of users and stages it directly.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Iterator
from typing import Any

import pyarrow as pa
import ray
from tqdm import tqdm

from data_prep import synthetic
from data_prep.pipeline.raytools import TaskWindow, cluster_cpus, run_all
from data_prep.pipeline.staging import StagingArea, stage_table

# Reader method per stream, in the order they are read: interactions first, because readers
# validate text records against the ids their interaction pass has seen.
READER_STREAMS = (
    ("interactions", "interactions"),
    ("item_texts", "item_texts"),
    ("user_texts", "user_texts"),
    ("reviews", "reviews"),
)


@ray.remote
def _stage_chunk(
    area: StagingArea, stream: str, chunk: int, table: pa.Table, min_rating: float | None
) -> tuple[int, collections.Counter[str]]:
    return stage_table(area, stream, chunk, table, min_rating)


def coalesce(batches: Iterable[pa.RecordBatch], rows: int) -> Iterator[pa.Table]:
    """Group consecutive record batches into tables of at least ``rows`` rows (the last may be
    smaller); yields nothing for an empty stream."""
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        if batch.num_rows == 0:
            continue
        pending.append(batch)
        count += batch.num_rows
        if count >= rows:
            yield pa.Table.from_batches(pending)
            pending, count = [], 0
    if pending:
        yield pa.Table.from_batches(pending)


def ingest_reader(
    reader: Any, area: StagingArea, chunk_rows: int, min_rating: float | None, progress: bool
) -> tuple[dict[str, int], collections.Counter[str]]:
    """Stage every stream of ``reader`` (a RawReader); returns (rows staged per stream, rejected).

    ``rejected`` holds this phase's reasons (missing ids, empty text, rating rule) plus the
    reader's own ``rejected`` counts.
    """
    rows: dict[str, int] = {}
    rejected: collections.Counter[str] = collections.Counter()
    area_ref = ray.put(area)
    for stream, method in READER_STREAMS:
        with tqdm(desc=f"staging {stream}", unit=" rows", disable=not progress) as bar:
            # Two chunks per CPU in flight: workers stay busy while the driver reads the next one.
            window = TaskWindow(max_in_flight=2 * cluster_cpus() + 1)
            for chunk, table in enumerate(coalesce(getattr(reader, method)(), chunk_rows)):
                window.submit(_stage_chunk.remote(area_ref, stream, chunk, table, min_rating))
                bar.update(table.num_rows)
            results = window.results()
        rows[stream] = sum(kept for kept, _ in results)
        for _, counts in results:
            rejected.update(counts)
    rejected.update(reader.rejected)
    return rows, rejected


@ray.remote
def _stage_synthetic_block(
    catalog: synthetic.Catalog,
    source_cfg: dict[str, Any],
    block: int,
    area: StagingArea,
    min_rating: float | None,
) -> tuple[dict[str, int], collections.Counter[str]]:
    tables = synthetic.generate_block(catalog, source_cfg, block)
    rows: dict[str, int] = {}
    rejected: collections.Counter[str] = collections.Counter()
    for stream, table in tables.items():
        rows[stream], counts = stage_table(area, stream, block, table, min_rating)
        rejected.update(counts)
    return rows, rejected


def ingest_synthetic(
    source_cfg: dict[str, Any], area: StagingArea, min_rating: float | None, progress: bool
) -> tuple[dict[str, int], collections.Counter[str]]:
    """Generate and stage the synthetic source block by block in Ray tasks."""
    catalog = synthetic.make_catalog(source_cfg)
    rows, rejected = collections.Counter(), collections.Counter()
    item_rows, counts = stage_table(
        area, "item_texts", 0, synthetic.item_text_table(catalog), min_rating
    )
    rows["item_texts"] += item_rows
    rejected.update(counts)
    catalog_ref = ray.put(catalog)
    refs = [
        _stage_synthetic_block.remote(catalog_ref, source_cfg, block, area, min_rating)
        for block in range(synthetic.num_blocks(source_cfg))
    ]
    for block_rows, block_rejected in run_all(refs, "generating synthetic", progress):
        rows.update(block_rows)
        rejected.update(block_rejected)
    return dict(rows), rejected
