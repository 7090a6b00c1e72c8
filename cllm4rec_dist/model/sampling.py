"""Sampled softmax for the item losses: popularity-sampled or in-batch negatives with logQ.

The full softmax over I items costs a [rows, I] product per step and a gradient on every item
row. With a candidate set C of S items drawn with replacement from a proposal q (popularity, or
the batch's own targets, which are drawn from the interaction distribution), each corrected
logit ``l_j - log(S q_j)`` makes

    Ẑ_r = sum_{s in C} exp(l_rs - log(S q_s)),    E[Ẑ_r] = sum_j exp(l_rj) = Z_r

an unbiased estimate of the partition function. The loss of row r with targets T(r) is the
full one with Z_r replaced by

    D_r = sum_{t in T(r)} exp(l_rt) + sum_{s in C, s not in T(r)} exp(l_rs - log(S q_s)):

the row's own targets enter once, exactly, and candidates that hit one of them ("accidental
hits") are dropped, so E[D_r] = Z_r still holds (the parity test checks this expectation
against the full softmax), the loss stays >= 0, and a target that was not sampled cannot be
pushed to infinity. Listed twice, a target counts twice in the loss, as in the full softmax.

Negatives are a function of the run seed and the step's global targets only: every rank draws
the same ones without communication, and a resumed run draws what the uninterrupted one did.
Evaluation never samples: ``SampledSoftmaxScorer.topk`` is the wrapped scorer's exact top-K.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import torch
from torch import Tensor

from cllm4rec_dist.ops.topk import csr_rows


class SoftmaxKind(StrEnum):
    """``softmax.kind``: the item losses' softmax in training (evaluation ranks exactly)."""

    auto = "auto"  # full or popularity, from the catalog's size (resolve_kind)
    full = "full"
    popularity = "popularity"
    in_batch = "in_batch"


_MIX = 0x9E3779B97F4A7C15  # odd 64-bit constant (golden ratio): spreads targets into the seed


@dataclass
class Negatives:
    """Candidates shared by every row of a step: global item ids [S] and log(S q) [S]."""

    items: Tensor
    log_correction: Tensor


class ItemSampler:
    """Draws the negatives of one step from the items' training counts [I].

    popularity: ``num_samples`` draws from q ∝ (count + 1)^alpha (the +1 keeps unseen items
    reachable; alpha < 1 flattens the head, as word2vec's 0.75 does);
    in_batch: the step's global target items themselves, q ∝ count (the distribution they are
    drawn from), so no extra rows are read.
    """

    def __init__(
        self,
        counts: Tensor,
        kind: SoftmaxKind,
        num_samples: int = 8192,
        alpha: float = 0.75,
        seed: int = 0,
    ):
        if kind not in (SoftmaxKind.popularity, SoftmaxKind.in_batch):
            raise ValueError(f"sampler kind {kind!r} is not popularity or in_batch")
        if counts.dim() != 1 or counts.numel() == 0 or bool((counts < 0).any()):
            raise ValueError("item counts must be a non-empty 1-D tensor of counts >= 0")
        if kind == SoftmaxKind.popularity and num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        self.kind, self.num_samples, self.seed = SoftmaxKind(kind), int(num_samples), int(seed)
        c = counts.to(torch.float64)
        if kind == SoftmaxKind.popularity:
            q = (c + 1.0).pow(alpha)
            self.cdf = torch.cumsum(q, 0)
        else:
            q = c.clamp(min=1.0)  # a target has count >= 1; the clamp only avoids log(0)
        self.log_q = (q / q.sum()).log()

    def negatives(self, batch_targets: Tensor) -> Negatives:
        """Negatives for a step whose targets over ALL ranks are ``batch_targets`` [T]."""
        targets = batch_targets.reshape(-1).to(torch.int64)
        if self.kind == SoftmaxKind.in_batch:
            items = targets
        else:
            gen = torch.Generator().manual_seed(_step_seed(self.seed, targets))
            u = torch.rand(self.num_samples, generator=gen, dtype=torch.float64) * self.cdf[-1]
            items = torch.searchsorted(self.cdf, u, right=True).clamp_(max=self.cdf.numel() - 1)
        n = max(items.numel(), 1)
        return Negatives(items, (self.log_q[items.cpu()] + math.log(n)).float())


def resolve_kind(kind: SoftmaxKind, num_items: int, full_max_items: int) -> SoftmaxKind:
    """The softmax a run uses (never ``auto``). ``auto``: the exact full softmax on catalogs of at
    most ``full_max_items`` items, where the head is a small part of the step (every catalog the
    recipe was tuned on, docs/results.md), and popularity-sampled negatives above, where the
    full head's cost, linear in the catalog, bounds the step (docs/model.md, "Sampled softmax")."""
    if kind != SoftmaxKind.auto:
        return SoftmaxKind(kind)
    return SoftmaxKind.full if num_items <= full_max_items else SoftmaxKind.popularity


def unique_pairs(rows: Tensor, items: Tensor, num_items: int) -> tuple[Tensor, Tensor]:
    """The distinct (row, item) pairs, sorted by row then item, as (rows, items). One int64 key
    per pair: ``torch.unique(dim=0)`` compares rows one by one in Python-level loops (a tenth of
    a sampled step at 2,000 pairs)."""
    keys = torch.unique(rows.to(torch.int64) * num_items + items.to(torch.int64))
    return keys.div(num_items, rounding_mode="floor"), keys.remainder(num_items)


def _step_seed(seed: int, targets: Tensor) -> int:
    """A 63-bit seed from the run seed and the step's targets (their order included)."""
    weights = torch.arange(1, targets.numel() + 1, dtype=torch.int64)
    mixed = int((targets.cpu() * weights).sum()) if targets.numel() else 0
    return (seed * _MIX + mixed * 2654435761 + targets.numel()) % (1 << 63)


def sampled_nll_reference(
    hidden: Tensor, weight: Tensor, pair_rows: Tensor, pair_items: Tensor, negatives: Negatives
) -> Tensor:
    """Plain autograd form (the parity reference): per-row loss [N] =
    sum_{t in T(r)} (log D_r - l_rt) with D_r of the module doc. hidden [N, H], weight [I, H];
    targets as (row, item) pairs [P]; rows without targets give 0."""
    h, n = hidden.float(), hidden.shape[0]
    cand = h @ weight[negatives.items].float().T - negatives.log_correction.to(h.device)
    same = (pair_items.unsqueeze(1) == negatives.items.unsqueeze(0)).to(torch.int64)  # [P, S]
    hit = torch.zeros(cand.shape, dtype=torch.int64, device=h.device).index_add(0, pair_rows, same)
    cand = cand.masked_fill(hit > 0, float("-inf"))
    # Each distinct (row, target) once in the denominator, -inf padded to [N, S + P].
    u_rows, u_items = unique_pairs(pair_rows, pair_items, weight.shape[0])
    own = torch.full((n, u_rows.numel()), float("-inf"), dtype=h.dtype, device=h.device)
    u_logits = (h[u_rows] * weight[u_items].float()).sum(1)
    own = own.index_put((u_rows, torch.arange(u_rows.numel(), device=h.device)), u_logits)
    lse = torch.logsumexp(torch.cat([cand, own], dim=1), dim=1)
    tl = (h[pair_rows] * weight[pair_items].float()).sum(1)
    count = torch.bincount(pair_rows, minlength=n).to(h.dtype)
    target_sum = torch.zeros(n, dtype=h.dtype, device=h.device).index_add(0, pair_rows, tl)
    return torch.where(count > 0, count * lse - target_sum, torch.zeros_like(lse))


class SampledSoftmaxScorer:
    """``ItemScorer`` whose training losses use sampled softmax; ``topk`` stays exact.

    ``base`` is a scorer with ``sampled_nll(hidden, pair_rows, pair_items, sampler)`` (the dense
    one, or the item-parallel one, which gathers every rank's targets for in-batch negatives).
    """

    def __init__(self, base, sampler: ItemSampler):
        self.base, self.sampler = base, sampler

    @property
    def num_items(self) -> int:
        return self.base.num_items

    def cross_entropy(self, hidden: Tensor, targets: Tensor) -> Tensor:
        rows = torch.arange(targets.numel(), device=hidden.device)
        return self.base.sampled_nll(hidden, rows, targets.reshape(-1), self.sampler)

    def multinomial_nll(
        self, hidden: Tensor, target_offsets: Tensor, target_items: Tensor
    ) -> Tensor:
        if target_offsets.numel() != hidden.shape[0] + 1:
            raise ValueError(f"target_offsets must have {hidden.shape[0] + 1} entries")
        rows = csr_rows(target_offsets.to(hidden.device))
        return self.base.sampled_nll(hidden, rows, target_items, self.sampler)

    @torch.no_grad()
    def topk(
        self, hidden: Tensor, k: int, exclude_offsets: Tensor, exclude_items: Tensor
    ) -> tuple[Tensor, Tensor]:
        return self.base.topk(hidden, k, exclude_offsets, exclude_items)


__all__ = [
    "ItemSampler",
    "Negatives",
    "SampledSoftmaxScorer",
    "SoftmaxKind",
    "resolve_kind",
    "sampled_nll_reference",
    "unique_pairs",
]
