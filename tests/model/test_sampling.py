"""Sampled softmax (model/sampling.py): the estimator's expectation against the full softmax,
its limit, the samplers, and the scorer wrapper."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cllm4rec_dist.data.manifest import load_manifest
from cllm4rec_dist.data.splits import train_item_counts
from cllm4rec_dist.model.heads import DenseItemScorer
from cllm4rec_dist.model.sampling import (
    ItemSampler,
    SampledSoftmaxScorer,
    resolve_kind,
    sampled_nll_reference,
    unique_pairs,
)
from cllm4rec_dist.model.tables import DenseTable


def _setup(num_items=40, dim=4, rows=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(num_items, dim, generator=gen)
    hidden = torch.randn(rows, dim, generator=gen)
    counts = torch.randint(0, 30, (num_items,), generator=gen)
    return weight, hidden, counts


def test_partition_estimate_is_unbiased_for_the_full_softmax():
    """E[sum_s exp(l_s - log(S q_s))] = Z: the mean over many steps' draws matches the full
    partition function of every row (popularity proposal, skewed counts, unseen items)."""
    weight, hidden, counts = _setup()
    logits = hidden @ weight.T
    z = logits.exp().sum(1)
    sampler = ItemSampler(counts, "popularity", num_samples=16, seed=7)
    draws = 6000
    total = torch.zeros_like(z, dtype=torch.float64)
    for step in range(draws):
        neg = sampler.negatives(torch.tensor([step]))  # each step's targets reseed the draw
        total += (logits[:, neg.items] - neg.log_correction).exp().sum(1).double()
    estimate = total / draws
    assert torch.allclose(estimate.float(), z, rtol=0.03), (estimate, z)


def test_sampled_loss_tends_to_the_full_loss_as_samples_grow():
    weight, hidden, counts = _setup(num_items=30, rows=4, seed=1)
    rows = torch.tensor([0, 0, 1, 2, 3])
    items = torch.tensor([3, 5, 29, 0, 7])
    full = DenseItemScorer(DenseTable(30, 4))
    with torch.no_grad():
        full.table.weight.copy_(weight)
    log_p = torch.log_softmax(hidden @ weight.T, dim=1)
    want = -torch.zeros(4).index_add(0, rows, log_p[rows, items])
    # The row's own targets sit in the denominator too: the sampled loss is the full loss with
    # Z replaced by ~Z + sum_t exp(l_t), slightly above it, by at most log(1 + sum_t p_t).
    bias = torch.zeros(4).index_add(0, rows, log_p[rows, items].exp())
    sampler = ItemSampler(counts, "popularity", num_samples=400_000, seed=3)
    got = full.sampled_nll(hidden, rows, items, sampler)
    count = torch.bincount(rows, minlength=4).float()
    assert bool((got >= want - 0.02).all())
    assert bool((got <= want + count * torch.log1p(bias) + 0.02).all()), (got, want)


def test_rows_without_targets_and_the_loss_floor():
    weight, hidden, counts = _setup(rows=3, seed=2)
    sampler = ItemSampler(counts, "in_batch")
    rows, items = torch.tensor([0, 0, 2]), torch.tensor([1, 1, 4])
    loss = sampled_nll_reference(hidden, weight, rows, items, sampler.negatives(items))
    assert loss[1] == 0 and bool((loss >= 0).all())
    # A target far above everything else: its term -> 0 (it is its own denominator).
    big = hidden.clone()
    big[2] = weight[4] * 50
    loss = sampled_nll_reference(big, weight, rows, items, sampler.negatives(items))
    assert 0 <= float(loss[2]) < 1e-3


def test_samplers_are_deterministic_in_the_step_targets_and_follow_their_proposal():
    counts = torch.tensor([0, 10, 30, 60])
    pop = ItemSampler(counts, "popularity", num_samples=20_000, alpha=1.0, seed=5)
    a, b = pop.negatives(torch.tensor([1, 2])), pop.negatives(torch.tensor([1, 2]))
    assert torch.equal(a.items, b.items)
    assert not torch.equal(a.items, pop.negatives(torch.tensor([2, 1])).items)
    freq = torch.bincount(a.items, minlength=4).double() / 20_000
    q = (counts + 1.0) / (counts + 1.0).sum()
    assert torch.allclose(freq, q.double(), atol=0.01)  # item 0 (never seen) stays reachable
    torch.testing.assert_close(a.log_correction, (q[a.items] * 20_000).log().float())
    inb = ItemSampler(counts, "in_batch")
    targets = torch.tensor([3, 1, 3])
    neg = inb.negatives(targets)
    assert torch.equal(neg.items, targets)
    q = counts.clamp(min=1).double()  # the clamp only keeps log q finite for unseen items
    want = (q[targets] / q.sum() * 3).log().float()
    torch.testing.assert_close(neg.log_correction, want)
    assert inb.negatives(torch.zeros(0, dtype=torch.int64)).items.numel() == 0


@pytest.mark.parametrize(
    "args,match",
    [
        ((torch.tensor([1, 2]), "uniform"), "not popularity or in_batch"),
        ((torch.tensor([1, -2]), "popularity"), "counts >= 0"),
        ((torch.zeros(0), "in_batch"), "non-empty"),
        ((torch.tensor([1, 2]), "popularity", 0), "num_samples"),
    ],
)
def test_sampler_rejects_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        ItemSampler(*args)


def test_wrapper_trains_sampled_and_ranks_exactly():
    weight, hidden, counts = _setup(num_items=20, rows=3, seed=4)
    table = DenseTable(20, 4)
    with torch.no_grad():
        table.weight.copy_(weight)
    base = DenseItemScorer(table)
    sampler = ItemSampler(counts, "popularity", num_samples=8, seed=1)
    scorer = SampledSoftmaxScorer(base, sampler)
    targets = torch.tensor([2, 7, 7])
    got = scorer.cross_entropy(hidden, targets)
    want = sampled_nll_reference(
        hidden, weight, torch.arange(3), targets, sampler.negatives(targets)
    )
    torch.testing.assert_close(got, want)
    offsets, items = torch.tensor([0, 2, 2, 3]), torch.tensor([1, 4, 9])
    got = scorer.multinomial_nll(hidden, offsets, items)
    want = sampled_nll_reference(
        hidden, weight, torch.tensor([0, 0, 2]), items, sampler.negatives(items)
    )
    torch.testing.assert_close(got, want)
    with pytest.raises(ValueError, match="target_offsets"):
        scorer.multinomial_nll(hidden, offsets[:3], items)
    ex = (torch.tensor([0, 1, 1, 3]), torch.tensor([5, 0, 1]))
    for a, b in zip(scorer.topk(hidden, 5, *ex), base.topk(hidden, 5, *ex)):
        assert torch.equal(a, b)
    assert scorer.num_items == 20 and math.isfinite(float(got.detach().sum()))


def test_train_item_counts_over_rank_shares_sum_to_the_whole(tiny_dataset):
    data = str(tiny_dataset)
    manifest = load_manifest(data)
    whole = train_item_counts(data, manifest.num_items)
    shares = sum(train_item_counts(data, manifest.num_items, rank=r, world_size=2) for r in (0, 1))
    assert np.array_equal(whole, shares) and whole.sum() == manifest.counts.interactions["train"]


def test_auto_softmax_is_full_up_to_the_threshold_then_popularity():
    assert resolve_kind("auto", 32768, 32768) == "full"
    assert resolve_kind("auto", 32769, 32768) == "popularity"
    for kind in ("full", "popularity", "in_batch"):
        assert resolve_kind(kind, 10**7, 32768) == kind  # an explicit kind is kept
    with pytest.raises(ValueError, match="'uniform' is not a valid SoftmaxKind"):
        resolve_kind("uniform", 10, 10)


def test_unique_pairs_equals_unique_rows_of_the_pair_matrix():
    gen = torch.Generator().manual_seed(0)
    rows, items = (
        torch.randint(0, 50, (400,), generator=gen),
        torch.randint(0, 7, (400,), generator=gen),
    )
    want = torch.unique(torch.stack([rows, items], 1), dim=0)
    got_rows, got_items = unique_pairs(rows, items, 7)
    assert torch.equal(torch.stack([got_rows, got_items], 1), want)
    empty = unique_pairs(rows[:0], items[:0], 7)
    assert empty[0].numel() == 0 and empty[1].numel() == 0
