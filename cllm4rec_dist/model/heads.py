"""Output heads: the dense item scorer (tied to the collaborative item table) and the word loss.

``DenseItemScorer`` is the single-process ``ItemScorer`` (interfaces.py) and the reference for
the item-parallel one in ``distributed/``. Logits are ``hidden @ table.weight.T`` in fp32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from cllm4rec_dist.model.sampling import ItemSampler, sampled_nll_reference
from cllm4rec_dist.model.tables import DenseTable
from cllm4rec_dist.ops.topk import csr_rows, masked_topk


class DenseItemScorer:
    """Scores hidden states against every row of a DenseTable (the item head is the table).

    A plain object, not an nn.Module: it owns no parameters, the table does. Cross-entropy and
    multinomial NLL build the full [rows, I] fp32 logits; ``topk`` is the tiled masked top-K
    kernel (``ops/topk.py``, the one the item-parallel scorer runs per shard) over item tiles
    of ``topk_chunk`` rows, so evaluation memory stays at [B, chunk] per thread plus [B, k].
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
        rows = csr_rows(target_offsets)
        picked = log_probs[rows, target_items]
        return -torch.zeros_like(log_probs[:, 0]).index_add(0, rows, picked)

    def sampled_nll(
        self, hidden: Tensor, pair_rows: Tensor, pair_items: Tensor, sampler: ItemSampler
    ) -> Tensor:
        """Sampled-softmax loss per row [N] with targets as (row, item) pairs (model/sampling.py);
        at one process the batch's targets are the global ones the sampler needs."""
        negatives = sampler.negatives(pair_items)
        return sampled_nll_reference(hidden, self.table.weight, pair_rows, pair_items, negatives)

    @torch.no_grad()
    def topk(
        self, hidden: Tensor, k: int, exclude_offsets: Tensor, exclude_items: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Exact top-k per row with the CSR ``exclude`` items masked out -> (scores [B, k] fp32
        descending, items [B, k] int64); ties: lower item index first; padding (-inf, -1)."""
        if not 0 <= k <= self.num_items:
            raise ValueError(f"k={k} must be in [0, {self.num_items}]")
        # Detached: grad mode is per thread, and the kernel's CPU threads do not inherit no_grad.
        weight, hidden = self.table.weight.detach(), hidden.detach()
        return masked_topk(
            hidden, weight, k, exclude_offsets, exclude_items, item_chunk=self.topk_chunk
        )


def word_cross_entropy(word_logits: Tensor, targets: Tensor) -> Tensor:
    """word_logits [M, V], targets [M] word ids -> per-token loss [M] (fp32)."""
    return F.cross_entropy(word_logits.float(), targets, reduction="none")


__all__ = ["DenseItemScorer", "word_cross_entropy"]
