"""Batches of one phase, read and collated off the training thread (torch DataLoader workers).

A phase's batch ``i`` is a pure function of (seed, epoch, phase index, rank, i): its rows are
rows ``[i * B, (i + 1) * B)`` of the rank's deterministic row order (``shards.iter_rows``) and
its collation draws from a generator seeded with the same tuple. So a loader started at step
``k`` yields exactly the batches a full pass yields from ``k`` on, whichever process collated
them, and resume stays exact without saving loader state.

With W workers, worker w collates the steps ``start + w, start + w + W, ...`` (it reads, but
does not collate, the rows of the others' steps); the DataLoader takes batches from the workers
in turn, so they arrive in step order. ``num_workers=0`` runs everything on the calling thread.
An error in a worker (a shard whose sha256 differs) is raised in the training process as it
was raised, not as torch's re-raise with the worker's traceback in its message, so the trainer
reports it as the one line it is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any

import numpy as np
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from cllm4rec_dist.data.shards import iter_rows


@dataclass(frozen=True)
class PhasePosition:
    """Where a phase's batch stream starts and what determines it."""

    data_dir: str
    corpus: str
    rank: int
    world_size: int
    epoch: int
    phase_index: int
    seed: int
    shuffle_buffer: int
    batch_size: int
    start_step: int
    steps: int


@dataclass(frozen=True)
class _WorkerError:
    """An error raised in a worker, sent in place of the next batch (exceptions pickle by their
    arguments: the message, not the traceback)."""

    error: Exception


class PhaseBatches(IterableDataset):
    """Collated batches ``start_step .. steps - 1`` of one phase on one rank.

    ``collate(rows, rng)`` turns a list of row dicts into a CPU batch (see data/collate.py).
    """

    def __init__(self, position: PhasePosition, collate: Callable[[list[dict], Any], Any]):
        super().__init__()
        self.position, self.collate = position, collate

    def __iter__(self) -> Iterator[Any]:
        if get_worker_info() is None:
            yield from self._batches()
            return
        try:
            yield from self._batches()
        except (ValueError, OSError) as err:  # bad data: the trainer's user errors are of these
            yield _WorkerError(err)

    def _batches(self) -> Iterator[Any]:
        p = self.position
        rows = iter_rows(
            p.data_dir,
            p.corpus,
            rank=p.rank,
            world_size=p.world_size,
            epoch=p.epoch,
            seed=p.seed,
            shuffle=True,
            shuffle_buffer=p.shuffle_buffer,
            skip=p.start_step * p.batch_size,
        )
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for step in range(p.start_step, p.steps):
            batch_rows = list(islice(rows, p.batch_size))
            if (step - p.start_step) % workers != worker:
                continue
            if len(batch_rows) < p.batch_size:
                raise RuntimeError(
                    f"{p.data_dir}: {p.corpus} ran out of rows at step {step} of {p.steps} "
                    f"on rank {p.rank} (the manifest's row counts are wrong)"
                )
            rng = np.random.default_rng([p.seed, p.epoch, p.phase_index, p.rank, step])
            yield self.collate(batch_rows, rng)


def phase_loader(
    position: PhasePosition, collate: Callable[[list[dict], Any], Any], num_workers: int
) -> Iterator[Any]:
    """The batches of a DataLoader over :class:`PhaseBatches` (already batched:
    ``batch_size=None``); a worker's error is raised here as it was raised there."""
    loader = DataLoader(
        PhaseBatches(position, collate),
        batch_size=None,
        num_workers=num_workers,
        prefetch_factor=4 if num_workers > 0 else None,
    )
    for batch in loader:
        if isinstance(batch, _WorkerError):
            raise batch.error
        yield batch


__all__ = ["PhaseBatches", "PhasePosition", "phase_loader"]
