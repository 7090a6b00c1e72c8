"""Plain reference of the masked top-K kernel (cllm4rec_dist/ops/topk.py), for the tests."""

from __future__ import annotations

import torch
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
    """Plain version: full [B, n] fp32 scores, -inf at exclusions, stable sort, first k.

    queries [B, H], items [n, H], exclusions CSR over rows of ``items`` -> (scores [B, k] fp32
    descending, indices [B, k] int64 = item row + ``index_offset``; (-inf, -1) where fewer than k
    items are allowed). Ties: lower index first.
    """
    scores = queries.float() @ items.float().T
    scores[csr_rows(exclude_offsets), exclude_items] = NEG_INF
    if scores.shape[1] < k:
        scores = torch.cat(
            [scores, scores.new_full((scores.shape[0], k - scores.shape[1]), NEG_INF)], 1
        )
    top, idx = torch.sort(scores, dim=1, descending=True, stable=True)
    top, idx = top[:, :k], idx[:, :k]
    return top, torch.where(top == NEG_INF, -1, idx + index_offset)
