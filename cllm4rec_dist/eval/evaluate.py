"""Distributed full-ranking evaluation: every rank ranks its own users against all items.

Each rank reads its share of the recommendation corpus; the number of batches is the same on all
ranks (ranks that run out of users pass empty batches) because scoring is collective when the item
table is partitioned. Per-user metric sums are all-reduced at the end.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from itertools import islice
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from cllm4rec_dist.data.shards import iter_rows, rows_per_rank
from cllm4rec_dist.distributed import env
from cllm4rec_dist.eval.metrics import MetricSums

if TYPE_CHECKING:
    from cllm4rec_dist.config import TrainConfig


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
) -> dict[str, float]:
    """Recall@k / NDCG@k over all evaluated users of ``split`` ("val" or "test").

    ``collate_eval(rows, split)`` builds a RecBatch (targets = held-out items of the split,
    exclusions = train items, plus val items for test); ``user_vectors(batch)`` gives [B, H];
    ``scorer.topk`` ranks all items with the exclusions masked.
    """
    if split not in ("val", "test"):
        raise ValueError(f"split must be 'val' or 'test', got {split!r}")
    rank, world = env.rank(), env.world_size()
    n_batches = math.ceil(max(rows_per_rank(manifest, "recommendation", world)) / batch_size)
    k_max = max(ks)
    # A cut-off beyond the catalog ranks every item: the list is padded with -1 (no item).
    k = min(k_max, manifest.num_items)
    rows = iter_rows(data_dir, "recommendation", rank=rank, world_size=world, shuffle=False)
    sums = MetricSums(list(ks))
    for _ in range(n_batches):
        batch = collate_eval(list(islice(rows, batch_size)), split)
        _, items = scorer.topk(user_vectors(batch), k, batch.exclude_offsets, batch.exclude_items)
        if k < k_max:
            items = torch.nn.functional.pad(items.cpu(), (0, k_max - k), value=-1)
        sums.add(items.cpu(), batch.target_offsets.cpu(), batch.target_items.cpu())
    reduced = env.all_reduce_sum(sums.as_tensor())
    return MetricSums.means_from(list(ks), reduced)


def evaluate(built: Any, cfg: TrainConfig, split: str) -> dict[str, float]:
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
        )
    finally:
        built.model.train()
