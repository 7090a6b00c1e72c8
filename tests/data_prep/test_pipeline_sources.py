"""The pipeline on raw (``table``) sources: filters, rejection counts, schema errors, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from cllm4rec_dist.data.format import sha256_file
from data_prep.pipeline.validate import validate_dir
from data_prep.readers.base import SchemaError

REPO = Path(__file__).resolve().parents[2]

# D has one item (k-core drops it), which leaves item 3 with one user, which then leaves C with
# one item: the 2-core needs two rounds. A repeats (A, 1); E's rows fail the rating rule.
INTERACTIONS = """user,item,rating,text
A,1,5,great one
A,1,4,again
A,2,5,
B,1,5,
B,2,4,
C,2,5,c liked it
C,3,5,
D,3,5,
E,1,3,low rating
E,2,,
"""
ITEM_TEXTS = """item,text
1,first item
2,second item
3,third item
9,not an item
"""


@pytest.fixture(scope="module")
def table_files(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("raw")
    (folder / "inter.csv").write_text(INTERACTIONS)
    (folder / "items.csv").write_text(ITEM_TEXTS)
    return folder / "inter.csv", folder / "items.csv"


def table_overrides(inter: Path, items: Path | None = None) -> list[str]:
    return [
        "source=table",
        f"source.path={inter}",
        "source.rating_col=rating",
        *([f"source.item_text_path={items}", "source.text_col=text"] if items else []),
        "progress=false",
        "tokenizer.vocab_size=280",
    ]


def test_threshold_kcore_duplicates_and_unknown_texts(prepare, table_files, tmp_path) -> None:
    inter, items = table_files
    manifest = prepare(
        tmp_path, *table_overrides(inter, items), "filter.min_rating=3",
        "filter.k_core_user=2", "filter.k_core_item=2",
    )  # fmt: skip
    users = pq.read_table(tmp_path / "id_maps" / "users.parquet")["raw_id"].to_pylist()
    item_ids = pq.read_table(tmp_path / "id_maps" / "items.parquet")["raw_id"].to_pylist()
    assert (users, item_ids) == (["A", "B"], ["1", "2"])
    counts = manifest["counts"]
    assert counts["interactions"] == {"train": 4, "val": 0, "test": 0}
    assert counts["evaluated_users"] == {"val": 0, "test": 0}  # 2 items < min_items_for_eval
    assert counts["documents"] == {"review": 2, "item": 2, "user": 0}
    rejected = manifest["rejected"]
    assert rejected["duplicate_interaction"] == 1
    assert rejected["rating_not_above_min"] == 1 and rejected["missing_rating"] == 1
    assert rejected["k_core_filtered"] == 3  # (C,2) (C,3) (D,3)
    assert rejected["review_unknown_user"] == 2  # C (k-core) and E (rating rule)
    assert rejected["item_text_unknown_item"] == 1  # item 3 (k-core)
    assert rejected["unknown_item_in_text"] == 1  # item 9, counted by the reader
    assert json.loads((tmp_path / "run_log.json").read_text())["k_core_rounds"] == 2
    assert validate_dir(tmp_path) == []


def test_source_without_text_still_gets_a_tokenizer(prepare, table_files, tmp_path) -> None:
    inter, _ = table_files
    manifest = prepare(tmp_path, *table_overrides(inter))
    assert manifest["counts"]["documents"] == {"review": 0, "item": 0, "user": 0}
    content = manifest["corpora"]["content"]
    assert content["num_shards"] == 8 and all(s["samples"] == 0 for s in content["shards"])
    assert (tmp_path / manifest["tokenizer"]).is_file()
    assert validate_dir(tmp_path) == []


def test_schema_mismatch_stops_before_any_work(prepare, table_files, tmp_path) -> None:
    inter, _ = table_files
    out = tmp_path / "never"
    with pytest.raises(SchemaError, match=r"inter\.csv.*'customer'"):
        prepare(out, *table_overrides(inter), "source.user_col=customer")
    assert not out.exists()


def test_cli_with_one_cpu_writes_the_same_shards(tiny, tiny_overrides, tmp_path) -> None:
    root, _ = tiny
    out = tmp_path / "cli"
    cmd = [sys.executable, str(REPO / "launchers" / "prepare.py"), f"output_dir={out}",
           "ray.num_cpus=1", *tiny_overrides]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "interactions train" in run.stdout + run.stderr  # the summary table
    assert (out / ".hydra" / "config.yaml").is_file() and not (tmp_path / "outputs").exists()
    for shard in root.glob("*/shard-*.tar"):
        assert sha256_file(out / shard.relative_to(root)) == sha256_file(shard)
    assert (out / "manifest.json").read_bytes() == (root / "manifest.json").read_bytes()
