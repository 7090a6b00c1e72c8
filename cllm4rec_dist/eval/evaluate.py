"""Distributed full-ranking evaluation: every rank ranks its own users against all items.

Each rank reads its share of the recommendation corpus; the number of batches is the same on all
ranks (ranks that run out of users pass empty batches) because scoring is collective when the item
table is partitioned. Per-user metric sums are all-reduced at the end.

A run's per-epoch validation may rank a user sample instead (``eval.val_max_users``): the users
whose index hashes below a fraction of the hash range, the same users every epoch, on any world
size and shard layout, and unrelated to how prep split or ordered them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from itertools import compress, islice
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from cllm4rec_dist.data.shards import iter_rows, rows_per_rank
from cllm4rec_dist.distributed import env
from cllm4rec_dist.distributed.comm import gather_sizes
from cllm4rec_dist.eval.metrics import MetricSums
from cllm4rec_dist.ops.hashing import mix64

if TYPE_CHECKING:
    from cllm4rec_dist.config import TrainConfig


def sample_fraction(evaluated_users: int, max_users: int) -> float:
    """Share of the users that a sample of about ``max_users`` takes (1.0: all; max_users 0 = all)."""
    if max_users <= 0 or evaluated_users <= max_users:
        return 1.0
    return max_users / evaluated_users


def in_sample(users: np.ndarray, fraction: float) -> np.ndarray:
    """bool [n]: which ``users`` (global indices) are in the hash sample of ``fraction`` of them:
    those whose SplitMix64 hash lies below that fraction of its range (consecutive indices land
    far apart, so the sample is uniform)."""
    users = np.asarray(users, dtype=np.uint64)
    if fraction >= 1.0:
        return np.ones(users.shape, dtype=bool)
    # An integer bound, so the comparison is exact: h < ceil(f * 2^64) <=> h < f * 2^64.
    return mix64(users) < np.uint64(math.ceil(fraction * 2.0**64))


def _sample_rows(rows: Iterator[dict], fraction: float, chunk: int = 4096) -> Iterator[dict]:
    """The rows of the users :func:`in_sample` keeps, hashed a chunk of rows at a time."""
    while batch := list(islice(rows, chunk)):
        yield from compress(batch, in_sample([row["user"] for row in batch], fraction))


@torch.no_grad()
def evaluate_ranking(
    data_dir: str,
    manifest: Any,
    split: str,
    ks: list[int],
    batch_size: int,
    collate_eval: Callable[[list[dict], str], Any],
    user_vectors: Callable[[Any], Tensor],
    scorer: Any,
    user_fraction: float = 1.0,
) -> dict[str, float]:
    """Recall@k / NDCG@k over all evaluated users of ``split`` ("val" or "test"), or over the
    hash sample of ``user_fraction`` of them (:func:`in_sample`).

    ``collate_eval(rows, split)`` builds a RecBatch (targets = held-out items of the split,
    exclusions = train items, plus val items for test); ``user_vectors(batch)`` gives [B, H];
    ``scorer.topk`` ranks all items with the exclusions masked.
    """
    if split not in ("val", "test"):
        raise ValueError(f"split must be 'val' or 'test', got {split!r}")
    rank, world = env.rank(), env.world_size()
    rows = iter_rows(data_dir, "recommendation", rank=rank, world_size=world, shuffle=False)
    if user_fraction < 1.0:
        # Only the sample's rows are kept; the ranks agree on the batch count from their sizes.
        kept = list(_sample_rows(rows, user_fraction))
        longest = int(gather_sizes([len(kept)], env.device()).max())
        rows = iter(kept)
    else:
        longest = max(rows_per_rank(manifest, "recommendation", world))
    n_batches = math.ceil(longest / batch_size)
    k_max = max(ks)
    # A cut-off beyond the catalog ranks every item: the list is padded with -1 (no item).
    k = min(k_max, manifest.num_items)
    sums = MetricSums(list(ks))
    for _ in range(n_batches):
        batch = collate_eval(list(islice(rows, batch_size)), split)
        _, items = scorer.topk(user_vectors(batch), k, batch.exclude_offsets, batch.exclude_items)
        if k < k_max:
            items = torch.nn.functional.pad(items.cpu(), (0, k_max - k), value=-1)
        sums.add(items.cpu(), batch.target_offsets.cpu(), batch.target_items.cpu())
    reduced = env.all_reduce_sum(sums.as_tensor())
    return MetricSums.means_from(list(ks), reduced)


def evaluate(
    built: Any, cfg: TrainConfig, split: str, user_fraction: float = 1.0
) -> dict[str, float]:
    """Evaluate the trained CLLM4Rec model held by ``built`` (see train/builder.py)."""
    built.model.eval()
    try:
        return evaluate_ranking(
            cfg.data.dir,
            built.manifest,
            split,
            list(cfg.eval.ks),
            cfg.data.eval_batch_size,
            built.collate_eval,
            built.model.user_vectors,
            built.scorer,
            user_fraction,
        )
    finally:
        built.model.train()
