"""ID rows that start in a pretrained LM's token-embedding space (no collectives, no I/O).

A pretrained LM reads its inputs and scores its outputs in the space of its token embeddings.
Random ID rows (N(0, 0.02²): a row norm of 0.48 at 576 dims, 7x below SmolLM2's token rows)
are quiet beside the prompt's words and, as the tied item head, give near-uniform logits, so the
first epochs only move them into that space. Rows built from the LM's own embeddings of an
item's text start there, and items with similar text start close together.

Token embeddings share a large common direction, so a plain mean of many tokens is mostly that
direction and every item would look alike. A row is therefore placed like a typical token of
the catalog's text: the mean of those tokens plus the mean of the row's tokens' deviations from
it, rescaled to the typical deviation's norm. Against the tied head the common part adds the
same logit to every item, so only the deviations rank.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

# Texts whose tokens define a catalog's token space (TokenSpace.of): a bounded sample.
SPACE_SAMPLE_TEXTS = 10_000


@dataclass(frozen=True)
class TokenSpace:
    """Where a typical token sits: ``mean`` [H] of the embedding rows and the mean ``spread``
    (L2 norm) of their deviations from it."""

    mean: Tensor
    spread: float

    @classmethod
    def of(cls, embedding: Tensor, token_ids: Tensor) -> TokenSpace:
        """From the embeddings [V, H] of the tokens ``token_ids`` [n] (with repeats: a text's
        tokens, frequent ones weigh more)."""
        emb = embedding[token_ids].float()
        if not len(emb):
            raise ValueError("a token space needs at least one token")
        mean = emb.mean(0)
        return cls(mean, float((emb - mean).norm(dim=1).mean()))

    def place(self, deviations: Tensor) -> Tensor:
        """deviations [n, H] (mean deviation of each row's tokens) -> rows [n, H]: the mean plus
        the deviation rescaled to ``spread``; a zero deviation gives the mean itself."""
        lengths = deviations.norm(dim=1, keepdim=True)
        scaled = deviations * (self.spread / lengths.clamp_min(1e-12))
        return self.mean + torch.where(lengths > 0, scaled, torch.zeros_like(deviations))


def segment_mean(offsets: Tensor, rows: Tensor) -> Tensor:
    """Mean of consecutive groups of ``rows`` [nnz, H] (CSR ``offsets`` [n+1]) -> [n, H] fp32 on
    ``rows``' device; an empty group gives a zero row. Out of place, so gradients flow to
    ``rows`` (the recommendation prompt's pooled user vector, model/cllm4rec.py, uses it too)."""
    n = offsets.numel() - 1
    lengths = (offsets[1:] - offsets[:-1]).to(rows.device)
    groups = torch.repeat_interleave(torch.arange(n, device=rows.device), lengths)
    sums = rows.new_zeros(n, rows.shape[1], dtype=torch.float32).index_add(0, groups, rows.float())
    return sums / lengths.clamp(min=1).unsqueeze(1).to(sums.dtype)


def token_rows(
    token_ids: Sequence[np.ndarray], embedding: Tensor, space: TokenSpace
) -> tuple[Tensor, Tensor]:
    """A row per text from its tokens' embeddings, placed by ``space``.

    token_ids: one int64 array per text (word ids < V); embedding: [V, H].
    Returns (rows [n, H] fp32, has_text [n] bool); a text without tokens gets ``space.mean``.
    """
    lengths = torch.tensor([len(t) for t in token_ids], dtype=torch.int64)
    flat = [np.asarray(t, dtype=np.int64) for t in token_ids]
    ids = torch.from_numpy(np.concatenate(flat)) if flat else torch.zeros(0, dtype=torch.int64)
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
    deviations = segment_mean(offsets, embedding[ids].float() - space.mean)
    return space.place(deviations), lengths > 0


def mean_rows(offsets: Tensor, rows: Tensor, space: TokenSpace) -> Tensor:
    """Each CSR group of ``rows`` [nnz, H] -> one row placed by ``space`` (its members' mean
    deviation); an empty group gives ``space.mean``."""
    return space.place(segment_mean(offsets, rows.float() - space.mean))


__all__ = ["SPACE_SAMPLE_TEXTS", "TokenSpace", "mean_rows", "segment_mean", "token_rows"]
