"""Cold ids held out by data prep (split.cold_item_fraction / cold_user_fraction): what leaves
the training files, where it goes, and that every other pair keeps the split it had."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from cllm4rec_dist.data.cold import cold_ids, cold_item_texts, cold_mask, cold_user_rows
from cllm4rec_dist.data.shards import iter_rows
from data_prep.pipeline.validate import validate_dir

COLD = ["split.cold_item_fraction=0.2", "split.cold_user_fraction=0.1"]


def _pairs(data, split: str) -> set[tuple[int, int]]:
    table = pq.read_table(data / "splits" / split)
    return set(zip(table["user"].to_pylist(), table["item"].to_pylist()))


@pytest.fixture(scope="module")
def both(tmp_path_factory, prepare, tiny_overrides, tiny):
    out = tmp_path_factory.mktemp("cold")
    return tiny[0], out, prepare(out, *tiny_overrides, *COLD)


def test_cold_ids_are_a_fixed_fraction_and_seeded():
    a = cold_ids(0, 1000, 0.1, "items")
    assert len(a) == 100 and np.all(np.diff(a) > 0)
    assert np.array_equal(a, cold_ids(0, 1000, 0.1, "items"))
    assert not np.array_equal(a, cold_ids(1, 1000, 0.1, "items"))
    assert not np.array_equal(a, cold_ids(0, 1000, 0.1, "users"))
    assert cold_mask(0, 10, 0.0, "users").sum() == 0
    with pytest.raises(ValueError, match="fraction"):
        cold_ids(0, 10, 1.0, "items")


def test_cold_pairs_leave_the_training_files_and_the_rest_keep_their_split(both):
    warm, cold, manifest = both
    n_users, n_items = manifest["counts"]["users"], manifest["counts"]["items"]
    cold_items = cold_mask(0, n_items, 0.2, "items")
    cold_users = cold_mask(0, n_users, 0.1, "users")
    for split in ("train", "val", "test"):
        expected = {
            (u, i)
            for u, i in _pairs(warm, split)
            if not cold_users[u] and not (split == "train" and cold_items[i])
        }
        assert _pairs(cold, split) == expected, split
    # The cold users' pairs, every split, are in cold/users with the split they had.
    rows = {r["user"]: r for r in cold_user_rows(cold)}
    assert set(rows) == {u for u, _ in _pairs(warm, "train") if cold_users[u]}
    for split in ("train", "val", "test"):
        got = {(u, int(i)) for u, r in rows.items() for i in r[split]}
        assert got == {(u, i) for u, i in _pairs(warm, split) if cold_users[u]}, split
    # No corpus row names a cold user, no training history a cold item, no text either of them.
    for corpus, history in (("collaborative", "items"), ("recommendation", "train")):
        for row in iter_rows(cold, corpus, shuffle=False):
            assert not cold_users[row["user"]]
            assert not cold_items[np.asarray(row[history], dtype=np.int64)].any()
    texts = cold_item_texts(cold)
    described = set()
    for row in iter_rows(cold, "content", shuffle=False):
        assert row["user"] < 0 or not cold_users[row["user"]]
        assert row["item"] < 0 or not cold_items[row["item"]]
        if row["user"] < 0:
            described.add(row["item"])
    assert len(texts) and all(cold_items[texts["item"].to_numpy()])
    warm_described = {r["item"] for r in iter_rows(warm, "content", shuffle=False) if r["user"] < 0}
    assert set(texts["item"].to_pylist()) == {i for i in warm_described if cold_items[i]}
    assert described == {i for i in warm_described if not cold_items[i]}
    # The manifest counts what was held out, and nothing is reported as rejected for it.
    record = manifest["cold"]
    assert record["items"] == int(cold_items.sum()) and record["users"] == int(cold_users.sum())
    assert record["user_pairs"] == sum(
        len(r[s]) for r in rows.values() for s in ("train", "val", "test")
    )
    assert record["item_texts"] == len(texts)
    assert "k_core_filtered" not in manifest["rejected"]
    assert validate_dir(cold) == []
