"""Naive references for the item heads (parity of the dense / item-parallel ops).

``multinomial_nll_dense_target`` is the ORIGINAL CLLM4Rec finetuning loss: a dense multi-hot
target vector per user, ``-(log_softmax(logits) * dense_target).sum(-1)``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def full_logits(hidden: Tensor, item_weight: Tensor) -> Tensor:
    """[N, H] x [I, H] -> fp32 [N, I]."""
    return hidden.float() @ item_weight.float().T


def cross_entropy(hidden: Tensor, item_weight: Tensor, targets: Tensor) -> Tensor:
    """Per-row -log_softmax(logits)[target] -> [N]."""
    log_probs = torch.log_softmax(full_logits(hidden, item_weight), dim=-1)
    return -log_probs[torch.arange(len(targets)), targets]


def dense_targets(offsets: Tensor, items: Tensor, num_items: int) -> Tensor:
    """CSR targets -> dense multi-hot [B, I] fp32 (duplicates count twice, as in a CSR sum)."""
    dense = torch.zeros(len(offsets) - 1, num_items)
    for b in range(len(offsets) - 1):
        for j in items[offsets[b] : offsets[b + 1]].tolist():
            dense[b, j] += 1.0
    return dense


def multinomial_nll_dense_target(
    hidden: Tensor, item_weight: Tensor, dense_target: Tensor
) -> Tensor:
    """The original code's form: -(log_softmax(logits) * dense_target).sum(-1) -> [B]."""
    log_probs = torch.log_softmax(full_logits(hidden, item_weight), dim=-1)
    return -(log_probs * dense_target).sum(-1)


def topk(
    hidden: Tensor, item_weight: Tensor, k: int, exclude_offsets: Tensor, exclude_items: Tensor
) -> tuple[Tensor, Tensor]:
    """Full logits, excluded items set to -inf, then a per-row Python sort by (-score, item)."""
    logits = full_logits(hidden, item_weight)
    for b in range(logits.shape[0]):
        logits[b, exclude_items[exclude_offsets[b] : exclude_offsets[b + 1]]] = float("-inf")
    scores = torch.full((logits.shape[0], k), float("-inf"))
    items = torch.full((logits.shape[0], k), -1, dtype=torch.int64)
    for b, row in enumerate(logits.tolist()):
        ranked = sorted(range(len(row)), key=lambda j, r=row: (-r[j], j))[:k]
        for slot, j in enumerate(ranked):
            if row[j] != float("-inf"):
                scores[b, slot], items[b, slot] = row[j], j
    return scores, items


__all__ = [
    "cross_entropy",
    "dense_targets",
    "full_logits",
    "multinomial_nll_dense_target",
    "topk",
]
