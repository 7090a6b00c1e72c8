"""What the score-matrix baselines (EASE, Mult-VAE) share: the training matrix, and a scorer with
the ``ItemScorer.topk`` contract over score rows computed per batch of users, ranked by the
model's own masked top-K (``ops/topk.masked_topk_scores``).

Both rankers produce a full [B, I] score row per user from the user's sparse training row (EASE:
``X_u B``, Mult-VAE: the decoder's logits), so the scorer takes user ids instead of hidden
states, and evaluation still goes through ``evaluate_ranking`` with the shared split rule
(``eval_targets``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from cllm4rec_dist.data.shards import iter_rows
from cllm4rec_dist.data.splits import EvalTargets, eval_targets
from cllm4rec_dist.eval.evaluate import evaluate_ranking
from cllm4rec_dist.ops.topk import masked_topk_scores


def train_matrix(data_dir: str, num_users: int, num_items: int) -> sp.csr_matrix:
    """Binary [U, I] float32 training interactions (one pass over the recommendation corpus)."""
    users, items = [], []
    for row in iter_rows(data_dir, "recommendation", rank=0, world_size=1, shuffle=False):
        train = np.asarray(row["train"], dtype=np.int64)
        users.append(np.full(len(train), int(row["user"]), dtype=np.int64))
        items.append(train)
    u = np.concatenate(users) if users else np.zeros(0, np.int64)
    i = np.concatenate(items) if items else np.zeros(0, np.int64)
    x = sp.csr_matrix((np.ones(len(u), np.float32), (u, i)), shape=(num_users, num_items))
    x.data[:] = 1.0  # duplicates summed by the constructor count once
    return x


class RowScorer:
    """``ItemScorer.topk`` (model/interfaces.py) over scores computed per batch of users.

    ``score_rows(users [B] int64)`` returns their scores for all items, [B, I] (fp32 or fp64:
    ranked in that precision, returned as fp32). ``topk``'s ``hidden`` is the batch's user ids,
    which is what ``evaluate_rows`` hands it.
    """

    def __init__(self, score_rows: Callable[[Tensor], Tensor]):
        self.score_rows = score_rows

    @torch.no_grad()
    def topk(
        self, users: Tensor, k: int, exclude_offsets: Tensor, exclude_items: Tensor
    ) -> tuple[Tensor, Tensor]:
        scores, items = masked_topk_scores(
            self.score_rows(users), k, exclude_offsets, exclude_items
        )
        return scores.float(), items


def sparse_row_scorer(x: sp.csr_matrix, w: np.ndarray) -> RowScorer:
    """Scores ``X_u W`` for item-item weights ``w`` [I, I] (C-contiguous), a sparse-times-dense
    product per batch: nnz(X_u) rows of ``w`` read per user instead of a dense [B, I] @ [I, I]."""

    def score_rows(users: Tensor) -> Tensor:
        return torch.from_numpy(np.asarray(x[users.numpy()] @ w))

    return RowScorer(score_rows)


def evaluate_rows(
    data_dir: str, manifest: Any, split: str, ks: list[int], batch_size: int, scorer: RowScorer
) -> dict[str, float]:
    """``evaluate_ranking`` with the shared split rule, handing ``scorer`` the batch's user ids."""

    def user_ids(batch: EvalTargets) -> Tensor:
        return batch.users

    return evaluate_ranking(
        data_dir, manifest, split, ks, batch_size, eval_targets, user_ids, scorer
    )
