"""Plain references of the optimised and sharded ops, kept beside them for the parity tests.

Each computes the whole ``[B, I]`` score matrix at once, the obvious way, in the inputs' dtype
(fp64 inputs give an fp64 reference). The ops they check: the masked top-K kernel
(``ops/topk.py``), the dense and item-parallel item heads (``model/heads.py``,
``distributed/item_parallel.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from cllm4rec_dist.ops.topk import NEG_INF, csr_rows


def masked_topk_reference(
    queries: Tensor,
    items: Tensor,
    k: int,
    exclude_offsets: Tensor,
    exclude_items: Tensor,
    index_offset: int = 0,
) -> tuple[Tensor, Tensor]:
    """``masked_topk``'s contract the plain way: full [B, n] fp32 scores, -inf at the
    exclusions, a stable descending sort, the first k.

    queries [B, H], items [n, H], exclusions CSR over rows of ``items`` -> (scores [B, k] fp32
    descending, indices [B, k] int64 = item row + ``index_offset``; (-inf, -1) where fewer than k
    items are allowed). Ties: lower index first.
    """
    scores = queries.float() @ items.float().T
    return topk_of_scores_reference(scores, k, exclude_offsets, exclude_items, index_offset)


def topk_of_scores_reference(
    scores: Tensor, k: int, exclude_offsets: Tensor, exclude_items: Tensor, index_offset: int = 0
) -> tuple[Tensor, Tensor]:
    """``masked_topk_scores``'s contract the plain way, on score rows ``scores`` [B, n] (not
    modified), ranked in their dtype."""
    scores = scores.clone()
    scores[csr_rows(exclude_offsets), exclude_items] = NEG_INF
    if scores.shape[1] < k:
        scores = torch.cat(
            [scores, scores.new_full((scores.shape[0], k - scores.shape[1]), NEG_INF)], 1
        )
    top, idx = torch.sort(scores, dim=1, descending=True, stable=True)
    top, idx = top[:, :k], idx[:, :k]
    return top, torch.where(top == NEG_INF, -1, idx + index_offset)


def cross_entropy_reference(hidden: Tensor, items: Tensor, targets: Tensor) -> Tensor:
    """hidden [N, H], items [I, H], targets [N] -> [N] = -log softmax(hidden @ items.T)[target]."""
    return F.cross_entropy(hidden @ items.T, targets, reduction="none")


def multinomial_nll_reference(
    hidden: Tensor, items: Tensor, offsets: Tensor, targets: Tensor
) -> Tensor:
    """hidden [B, H], items [I, H], CSR targets -> [B] = -sum_{j in targets(b)} log softmax_bj."""
    logp = torch.log_softmax(hidden @ items.T, dim=1)
    rows = csr_rows(offsets)
    return torch.zeros(hidden.shape[0], dtype=logp.dtype).index_add(0, rows, -logp[rows, targets])


def dense_targets(offsets: Tensor, items: Tensor, num_items: int) -> Tensor:
    """CSR targets -> dense multi-hot [B, I] fp32 (duplicates count twice, as in a CSR sum)."""
    dense = torch.zeros(len(offsets) - 1, num_items)
    dense.index_put_((csr_rows(offsets), items), torch.ones(items.numel()), accumulate=True)
    return dense


def multinomial_nll_dense_target(hidden: Tensor, items: Tensor, dense_target: Tensor) -> Tensor:
    """The ORIGINAL CLLM4Rec finetuning loss, a dense multi-hot target per user:
    ``-(log_softmax(hidden @ items.T) * dense_target).sum(-1)`` -> [B]."""
    return -(torch.log_softmax(hidden @ items.T, dim=-1) * dense_target).sum(-1)


__all__ = [
    "cross_entropy_reference",
    "dense_targets",
    "masked_topk_reference",
    "multinomial_nll_dense_target",
    "multinomial_nll_reference",
    "topk_of_scores_reference",
]
