"""The per-epoch validation's user sample (eval.val_max_users): which users it takes, and that
ranking it equals ranking those users alone, on 1 and 2 gloo ranks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cllm4rec_dist.baselines.popularity import PopularityScorer
from cllm4rec_dist.data.manifest import load_manifest
from cllm4rec_dist.data.shards import iter_rows
from cllm4rec_dist.data.splits import eval_targets, train_item_counts
from cllm4rec_dist.distributed.spawn import run_ranks
from cllm4rec_dist.eval.evaluate import evaluate_ranking, in_sample, sample_fraction
from cllm4rec_dist.eval.metrics import MetricSums

KS = [5, 10]


def test_sample_fraction_from_the_users_count():
    assert sample_fraction(1_000_000, 100_000) == 0.1
    assert sample_fraction(50_000, 100_000) == 1.0  # a smaller catalog: every user
    assert sample_fraction(1_000_000, 0) == 1.0  # 0 = all


def test_the_sample_is_uniform_and_fixed():
    users = np.arange(200_000)
    for fraction in (0.01, 0.1, 0.5):
        picked = users[in_sample(users, fraction)].tolist()
        assert abs(len(picked) / 200_000 - fraction) < 0.05 * fraction + 1e-3
        # Uniform over the index range, not a block of it: each tenth holds its share.
        tenths = np.bincount(np.asarray(picked) // 20_000, minlength=10) / 20_000
        assert np.all(np.abs(tenths - fraction) < 0.15 * fraction + 2e-3)
        assert picked == users[in_sample(users, fraction)].tolist()
        # One user at a time gives the same answer as the whole array at once.
        assert [u for u in range(2_000) if in_sample([u], fraction)[0]] == [
            u for u in picked if u < 2_000
        ]
    assert in_sample(np.arange(100), 1.0).all()


def naive_sample_metrics(data_dir, split, counts, fraction):
    """Loop over the sampled users: popularity ranking with their seen items masked."""
    sums = MetricSums(KS)
    for row in iter_rows(data_dir, "recommendation", rank=0, world_size=1, shuffle=False):
        target = np.asarray(row[split])
        if len(target) == 0 or not in_sample([row["user"]], fraction)[0]:
            continue
        seen = set(row["train"].tolist()) | (set(row["val"].tolist()) if split == "test" else set())
        order = [i for i in np.lexsort((np.arange(len(counts)), -counts)) if i not in seen]
        top = (order + [-1] * max(KS))[: max(KS)]
        sums.add(torch.tensor([top]), torch.tensor([0, len(target)]), torch.from_numpy(target))
    return MetricSums.means_from(KS, sums.as_tensor())


def _ranked(rank, world_size, data_dir, fraction):
    manifest = load_manifest(data_dir)
    scorer = PopularityScorer(train_item_counts(data_dir, manifest.num_items))
    return evaluate_ranking(
        data_dir, manifest, "val", KS, 4, eval_targets,
        lambda batch: torch.ones(batch.users.shape[0], 1), scorer, fraction,
    )  # fmt: skip


@pytest.mark.distributed
def test_ranking_the_sample_equals_ranking_those_users_alone(tiny_dataset):
    data = str(tiny_dataset)
    manifest = load_manifest(data)
    counts = train_item_counts(data, manifest.num_items).astype(np.float64)
    want = naive_sample_metrics(data, "val", counts, 0.5)
    assert 0 < want["users"] < manifest.counts.evaluated_users["val"]
    one = _ranked(0, 1, data, 0.5)
    # Batches of 4 users: the two ranks' samples differ in size, so they agree on the count.
    two = run_ranks(_ranked, 2, data, 0.5)
    for got in (one, *two):
        assert got["users"] == want["users"]
        for key, value in want.items():
            assert abs(got[key] - value) < 1e-9, key
