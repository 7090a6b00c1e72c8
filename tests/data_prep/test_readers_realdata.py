"""Readers on the real sample files in ``<repo>/../shared/data``: counts from the READMEs."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from data_prep.readers import build_reader

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"

pytestmark = pytest.mark.realdata


def folder(name: str) -> Path:
    path = DATA / name
    if not path.is_dir():
        pytest.skip(f"{path} not present")
    return path


def summary(cfg: dict) -> dict:
    reader = build_reader(cfg)
    reader.check_schema()
    inter = pa.Table.from_batches(list(reader.interactions()))
    return {
        "users": pc.count_distinct(inter["user"]).as_py(),
        "items": pc.count_distinct(inter["item"]).as_py(),
        "interactions": inter.num_rows,
        "item_texts": sum(b.num_rows for b in reader.item_texts()),
        "user_texts": sum(b.num_rows for b in reader.user_texts()),
        "rejected": dict(reader.rejected),
    }


def test_ml100k_recbole_atomic() -> None:
    got = summary({"name": "movielens", "path": str(folder("ml-100k"))})
    assert got == {
        "users": 943,
        "items": 1682,
        "interactions": 100_000,
        "item_texts": 1682,
        "user_texts": 943,
        "rejected": {},
    }


@pytest.mark.parametrize(
    ("dataset", "file", "users", "items", "interactions"),
    [
        ("amazon_beauty", "s3rec/Beauty.txt", 22_363, 12_101, 198_502),
        ("lastfm", "s3rec/LastFM.txt", 1_090, 3_646, 52_551),
    ],
)
def test_s3rec_sequences(
    dataset: str, file: str, users: int, items: int, interactions: int
) -> None:
    got = summary({"name": "sequences", "path": str(folder(dataset) / file)})
    assert (got["users"], got["items"], got["interactions"]) == (users, items, interactions)
    assert got["rejected"] == {}


def test_beauty_p5_raw_ids_with_generated_texts() -> None:
    p5 = folder("amazon_beauty") / "idgenrec_p5"
    got = summary(
        {
            "name": "sequences",
            "path": str(p5 / "user_sequence.txt"),
            "integer_ids": False,
            "item_text_path": str(p5 / "item_generative_indexing_phase_0.txt"),
        }
    )
    assert (got["users"], got["items"], got["interactions"]) == (22_363, 12_101, 198_502)
    # one item line carries an id but no phrase; it is counted, not silently dropped
    assert got["item_texts"] + got["rejected"].get("missing_text", 0) == 12_101


def test_scientific_lcrec_json() -> None:
    got = summary({"name": "lcrec_json", "path": str(folder("amazon_scientific"))})
    assert got == {
        "users": 8_317,
        "items": 4_344,
        "interactions": 58_492,
        "item_texts": 4_344,
        "user_texts": 0,
        "rejected": {},
    }
