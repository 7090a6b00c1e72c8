"""Output heads: the dense item scorer (tied to the collaborative item table) and the word loss.

``DenseItemScorer`` is the single-process ``ItemScorer`` (interfaces.py) and the reference for
the item-parallel one in ``distributed/``. Logits are ``hidden @ table.weight.T`` in fp32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from cllm4rec_dist.model.tables import DenseTable


class DenseItemScorer:
    """Scores hidden states against every row of a DenseTable (the item head is the table).

    A plain object, not an nn.Module: it owns no parameters, the table does. Cross-entropy and
    multinomial NLL build the full [rows, I] fp32 logits; ``topk`` walks the items in chunks of
    ``topk_chunk`` so evaluation memory stays at [B, chunk + k].
    """

    def __init__(self, table: DenseTable, topk_chunk: int = 65536):
        if topk_chunk < 1:
            raise ValueError("topk_chunk must be >= 1")
        self.table, self.topk_chunk = table, topk_chunk

    @property
    def num_items(self) -> int:
        return self.table.num_rows

    def logits(self, hidden: Tensor) -> Tensor:
        """hidden [N, H] (any float dtype) -> fp32 logits [N, I]."""
        return hidden.float() @ self.table.weight.float().T

    def cross_entropy(self, hidden: Tensor, targets: Tensor) -> Tensor:
        """hidden [N, H], targets [N] item indices -> per-row loss [N] (fp32)."""
        return F.cross_entropy(self.logits(hidden), targets, reduction="none")

    def multinomial_nll(
        self, hidden: Tensor, target_offsets: Tensor, target_items: Tensor
    ) -> Tensor:
        """hidden [B, H]; CSR targets (offsets [B+1], items [nnz]) -> per-row loss [B] =
        -sum_{j in targets(b)} log softmax(logits_b)[j], from the log-softmax at the nnz target
        entries only (no dense [B, I] target)."""
        log_probs = torch.log_softmax(self.logits(hidden), dim=-1)
        rows = _csr_rows(target_offsets)
        picked = log_probs[rows, target_items]
        return -torch.zeros_like(log_probs[:, 0]).index_add(0, rows, picked)

    @torch.no_grad()
    def topk(
        self, hidden: Tensor, k: int, exclude_offsets: Tensor, exclude_items: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Exact top-k per row with the CSR ``exclude`` items masked out -> (scores [B, k] fp32
        descending, items [B, k] int64); ties: lower item index first; padding (-inf, -1)."""
        if not 0 <= k <= self.num_items:
            raise ValueError(f"k={k} must be in [0, {self.num_items}]")
        rows, h = _csr_rows(exclude_offsets), hidden.float()
        weight = self.table.weight
        best_s = h.new_empty(h.shape[0], 0)
        best_i = torch.empty(h.shape[0], 0, dtype=torch.int64, device=h.device)
        for lo in range(0, self.num_items, self.topk_chunk):
            hi = min(lo + self.topk_chunk, self.num_items)
            scores = h @ weight[lo:hi].float().T
            sel = (exclude_items >= lo) & (exclude_items < hi)
            scores[rows[sel], exclude_items[sel] - lo] = float("-inf")
            items = torch.arange(lo, hi, device=h.device).expand_as(scores)
            best_s, best_i = merge_topk(best_s, best_i, scores, items, k)
        best_i = best_i.masked_fill(best_s == float("-inf"), -1)
        return best_s, best_i


def merge_topk(
    scores_a: Tensor, items_a: Tensor, scores_b: Tensor, items_b: Tensor, k: int
) -> tuple[Tensor, Tensor]:
    """Top-k of the union of two candidate sets per row, ties broken by lower item index.

    Requires that every item in ``a`` is lower than every item in ``b``, that ``a`` is already
    ordered (score descending, item ascending among equal scores) and ``b`` is in ascending item
    order: a STABLE descending sort of ``[a, b]`` then yields the exact tie order (torch.topk
    promises none). [B, ka], [B, kb] -> [B, min(k, ka + kb)].
    """
    scores = torch.cat([scores_a, scores_b], dim=1)
    items = torch.cat([items_a, items_b], dim=1)
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
    return scores.gather(1, order), items.gather(1, order)


def word_cross_entropy(word_logits: Tensor, targets: Tensor) -> Tensor:
    """word_logits [M, V], targets [M] word ids -> per-token loss [M] (fp32)."""
    return F.cross_entropy(word_logits.float(), targets, reduction="none")


def _csr_rows(offsets: Tensor) -> Tensor:
    """CSR offsets [B+1] -> row index of every entry [nnz] int64."""
    counts = offsets[1:] - offsets[:-1]
    return torch.repeat_interleave(torch.arange(counts.numel(), device=offsets.device), counts)


__all__ = ["DenseItemScorer", "merge_topk", "word_cross_entropy"]
