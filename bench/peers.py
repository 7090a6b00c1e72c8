"""The peers the benches measure ours against, each in one place."""

from __future__ import annotations

import torch
from torch import Tensor


def torch_topk(
    q: Tensor, items: Tensor, k: int, offsets: Tensor, seen: Tensor, user_block: int = 256
) -> tuple[Tensor, Tensor]:
    """Exact masked top-K the obvious way, the peer of ``ops/topk.masked_topk`` (bench_topk on
    CPU, gpu/topk_gpu on a GPU): a full fp32 score block of ``user_block`` users against every
    item, -inf at the seen items (CSR ``offsets`` / ``seen``), ``torch.topk``."""
    rows = torch.repeat_interleave(
        torch.arange(q.shape[0], device=q.device), offsets[1:] - offsets[:-1]
    )
    out_s, out_i = [], []
    for u0 in range(0, q.shape[0], user_block):
        u1 = min(q.shape[0], u0 + user_block)
        scores = q[u0:u1] @ items.T
        sel = slice(int(offsets[u0]), int(offsets[u1]))
        scores[rows[sel] - u0, seen[sel]] = float("-inf")
        s, i = torch.topk(scores, k, dim=1)
        out_s.append(s)
        out_i.append(i)
    return torch.cat(out_s), torch.cat(out_i)
