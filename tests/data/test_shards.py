"""Shard reading: rank/worker disjointness, deterministic shuffle, exact resume, row counts."""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from helpers import NUM_DOCUMENTS, NUM_USERS, document, user_items, user_splits

from cllm4rec_dist.data.manifest import load_manifest
from cllm4rec_dist.data.samples import ShardError
from cllm4rec_dist.data.shards import iter_blocks, iter_rows, rank_shards, rows_per_rank
from cllm4rec_dist.distributed.spawn import run_ranks


def users(rows) -> list[int]:
    return [row["user"] for row in rows]


def _users_on_rank(rank: int, world_size: int, data_dir: str) -> list[int]:
    # Each rank of the gloo group reads its shards as two workers would.
    kw = dict(rank=rank, world_size=world_size, seed=3, epoch=1, shuffle_buffer=4)
    return [
        row["user"]
        for w in (0, 1)
        for row in iter_rows(data_dir, "collaborative", worker_id=w, num_workers=2, **kw)
    ]


@pytest.mark.distributed
def test_two_ranks_two_workers_see_every_user_once(dataset: Path) -> None:
    results = run_ranks(_users_on_rank, 2, str(dataset), timeout=120)
    seen = Counter(u for r in results for u in r)
    assert sorted(seen) == list(range(NUM_USERS)) and set(seen.values()) == {1}
    manifest = load_manifest(dataset)
    assert [len(r) for r in results] == rows_per_rank(manifest, "collaborative", 2)


def test_rows_match_what_was_written(dataset: Path) -> None:
    collab = {r["user"]: r["items"] for r in iter_rows(dataset, "collaborative", shuffle=False)}
    assert sorted(collab) == list(range(NUM_USERS))
    for user, items in collab.items():
        assert items.dtype == np.int64 and np.array_equal(items, user_items(user))
    for row in iter_rows(dataset, "recommendation", seed=1):
        for split, items in user_splits(row["user"]).items():
            assert np.array_equal(row[split], items)
    content = list(iter_rows(dataset, "content", shuffle=False))
    assert content == [document(d) for d in range(NUM_DOCUMENTS)]


def test_blocks_are_decoded_samples(dataset: Path) -> None:
    blocks = list(iter_blocks(dataset, "content", shuffle=False))
    assert isinstance(blocks[0]["texts"], list) and blocks[0]["kinds"].dtype == np.int64
    assert sum(len(b["texts"]) for b in blocks) == NUM_DOCUMENTS


def test_same_seed_and_epoch_same_order_other_epoch_other_order(dataset: Path) -> None:
    def order(epoch: int, seed: int = 0) -> list[int]:
        return users(iter_rows(dataset, "collaborative", epoch=epoch, seed=seed, shuffle_buffer=8))

    assert order(0) == order(0)
    assert order(0) != order(1) and order(0) != order(0, seed=1)
    assert sorted(order(0)) == sorted(order(1)) == list(range(NUM_USERS))
    assert users(iter_rows(dataset, "collaborative", shuffle=False)) == list(range(NUM_USERS))


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize(("worker_id", "num_workers"), [(0, 1), (1, 2)])
def test_skip_resumes_exactly(dataset: Path, shuffle: bool, worker_id: int, num_workers: int):
    kw = dict(
        rank=0, world_size=2, epoch=2, seed=5, shuffle=shuffle, shuffle_buffer=4,
        worker_id=worker_id, num_workers=num_workers,
    )  # fmt: skip
    full = list(iter_rows(dataset, "content", **kw))
    assert full
    for skip in range(len(full) + 2):
        assert list(iter_rows(dataset, "content", skip=skip, **kw)) == full[skip:]


@pytest.mark.parametrize("world_size", [1, 2, 4, 3])
def test_rows_per_rank_matches_iteration(dataset: Path, world_size: int) -> None:
    manifest = load_manifest(dataset)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rank_shards(manifest, "content", 0, world_size)
    # 4 shards divide over 1, 2, 4 ranks; over 3 the ranks get unequal shares (warned).
    assert bool(caught) == (world_size == 3)
    for corpus in ("collaborative", "content"):
        counts = rows_per_rank(manifest, corpus, world_size)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            got = [
                len(list(iter_rows(dataset, corpus, rank=r, world_size=world_size, epoch=1)))
                for r in range(world_size)
            ]
        assert got == counts and sum(counts) == manifest.corpus(corpus).rows


def test_shard_disagreeing_with_manifest_is_an_error(dataset: Path, tmp_path: Path) -> None:
    import json
    import shutil

    d = tmp_path / "d"
    shutil.copytree(dataset, d)
    manifest = json.loads((d / "manifest.json").read_text())
    manifest["corpora"]["collaborative"]["shards"][0]["users"] = 4
    (d / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ShardError, match=r"shard-000000\.tar: has 5 rows in 2 samples"):
        list(iter_rows(d, "collaborative", shuffle=False))
