"""End-to-end runs of the pipeline on the tiny synthetic source (one shared Ray session)."""

from __future__ import annotations

import glob
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from tokenizers import Tokenizer

from cllm4rec_dist.data.format import sha256_file
from data_prep.pipeline.split import held_out_sizes
from data_prep.pipeline.validate import validate_dir

REPO = Path(__file__).resolve().parents[2]


def shard_hashes(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every shard file on disk."""
    return {str(p.relative_to(root)): sha256_file(p) for p in sorted(root.glob("*/shard-*.tar"))}


def split_pairs(root: Path) -> dict[str, set[tuple[str, str]]]:
    """Split name -> set of (raw user id, raw item id), read through the id maps."""
    users = pq.read_table(root / "id_maps" / "users.parquet")["raw_id"].to_pylist()
    items = pq.read_table(root / "id_maps" / "items.parquet")["raw_id"].to_pylist()
    out = {}
    for split in ("train", "val", "test"):
        table = pq.read_table(root / "splits" / split)
        out[split] = {
            (users[u], items[i])
            for u, i in zip(table["user"].to_pylist(), table["item"].to_pylist())
        }
    return out


def test_manifest_fields_and_counts(tiny) -> None:
    root, manifest = tiny
    assert json.loads((root / "manifest.json").read_text()) == manifest
    assert manifest["schema_version"] == 1
    assert manifest["source"]["name"] == "synthetic" and manifest["source"]["num_users"] == 300
    assert manifest["seed"] == 0 and manifest["config"]["split"]["val_fraction"] == 0.1
    assert manifest["prompts"]["review"] == "<user> writes the following review for <item>:"
    counts = manifest["counts"]
    assert counts["users"] == 300 and counts["items"] <= 120
    for split in ("train", "val", "test"):
        assert counts["interactions"][split] == pq.read_table(root / "splits" / split).num_rows
    assert counts["documents"]["item"] == counts["items"]
    assert counts["documents"]["user"] == 300
    assert counts["evaluated_users"] == {"val": 300, "test": 300}  # every user has >= 5 items
    for corpus, info in manifest["corpora"].items():
        assert info["num_shards"] % 8 == 0 and len(info["shards"]) == info["num_shards"]
        field = "documents" if corpus == "content" else "users"
        expected = sum(counts["documents"].values()) if corpus == "content" else 300
        assert sum(s[field] for s in info["shards"]) == expected
    # Reviews of held-out pairs are rejected (and counted), never silently dropped.
    assert manifest["rejected"]["review_heldout_pair"] > 0
    # Reproducible: no wall times or absolute paths of this run in the manifest.
    text = (root / "manifest.json").read_text()
    assert str(root) not in text and "time" not in json.dumps(manifest["config"])
    assert "total" in json.loads((root / "run_log.json").read_text())["timings_s"]
    assert not (root / ".prep_work").exists()


def test_id_maps_are_sorted_and_contiguous(tiny) -> None:
    root, manifest = tiny
    for name, count in (("users", 300), ("items", manifest["counts"]["items"])):
        table = pq.read_table(root / "id_maps" / f"{name}.parquet")
        raw = table["raw_id"].to_pylist()
        assert raw == sorted(raw) and len(set(raw)) == count
        assert table["index"].to_pylist() == list(range(count))


def test_split_rule_per_user(tiny) -> None:
    root, manifest = tiny
    per_split = {
        s: pq.read_table(root / "splits" / s).to_pandas() for s in ("train", "val", "test")
    }
    sizes = {s: df.groupby("user").size().reindex(range(300), fill_value=0).to_numpy()
             for s, df in per_split.items()}  # fmt: skip
    n = sizes["train"] + sizes["val"] + sizes["test"]
    n_val, n_test = held_out_sizes(n, 0.1, 0.1, 3)
    assert np.array_equal(sizes["val"], n_val) and np.array_equal(sizes["test"], n_test)
    pairs = split_pairs(root)
    assert not (pairs["train"] & pairs["val"]) and not (pairs["val"] & pairs["test"])


def test_shards_hold_every_user_once_with_their_splits(tiny) -> None:
    root, _ = tiny
    urls = sorted(glob.glob(str(root / "recommendation" / "*.tar")))
    seen_users, rebuilt = [], {"train": set(), "val": set(), "test": set()}
    for sample in wds.WebDataset(urls, shardshuffle=False, empty_check=False).decode():
        users = sample["users.npy"]
        seen_users.extend(users.tolist())
        for split in rebuilt:
            offsets, items = sample[f"{split}_offsets.npy"], sample[f"{split}_items.npy"]
            for row, user in enumerate(users):
                rebuilt[split].update((user, i) for i in items[offsets[row] : offsets[row + 1]])
    assert sorted(seen_users) == list(range(300))
    for split, found in rebuilt.items():
        table = pq.read_table(root / "splits" / split)
        assert found == set(zip(table["user"].to_pylist(), table["item"].to_pylist()))
    # The collaborative corpus carries exactly the train items.
    collab = set()
    urls = sorted(glob.glob(str(root / "collaborative" / "*.tar")))
    for sample in wds.WebDataset(urls, shardshuffle=False, empty_check=False).decode():
        offsets, items = sample["items_offsets.npy"], sample["items.npy"]
        for row, user in enumerate(sample["users.npy"]):
            collab.update((user, i) for i in items[offsets[row] : offsets[row + 1]])
    assert collab == rebuilt["train"]


def test_content_corpus_and_tokenizer(tiny) -> None:
    root, manifest = tiny
    urls = sorted(glob.glob(str(root / "content" / "*.tar")))
    kinds = []
    for sample in wds.WebDataset(urls, shardshuffle=False, empty_check=False).decode():
        n = len(sample["kinds.npy"])
        assert (
            len(sample["users.npy"]) == len(sample["items.npy"]) == len(sample["texts.json"]) == n
        )
        kinds.extend(sample["kinds.npy"].tolist())
        reviews = sample["kinds.npy"] == 0
        assert (sample["users.npy"][reviews] >= 0).all() and (
            sample["items.npy"][reviews] >= 0
        ).all()
    assert np.bincount(kinds, minlength=3).tolist() == [
        manifest["counts"]["documents"][k] for k in ("review", "item", "user")
    ]
    tokenizer = Tokenizer.from_file(str(root / manifest["tokenizer"]))
    assert tokenizer.get_vocab_size() == 300
    assert [tokenizer.token_to_id(t) for t in ("<pad>", "<eos>", "<unk>")] == [0, 1, 2]
    text = "The description of is:"
    assert tokenizer.decode(tokenizer.encode(text).ids) == text


def test_same_seed_gives_identical_bytes(tiny, prepare, tiny_overrides, tmp_path) -> None:
    root, _ = tiny
    prepare(tmp_path, *tiny_overrides)
    assert shard_hashes(tmp_path) == shard_hashes(root)
    assert (tmp_path / "manifest.json").read_bytes() == (root / "manifest.json").read_bytes()
    assert (tmp_path / "tokenizer" / "tokenizer.json").read_bytes() == (
        root / "tokenizer" / "tokenizer.json"
    ).read_bytes()


def test_split_does_not_depend_on_blocks_or_buckets(tiny, prepare, tiny_overrides, tmp_path):
    root, _ = tiny
    prepare(tmp_path, *tiny_overrides, "source.users_per_block=512", "staging.buckets=3",
            "staging.chunk_rows=100")  # fmt: skip
    assert split_pairs(tmp_path) == split_pairs(root)


def test_crash_then_rerun_matches_an_uninterrupted_run(tiny, prepare, tiny_overrides, tmp_path):
    root, _ = tiny
    with pytest.raises(RuntimeError, match="injected failure"):
        prepare(tmp_path, *tiny_overrides, "debug.fail_after_shards=5")
    assert not (tmp_path / "manifest.json").exists()
    assert len(list(tmp_path.glob("*/shard-*.tar"))) == 5
    assert list(tmp_path.glob("*/*.tmp"))  # the crashed writers left partial temp files
    prepare(tmp_path, *tiny_overrides)
    assert json.loads((tmp_path / "run_log.json").read_text())["shards_reused"] == 5
    assert shard_hashes(tmp_path) == shard_hashes(root)
    assert (tmp_path / "manifest.json").read_bytes() == (root / "manifest.json").read_bytes()
    assert not list(tmp_path.glob("*/*.tmp"))


def test_validate_detects_corruption(tiny, tmp_path) -> None:
    root, manifest = tiny
    assert validate_dir(root) == []
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    shard = copy / manifest["corpora"]["content"]["shards"][1]["path"]
    data = bytearray(shard.read_bytes())
    data[700] ^= 0xFF
    shard.write_bytes(bytes(data))
    (copy / "id_maps" / "items.parquet").unlink()
    problems = validate_dir(copy)
    assert any("content/shard-000001.tar: sha256" in p for p in problems)
    assert any("id_maps/items.parquet: missing" in p for p in problems)
    cli = [sys.executable, str(REPO / "launchers" / "prepare.py"), "--validate"]
    bad = subprocess.run([*cli, str(copy)], capture_output=True, text=True)
    assert bad.returncode == 1 and "content/shard-000001.tar" in bad.stdout
    good = subprocess.run([*cli, str(root)], capture_output=True, text=True)
    assert good.returncode == 0, good.stdout + good.stderr
