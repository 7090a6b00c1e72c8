"""Popularity and EASE against direct numpy computations on the tiny prepared dataset."""

import numpy as np
import pytest
import torch

from cllm4rec_dist.baselines.ease import EaseSolver, evaluate_ease, gram
from cllm4rec_dist.baselines.popularity import (
    PopularityScorer,
    evaluate_popularity,
    popularity_scorer,
)
from cllm4rec_dist.baselines.ranking import RowScorer, train_matrix
from cllm4rec_dist.data.manifest import load_manifest
from cllm4rec_dist.data.shards import iter_rows
from cllm4rec_dist.data.splits import train_item_counts
from cllm4rec_dist.eval.metrics import MetricSums
from cllm4rec_dist.ops.reference import topk_of_scores_reference


def naive_metrics(data_dir, split, score_fn, ks):
    """Loop over users: mask seen items, rank by score (ties: lower index), score the list."""
    sums = MetricSums(ks)
    for row in iter_rows(data_dir, "recommendation", rank=0, world_size=1, shuffle=False):
        target = np.asarray(row[split])
        if len(target) == 0:
            continue
        seen = set(row["train"].tolist()) | (set(row["val"].tolist()) if split == "test" else set())
        scores = score_fn(row).astype(np.float64)
        order = [i for i in np.lexsort((np.arange(len(scores)), -scores)) if i not in seen]
        top = (order + [-1] * max(ks))[: max(ks)]
        sums.add(torch.tensor([top]), torch.tensor([0, len(target)]), torch.from_numpy(target))
    return MetricSums.means_from(ks, sums.as_tensor())


def direct_ease(g: np.ndarray, lam: float) -> np.ndarray:
    """The previous implementation: one explicit inverse of G + λI per λ."""
    p = np.linalg.inv(g + lam * np.eye(g.shape[0], dtype=g.dtype))
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    return b


def test_popularity_matches_naive(tiny_dataset):
    data = str(tiny_dataset)
    manifest = load_manifest(data)
    counts = train_item_counts(data, manifest.num_items)
    assert counts.sum() == manifest.counts.interactions["train"]
    got = evaluate_popularity(data, manifest, [5, 10])
    for split in ("val", "test"):
        want = naive_metrics(data, split, lambda row: counts, [5, 10])
        for key, value in want.items():
            assert got[split][key] == np.float64(value) or abs(got[split][key] - value) < 1e-9


@pytest.mark.parametrize("k", [0, 1, 7, 30])
def test_popularity_scorer_matches_full_ranking(k):
    """The one-order scorer against the plain reference (full masked top-K over a one-column
    table): ties (counts drawn from 0..4), users excluding nothing, many, or all but a few."""
    rng = np.random.default_rng(k)
    counts = rng.integers(0, 5, size=30).astype(np.float64)
    excluded = [[], list(range(30)), list(range(3, 30)), sorted(rng.choice(30, 12, replace=False))]
    excluded += [sorted(rng.choice(30, int(rng.integers(0, 30)), replace=False)) for _ in range(20)]
    offsets = torch.tensor(np.cumsum([0] + [len(e) for e in excluded]))
    items = torch.tensor([i for e in excluded for i in e], dtype=torch.int64)
    hidden = torch.ones(len(excluded), 1)
    want = popularity_scorer(counts).topk(hidden, k, offsets, items)
    got = PopularityScorer(counts).topk(hidden, k, offsets, items)
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=0)
    assert torch.equal(got[1], want[1])
    empty = PopularityScorer(counts).topk(hidden[:0], k, offsets[:1], items[:0])
    assert empty[0].shape == empty[1].shape == (0, k)
    with pytest.raises(ValueError, match="k=31"):
        PopularityScorer(counts).topk(hidden, 31, offsets, items)


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 2e-5)])
def test_ease_cholesky_path_matches_direct_inverse(tiny_dataset, dtype, tol):
    data = str(tiny_dataset)
    manifest = load_manifest(data)
    x = train_matrix(data, manifest.num_users, manifest.num_items)
    g64 = gram(x, np.float64)
    solver = EaseSolver(gram(x, dtype))
    assert solver.dtype == dtype
    g_before = solver.g.copy()
    b = None
    for lam in (10.0, 250.0, 1.0):  # reusing the previous B's buffer each time
        previous = b
        b = solver.weights(lam, out=b)
        if previous is not None:  # LAPACK worked in the given buffer, not on a copy
            assert np.shares_memory(b, previous)
        want = direct_ease(g64, lam)
        assert b.dtype == dtype and b.flags.c_contiguous
        assert np.abs(b - want).max() <= tol * np.abs(want).max()
        assert np.all(np.diag(b) == 0)
        # min ||X - XB||² + λ||B||² s.t. diag(B)=0: the off-diagonal gradient vanishes.
        grad = (g64 + lam * np.eye(len(g64))) @ b.astype(np.float64) - g64
        off = ~np.eye(len(g64), dtype=bool)
        assert np.abs(grad[off]).max() < 10 * tol * np.abs(g64).max()
    assert np.array_equal(solver.g, g_before)  # G is kept for the next λ


def test_ease_rejects_a_matrix_that_is_not_a_gram_matrix():
    g = np.array([[1.0, 0.0], [0.0, -50.0]])
    with pytest.raises(ValueError, match="not positive definite"):
        EaseSolver(g).weights(10.0)
    with pytest.raises(ValueError, match="lambda must be > 0"):
        EaseSolver(np.eye(2)).weights(0.0)
    with pytest.raises(ValueError, match="square"):
        EaseSolver(np.ones((2, 3)))


def test_ease_ranking_matches_direct_inverse(tiny_dataset):
    data = str(tiny_dataset)
    manifest = load_manifest(data)
    x = train_matrix(data, manifest.num_users, manifest.num_items)
    xd, g = x.toarray().astype(np.float64), gram(x, np.float64)
    lambdas = (10.0, 100.0, 1000.0)
    result = evaluate_ease(data, manifest, [5, 10], lambdas=lambdas)
    val_by_lambda = {}
    for lam in lambdas:
        b = direct_ease(g, lam)
        val = naive_metrics(data, "val", lambda row, b=b: xd[row["user"]] @ b, [5, 10])
        assert abs(result["val_by_lambda"][str(lam)] - val["ndcg@10"]) < 1e-9
        val_by_lambda[lam] = val
    best = max(lambdas, key=lambda lam: val_by_lambda[lam]["ndcg@10"])
    assert result["lambda"] == best
    b = direct_ease(g, best)
    want = naive_metrics(data, "test", lambda row: xd[row["user"]] @ b, [5, 10])
    assert result["test"]["recall@10"] > 0
    for split, expect in (("val", val_by_lambda[best]), ("test", want)):
        for key, value in expect.items():
            assert abs(result[split][key] - value) < 1e-9


def test_row_scorer_ranks_with_the_model_top_k():
    """RowScorer.topk is ops/topk.masked_topk_scores over the rows it computes: the reference's
    order (heavy ties, exclusions, rows with fewer than k items), fp64 rows, fp32 scores out."""
    rng = np.random.default_rng(0)
    for trial in range(200):
        b, n = int(rng.integers(1, 9)), int(rng.integers(1, 40))
        k = int(rng.integers(0, n + 1))
        draw = rng.integers(0, 4, (b, n)) if trial % 2 else rng.standard_normal((b, n))
        scores = torch.from_numpy(draw.astype(np.float64))
        counts = rng.integers(0, n + 1, b)
        offsets = torch.from_numpy(np.concatenate([[0], np.cumsum(counts)]))
        excluded = [rng.permutation(n)[:c] for c in counts]
        items = torch.from_numpy(np.concatenate(excluded).astype(np.int64))
        got = RowScorer(lambda users, s=scores: s[users]).topk(torch.arange(b), k, offsets, items)
        want = topk_of_scores_reference(scores, k, offsets, items)
        assert torch.equal(got[1], want[1])
        assert got[0].dtype == torch.float32 and torch.equal(got[0], want[0].float())
