"""Read a prepared dataset's WebDataset shards as blocks or rows, split over ranks and workers.

Splitting (WebDataset ``split_by_node`` then ``split_by_worker`` semantics):

1. shard i of a corpus belongs to rank ``i % world_size`` for every epoch, so the rows of each
   rank are known from the manifest without I/O (``rows_per_rank``). The data-prep pipeline pads
   each corpus to a multiple of ``shard_multiple`` shards; another world size still works but
   ranks then get unequal row counts (a warning says so).
2. with ``shuffle``, the rank's shard order is permuted from (seed, epoch, rank);
3. worker w of n takes every n-th shard of that order (the same order in every worker, so the
   workers' shards are disjoint and cover the rank's).

Row shuffle is a windowed shuffle: the (worker's) row stream is cut into consecutive windows of
``shuffle_buffer`` rows and each window is permuted with a generator seeded by (seed, epoch, rank,
worker, num_workers, window). Resuming at row ``skip`` therefore reads only from the window that
holds it: earlier shards are passed over using the manifest's row counts, without I/O.

Reading one shard file (tar samples, rows, checks against the manifest) is ``samples.py``'s.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from cllm4rec_dist.data.manifest import Manifest, Shard, load_manifest
from cllm4rec_dist.data.samples import ROW_BUILDERS, read_blocks, shard_rows

DEFAULT_SHUFFLE_BUFFER = 8192


# --- assignment (no I/O) -------------------------------------------------------------------------
def rank_shards(manifest: Manifest, corpus: str, rank: int, world_size: int) -> list[Shard]:
    """Shards of ``corpus`` owned by ``rank``: shard i -> rank i % world_size (manifest order).

    Warns when the shard count is not a multiple of world_size (ranks get unequal shares).
    """
    _check_split(rank, world_size, "rank", "world_size")
    shards = manifest.corpus(corpus).shards
    if len(shards) % world_size:
        warnings.warn(
            f"{corpus}: {len(shards)} shards do not divide over {world_size} ranks; ranks get "
            "unequal row counts (prepare with a shard_multiple that world_size divides)",
            stacklevel=2,
        )
    return list(shards[rank::world_size])


def rows_per_rank(manifest: Manifest, corpus: str, world_size: int) -> list[int]:
    """Rows (users, or documents for content) each rank's iterator yields, from the manifest."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [
            sum(s.rows for s in rank_shards(manifest, corpus, r, world_size))
            for r in range(world_size)
        ]


def worker_shards(
    manifest: Manifest,
    corpus: str,
    *,
    rank: int,
    world_size: int,
    epoch: int,
    seed: int,
    shuffle: bool,
    worker_id: int = 0,
    num_workers: int = 1,
) -> list[Shard]:
    """The shards one (rank, worker) reads in one epoch, in reading order."""
    _check_split(worker_id, num_workers, "worker_id", "num_workers")
    shards = rank_shards(manifest, corpus, rank, world_size)
    if shuffle:
        order = np.random.default_rng(_seed(seed, epoch, rank)).permutation(len(shards))
        shards = [shards[i] for i in order]
    return shards[worker_id::num_workers]


# --- blocks --------------------------------------------------------------------------------------
def iter_blocks(
    data_dir: str | Path,
    corpus: str,
    *,
    rank: int = 0,
    world_size: int = 1,
    epoch: int = 0,
    seed: int = 0,
    shuffle: bool = True,
    worker_id: int = 0,
    num_workers: int = 1,
) -> Iterator[dict[str, Any]]:
    """Decoded blocks (dicts of arrays / lists, see architecture.md §1) of this rank's and
    worker's shards, in shard order (blocks within a shard keep their stored order); each
    shard's sha256 is checked against the manifest's as it streams."""
    manifest = load_manifest(data_dir)
    for shard in worker_shards(
        manifest, corpus, rank=rank, world_size=world_size, epoch=epoch, seed=seed,
        shuffle=shuffle, worker_id=worker_id, num_workers=num_workers,
    ):  # fmt: skip
        yield from read_blocks(manifest.shard_path(shard), shard.sha256)


# --- rows ----------------------------------------------------------------------------------------
def _rows_from(
    manifest: Manifest, corpus: str, shards: Sequence[Shard], start: int
) -> Iterator[dict[str, Any]]:
    """Rows of ``shards`` in order from row ``start``; shards wholly before it are not opened.

    Each shard read to its end must hold exactly the rows and samples the manifest says, since
    skipping by manifest counts is only exact if they are right.
    """
    if corpus not in ROW_BUILDERS:
        raise ValueError(f"unknown corpus {corpus!r}; known: {sorted(ROW_BUILDERS)}")
    position = 0
    for shard in shards:
        if position + shard.rows > start:
            yield from shard_rows(manifest.shard_path(shard), shard, corpus, start - position)
        position += shard.rows


def iter_rows(
    data_dir: str | Path,
    corpus: str,
    *,
    rank: int = 0,
    world_size: int = 1,
    epoch: int = 0,
    seed: int = 0,
    shuffle: bool = True,
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
    skip: int = 0,
    worker_id: int = 0,
    num_workers: int = 1,
) -> Iterator[dict[str, Any]]:
    """Rows of this (rank, worker)'s shards, deterministically shuffled, from row ``skip``.

    The same (seed, epoch, rank, worker_id, num_workers, shuffle_buffer) always gives the same
    sequence, and ``skip=k`` yields exactly that sequence without its first k rows. Without
    workers a rank yields ``rows_per_rank(...)[rank]`` rows. Row dicts: see the module docstring.
    """
    if skip < 0 or shuffle_buffer < 1:
        raise ValueError(
            f"skip must be >= 0 and shuffle_buffer >= 1 (got {skip}, {shuffle_buffer})"
        )
    manifest = load_manifest(data_dir)
    shards = worker_shards(
        manifest, corpus, rank=rank, world_size=world_size, epoch=epoch, seed=seed,
        shuffle=shuffle, worker_id=worker_id, num_workers=num_workers,
    )  # fmt: skip
    if not shuffle:
        yield from _rows_from(manifest, corpus, shards, skip)
        return
    window, drop = divmod(skip, shuffle_buffer)
    rows = _rows_from(manifest, corpus, shards, window * shuffle_buffer)
    while chunk := list(islice(rows, shuffle_buffer)):
        rng = np.random.default_rng(_seed(seed, epoch, rank, worker_id, num_workers, window))
        for j in rng.permutation(len(chunk))[drop:]:
            yield chunk[j]
        window, drop = window + 1, 0


def _seed(*parts: int) -> list[int]:
    if any(p < 0 for p in parts):
        raise ValueError(f"seed, epoch, rank and worker must be non-negative, got {parts}")
    return list(parts)


def _check_split(index: int, count: int, index_name: str, count_name: str) -> None:
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"need 0 <= {index_name} < {count_name}, got {index} and {count}")
