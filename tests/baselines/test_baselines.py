"""Popularity and EASE against direct numpy computations on the tiny prepared dataset."""

import numpy as np
import torch

from cllm4rec_dist.baselines.ease import ease_weights, evaluate_ease, gram, train_matrix
from cllm4rec_dist.baselines.popularity import evaluate_popularity, train_item_counts
from cllm4rec_dist.data.manifest import load_manifest
from cllm4rec_dist.data.shards import iter_rows
from cllm4rec_dist.eval.metrics import MetricSums


def _naive_metrics(data_dir, split, score_fn, ks):
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


def test_popularity_matches_naive(tiny_dataset):
    data = str(tiny_dataset)
    manifest = load_manifest(data)
    counts = train_item_counts(data, manifest.num_items)
    assert counts.sum() == manifest.counts.interactions["train"]
    got = evaluate_popularity(data, manifest, [5, 10])
    for split in ("val", "test"):
        want = _naive_metrics(data, split, lambda row: counts, [5, 10])
        for key, value in want.items():
            assert got[split][key] == np.float64(value) or abs(got[split][key] - value) < 1e-9


def test_ease_weights_and_ranking(tiny_dataset):
    data = str(tiny_dataset)
    manifest = load_manifest(data)
    x = train_matrix(data, manifest.num_users, manifest.num_items)
    g = gram(x)
    b = ease_weights(g, 10.0).astype(np.float64)
    assert np.allclose(np.diag(b), 0)
    # Closed form solves min ||X - XB||² + λ||B||² s.t. diag(B)=0: off-diagonal gradient is 0.
    grad = (g + 10.0 * np.eye(len(g))) @ b - g
    off = ~np.eye(len(g), dtype=bool)
    assert np.abs(grad[off]).max() < 1e-3 * np.abs(g).max()
    result = evaluate_ease(data, manifest, [5, 10], lambdas=(10.0,))
    xd = x.toarray()
    want = _naive_metrics(data, "test", lambda row: xd[row["user"]] @ b, [5, 10])
    for key, value in want.items():
        assert abs(result["test"][key] - value) < 1e-6
    assert result["lambda"] == 10.0
