"""Most-popular baseline: every user gets the items ranked by training-interaction count.

It goes through the same split, seen-item masking, top-K and metric code as CLLM4Rec. The ranking
is the same for every user but for the masked items, so :class:`PopularityScorer` sorts the items
once and gives each user the first k of that order that it does not exclude: at 1 M users x 100k
items this is the difference between hours of full-catalog ranking and seconds.
``popularity_scorer`` is the plain reference (a one-column "item table" of counts scored against
a hidden state of ones through the full masked top-K), kept for the parity test.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from cllm4rec_dist.data.splits import eval_targets, train_item_counts
from cllm4rec_dist.eval.evaluate import evaluate_ranking
from cllm4rec_dist.model.heads import DenseItemScorer
from cllm4rec_dist.model.tables import DenseTable
from cllm4rec_dist.ops.topk import NEG_INF, csr_rows


class PopularityScorer:
    """``ItemScorer.topk`` for scores that do not depend on the user (``hidden`` is ignored).

    counts [I]: the items' scores. Ties: lower item first; padding (-inf, -1) where a user
    excludes all but fewer than k items: the ``DenseItemScorer.topk`` contract.
    """

    def __init__(self, counts: np.ndarray):
        scores = torch.from_numpy(np.asarray(counts, dtype=np.float32))
        # Stable sort of -score: equal counts keep item order, so the lower item comes first.
        self.order = torch.argsort(-scores, stable=True)
        self.sorted_scores = scores[self.order]
        self.rank_of = torch.empty_like(self.order)
        self.rank_of[self.order] = torch.arange(self.order.numel())
        self.num_items = self.order.numel()

    @torch.no_grad()
    def topk(
        self, hidden: Tensor, k: int, exclude_offsets: Tensor, exclude_items: Tensor
    ) -> tuple[Tensor, Tensor]:
        if not 0 <= k <= self.num_items:
            raise ValueError(f"k={k} must be in [0, {self.num_items}]")
        b = exclude_offsets.numel() - 1
        # A user's top k lie within the first k + (its exclusions) items of the global order.
        most = int((exclude_offsets[1:] - exclude_offsets[:-1]).max()) if b else 0
        width = min(self.num_items, k + most)
        masked = torch.zeros(b, width, dtype=torch.bool)
        rows, ranks = csr_rows(exclude_offsets), self.rank_of[exclude_items]
        inside = ranks < width
        masked[rows[inside], ranks[inside]] = True
        # The j-th allowed candidate of a row goes to slot j; slots past k are dropped.
        slot = torch.cumsum(~masked, dim=1) - 1
        keep = ~masked & (slot < k)
        top_s = torch.full((b, k), NEG_INF)
        top_i = torch.full((b, k), -1, dtype=torch.int64)
        r, c = keep.nonzero(as_tuple=True)
        top_s[r, slot[r, c]] = self.sorted_scores[c]
        top_i[r, slot[r, c]] = self.order[c]
        return top_s, top_i


def popularity_scorer(counts: np.ndarray) -> DenseItemScorer:
    """The plain reference: counts as a one-column item table, ranked by the full masked top-K."""
    table = DenseTable(len(counts), 1)
    with torch.no_grad():
        table.weight.copy_(torch.from_numpy(counts.astype(np.float32)).unsqueeze(1))
    return DenseItemScorer(table)


def evaluate_popularity(
    data_dir: str, manifest: Any, ks: list[int], batch_size: int = 256, progress: bool = False
) -> dict[str, Any]:
    """{"val": metrics, "test": metrics} of the most-popular ranking (``progress``: a bar over
    the two splits)."""
    scorer = PopularityScorer(train_item_counts(data_dir, manifest.num_items))
    return {
        split: evaluate_ranking(
            data_dir,
            manifest,
            split,
            ks,
            batch_size,
            collate_eval=eval_targets,
            user_vectors=lambda batch: torch.ones(batch.users.shape[0], 1),
            scorer=scorer,
        )
        for split in tqdm(("val", "test"), desc="popularity", disable=not progress, leave=False)
    }
