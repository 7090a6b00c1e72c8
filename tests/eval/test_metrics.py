"""Recall@k / NDCG@k against a direct, loop-based transcription of the CLLM4Rec definitions."""

import math

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cllm4rec_dist.eval.metrics import MetricSums, hits_matrix, recall_ndcg


def naive(ranked: list[int], heldout: set[int], k: int) -> tuple[float, float]:
    top = ranked[:k]
    hits = [1.0 if i in heldout else 0.0 for i in top]
    recall = sum(hits) / min(k, len(heldout))
    dcg = sum(h / math.log2(pos + 2) for pos, h in enumerate(hits))
    idcg = sum(1 / math.log2(pos + 2) for pos in range(min(k, len(heldout))))
    return recall, dcg / idcg


def test_known_values():
    ranked = torch.tensor([[3, 1, 4, 0, 2]])
    hits = hits_matrix(ranked, torch.tensor([0, 2]), torch.tensor([1, 2]))
    assert hits.tolist() == [[False, True, False, False, True]]
    m = recall_ndcg(hits, torch.tensor([2]), [2, 5])
    assert m["recall@2"].item() == 0.5  # one of min(2, 2) found
    assert m["recall@5"].item() == 1.0
    expected = (1 / math.log2(3) + 1 / math.log2(6)) / (1 + 1 / math.log2(3))
    assert abs(m["ndcg@5"].item() - expected) < 1e-12


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(5, 30), st.integers(0, 10_000))
def test_matches_naive(batch, num_items, seed):
    rng = np.random.default_rng(seed)
    k_max = min(num_items, 10)
    ranked = np.stack([rng.permutation(num_items)[:k_max] for _ in range(batch)])
    heldouts = [
        set(rng.choice(num_items, rng.integers(1, 6), replace=False).tolist()) for _ in range(batch)
    ]
    offsets = torch.tensor(np.cumsum([0] + [len(h) for h in heldouts]))
    items = torch.tensor([i for h in heldouts for i in sorted(h)], dtype=torch.int64)
    ks = sorted({1, min(3, k_max), k_max})
    sums = MetricSums(ks)
    sums.add(torch.from_numpy(ranked), offsets, items)
    means = MetricSums.means_from(ks, sums.as_tensor())
    for k in ks:
        ref = [naive(ranked[b].tolist(), heldouts[b], k) for b in range(batch)]
        assert abs(means[f"recall@{k}"] - np.mean([r for r, _ in ref])) < 1e-9
        assert abs(means[f"ndcg@{k}"] - np.mean([n for _, n in ref])) < 1e-9
    assert means["users"] == batch


def test_padding_and_empty_batches():
    ranked = torch.tensor([[2, -1, -1]])
    hits = hits_matrix(ranked, torch.tensor([0, 1]), torch.tensor([2]))
    assert hits.tolist() == [[True, False, False]]
    sums = MetricSums([1])
    sums.add(
        torch.zeros(0, 3, dtype=torch.int64),
        torch.zeros(1, dtype=torch.int64),
        torch.zeros(0, dtype=torch.int64),
    )
    assert sums.users == 0
    assert math.isnan(MetricSums.means_from([1], sums.as_tensor())["recall@1"])
