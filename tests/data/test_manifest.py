"""load_manifest's typed view and errors; verify_shards' integrity checks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import NUM_DOCUMENTS, NUM_ITEMS, NUM_SHARDS, NUM_USERS, write_dataset

from cllm4rec_dist.data.manifest import ManifestError, load_manifest
from cllm4rec_dist.data.samples import verify_shards


def test_typed_view(dataset: Path) -> None:
    m = load_manifest(dataset)
    assert (m.num_users, m.num_items) == (NUM_USERS, NUM_ITEMS)
    assert m.prompts["collaborative"] == "<user> has interacted with"
    assert m.data_dir == str(dataset.resolve()) and m.tokenizer == "tokenizer/tokenizer.json"
    assert m.counts.interactions == {"train": 60, "val": 11, "test": 23}
    content = m.corpus("content")
    assert content.num_shards == NUM_SHARDS and content.rows == NUM_DOCUMENTS
    assert m.corpus("collaborative").shards[0].path == "collaborative/shard-000000.tar"
    with pytest.raises(ManifestError, match=r"no corpus 'reviews' under 'corpora'"):
        m.corpus("reviews")


def edited(src: Path, dst: Path, edit) -> Path:
    """Copy the fixture dataset to ``dst`` and apply ``edit(manifest_dict)``."""
    shutil.copytree(src, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    edit(manifest)
    (dst / "manifest.json").write_text(json.dumps(manifest))
    return dst


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m["counts"].pop("users"), r"missing key 'counts\.users'"),
        (lambda m: m.update(schema_version=2), r"schema_version 2, this reader understands 1"),
        (
            lambda m: m["corpora"]["content"]["shards"][1].pop("sha256"),
            r"missing key 'corpora\.content\.shards\[1\]\.sha256'",
        ),
        (
            lambda m: m["corpora"]["content"]["shards"][0].pop("documents"),
            r"missing key 'corpora\.content\.shards\[0\]\.users' \(or '\.documents'\)",
        ),
        (
            lambda m: m["counts"]["documents"].update(user="5"),
            r"'counts\.documents\.user' should be int",
        ),
        (lambda m: m["corpora"]["collaborative"].update(num_shards=3), r"num_shards' is 3 but 4"),
        (lambda m: m.pop("tokenizer"), r"missing key 'tokenizer'"),
    ],
)
def test_errors_name_file_and_key(dataset: Path, tmp_path: Path, edit, message: str) -> None:
    broken = edited(dataset, tmp_path / "d", edit)
    with pytest.raises(ManifestError, match=message) as err:
        load_manifest(broken)
    assert str(broken.resolve() / "manifest.json") in str(err.value)


def test_null_tokenizer_and_missing_manifest(dataset: Path, tmp_path: Path) -> None:
    d = edited(dataset, tmp_path / "d", lambda m: m.update(tokenizer=None))
    assert load_manifest(d).tokenizer_json() is None
    with pytest.raises(ManifestError, match="not found"):
        load_manifest(tmp_path / "nowhere")


def test_verify_shards(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "d")
    assert verify_shards(root, count_rows=True) == []
    # Flip one byte inside a member: same size, different digest.
    shard = root / "recommendation" / "shard-000001.tar"
    data = bytearray(shard.read_bytes())
    data[700] ^= 0xFF
    shard.write_bytes(bytes(data))
    (root / "content" / "shard-000002.tar").unlink()
    problems = verify_shards(root)
    assert len(problems) == 2
    assert f"{shard}: sha256" in problems[0]
    assert "content/shard-000002.tar: missing" in problems[1]


def test_verify_shards_counts_rows(dataset: Path, tmp_path: Path) -> None:
    def wrong_rows(m: dict) -> None:
        m["corpora"]["collaborative"]["shards"][1]["users"] += 1

    d = edited(dataset, tmp_path / "d", wrong_rows)
    assert verify_shards(d) == []  # bytes and digests are fine ...
    (problem,) = verify_shards(d, count_rows=True)  # ... the counts are not
    assert "shard-000001.tar: has 10 rows in 4 samples, manifest says 11 rows" in problem


def test_fingerprint_follows_the_data_not_the_package(dataset: Path, tmp_path: Path) -> None:
    base = load_manifest(dataset).fingerprint
    assert len(base["manifest_sha256"]) == 64
    assert (base["num_users"], base["num_items"]) == (NUM_USERS, NUM_ITEMS)
    relabelled = edited(dataset, tmp_path / "a", lambda m: m.update(created_by="other 9.9"))
    assert load_manifest(relabelled).fingerprint == base
    grown = edited(dataset, tmp_path / "b", lambda m: m["counts"].update(items=NUM_ITEMS + 1))
    assert load_manifest(grown).fingerprint["manifest_sha256"] != base["manifest_sha256"]
