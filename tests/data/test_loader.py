"""The phase loader yields the same batches on the training thread and in worker processes,
and a loader started at step k yields exactly the batches a whole pass yields from k on."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch

from cllm4rec_dist.data.loader import PhasePosition, phase_loader
from cllm4rec_dist.data.shards import rows_per_rank


def _collate(corpus, rows, rng):
    """Stand-in collation that depends on both the rows and the step's generator."""
    key = "items" if corpus == "collaborative" else "train"
    users = torch.tensor([int(r["user"]) for r in rows])
    lengths = torch.tensor([len(r[key]) for r in rows])
    return {"users": users, "lengths": lengths, "draw": torch.from_numpy(rng.integers(0, 1000, 4))}


def _batches(data, corpus, rank, world, start, workers):
    from cllm4rec_dist.data.manifest import load_manifest

    rows = min(rows_per_rank(load_manifest(data), corpus, world))
    position = PhasePosition(str(data), corpus, rank, world, 1, 0, 7, 5, 3, start, rows // 3)
    return list(phase_loader(position, partial(_collate, corpus), workers))


@pytest.mark.parametrize("corpus", ["collaborative", "recommendation"])
def test_workers_and_resume_give_the_same_batches(tiny_dataset, corpus):
    whole = _batches(tiny_dataset, corpus, 1, 2, 0, 0)
    assert len(whole) >= 3
    for workers in (1, 2):
        got = _batches(tiny_dataset, corpus, 1, 2, 0, workers)
        assert len(got) == len(whole)
        for a, b in zip(got, whole):
            for key in a:
                assert torch.equal(a[key], b[key])
    resumed = _batches(tiny_dataset, corpus, 1, 2, 2, 1)
    assert len(resumed) == len(whole) - 2
    for a, b in zip(resumed, whole[2:]):
        assert all(torch.equal(a[k], b[k]) for k in a)
    # Steps differ from each other (the generator is seeded per step).
    assert not np.array_equal(whole[0]["draw"].numpy(), whole[1]["draw"].numpy())
