"""Each raw reader on a tiny fixture written here: rows, texts, rejection counts, schema errors."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_prep.readers import (
    INTERACTIONS,
    ITEM_TEXT,
    REVIEWS,
    USER_TEXT,
    SchemaError,
    build_reader,
)


def rows(batches, schema: pa.Schema) -> list[dict]:
    batches = list(batches)
    for batch in batches:
        assert batch.schema == schema
    return pa.Table.from_batches(batches, schema=schema).to_pylist()


def read_all(cfg: dict) -> tuple[dict[str, list[dict]], dict[str, int]]:
    reader = build_reader(cfg)
    reader.check_schema()
    out = {
        "inter": rows(reader.interactions(), INTERACTIONS),
        "items": rows(reader.item_texts(), ITEM_TEXT),
        "users": rows(reader.user_texts(), USER_TEXT),
        "reviews": rows(reader.reviews(), REVIEWS),
    }
    return out, dict(reader.rejected)


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_text(text, encoding=encoding)
    return path


# --- movielens ------------------------------------------------------------------------------
def test_movielens_atomic(tmp_path: Path) -> None:
    write(
        tmp_path / "ml.inter",
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        "1\t10\t4\t881250949\n2\t10\tx\t5\n2\t11\n1\t11\t5\t881250950.0\n",
    )
    write(
        tmp_path / "ml.item",
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        "10\tToy Story\t1995\tAnimation Comedy\n11\tHeat\t\tunknown\n99\tNobody\t2000\tDrama\n",
    )
    write(
        tmp_path / "ml.user",
        "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
        "1\t24\tM\ttechnician\t85711\n2\t53\tF\tother\t94043\n",
    )
    out, rejected = read_all({"name": "movielens", "path": str(tmp_path)})
    assert out["inter"] == [
        {"user": "1", "item": "10", "rating": 4.0, "timestamp": 881250949},
        {"user": "1", "item": "11", "rating": 5.0, "timestamp": 881250950},
    ]
    assert out["items"] == [
        {"item": "10", "text": "Toy Story (1995). Genres: Animation, Comedy"},
        {"item": "11", "text": "Heat"},
    ]
    assert out["users"] == [
        {"user": "1", "text": "A 24 year old male. Occupation: technician"},
    ]
    # user 2 lost both interactions, so its demographics are unknown_user_in_text
    assert rejected == {
        "bad_rating": 1,
        "short_line": 1,
        "unknown_item_in_text": 1,
        "unknown_user_in_text": 1,
    }


def test_movielens_atomic_header_error_names_file_and_column(tmp_path: Path) -> None:
    bad = write(tmp_path / "ml.inter", "user_id:token\titem:token\n1\t2\n")
    with pytest.raises(SchemaError, match=r"ml\.inter:1: header has no column 'item_id'") as err:
        build_reader({"name": "movielens", "path": str(tmp_path)}).check_schema()
    assert str(bad) in str(err.value)


def test_movielens_ml100k_original_files(tmp_path: Path) -> None:
    write(tmp_path / "u.data", "1\t1\t5\t874965758\n1\t2\t3\t876893171\n2\t1\tfour\t1\n")
    flags = ["0"] * 19
    flags[3] = flags[5] = "1"  # Animation, Comedy
    write(
        tmp_path / "u.item",
        "1|Toy Story (1995)|01-Jan-1995||http://x|" + "|".join(flags) + "\n"
        "2|Café (1996)|01-Jan-1996||http://y|" + "|".join(["1"] + ["0"] * 18) + "\n3|short\n",
        encoding="latin-1",
    )
    write(tmp_path / "u.user", "1|24|M|technician|85711\n")
    out, rejected = read_all({"name": "movielens", "path": str(tmp_path / "u.data")})
    assert [r["item"] for r in out["inter"]] == ["1", "2"]
    assert out["items"] == [
        {"item": "1", "text": "Toy Story (1995). Genres: Animation, Comedy"},
        {"item": "2", "text": "Café (1996)"},
    ]
    assert out["users"] == [{"user": "1", "text": "A 24 year old male. Occupation: technician"}]
    assert rejected == {"bad_rating": 1, "short_line": 1}


def test_movielens_ml1m_original_files(tmp_path: Path) -> None:
    write(tmp_path / "ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n")
    write(
        tmp_path / "movies.dat",
        "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n661::James (1996)::Animation|Musical\n",
    )
    write(tmp_path / "users.dat", "1::F::1::10::48067\n")
    out, rejected = read_all({"name": "movielens", "path": str(tmp_path)})
    assert out["inter"][0] == {"user": "1", "item": "1193", "rating": 5.0, "timestamp": 978300760}
    assert out["items"][1] == {"item": "661", "text": "James (1996). Genres: Animation, Musical"}
    assert out["users"] == [
        {"user": "1", "text": "A female aged under 18. Occupation: K-12 student"}
    ]
    assert rejected == {}


# --- sequences ------------------------------------------------------------------------------
def test_sequences_positions_rejections_and_bounded_batches(tmp_path: Path) -> None:
    seq = write(tmp_path / "Toy.txt", "1 5 6 5\n\n2\n3 7 x\n04 6 8\n")
    text = write(
        tmp_path / "items.txt", "5 red lipstick\n6\tblue shampoo\n8\n99 unknown\n5 again\n"
    )
    cfg = {"name": "sequences", "path": str(seq), "item_text_path": str(text), "batch_rows": 2}
    reader = build_reader(cfg)
    batches = list(reader.interactions())
    assert max(b.num_rows for b in batches) == 2
    inter = rows(batches, INTERACTIONS)
    assert [(r["user"], r["item"], r["timestamp"]) for r in inter] == [
        ("1", "5", 0), ("1", "6", 1), ("1", "5", 2), ("4", "6", 0), ("4", "8", 1),
    ]  # fmt: skip
    assert all(r["rating"] is None for r in inter)
    assert rows(reader.item_texts(), ITEM_TEXT) == [
        {"item": "5", "text": "red lipstick"},
        {"item": "6", "text": "blue shampoo"},
    ]
    expected = {
        "blank_line": 1,
        "empty_history": 1,
        "non_integer_id": 1,
        "missing_text": 1,
        "unknown_item_in_text": 1,
        "duplicate_text": 1,
    }
    assert dict(reader.rejected) == expected
    # A second pass recounts its stream instead of adding to it.
    list(reader.interactions())
    assert dict(reader.rejected) == expected


def test_sequences_raw_ids_and_missing_file(tmp_path: Path) -> None:
    seq = write(tmp_path / "user_sequence.txt", "A1 B00X 7806397051\n")
    out, _ = read_all({"name": "sequences", "path": str(seq), "integer_ids": False})
    assert [r["item"] for r in out["inter"]] == ["B00X", "7806397051"]
    cfg = {"name": "sequences", "path": str(seq), "item_text_path": str(tmp_path / "nope.txt")}
    with pytest.raises(SchemaError, match="item_text_path"):
        build_reader(cfg).check_schema()


# --- lcrec_json -----------------------------------------------------------------------------
def test_lcrec_json(tmp_path: Path) -> None:
    inter = {"0": [0, 1, 2], "1": [], "2": "0 1", "3": [1, None], "4": [2, 1]}
    items = {
        "0": {"title": "Kit.", "brand": "Supco", "categories": "Sci,Electrical", "description": ""},
        "1": {"title": "", "description": " <b>Heavy</b>  duty &amp; sturdy "},
        "2": "not an object",
        "3": {"title": "Never bought"},
        "5": {"title": ""},
    }
    write(tmp_path / "Toy.inter.json", json.dumps(inter))
    write(tmp_path / "Toy.item.json", json.dumps(items))
    out, rejected = read_all({"name": "lcrec_json", "path": str(tmp_path)})
    assert [(r["user"], r["item"], r["timestamp"]) for r in out["inter"]] == [
        ("0", "0", 0), ("0", "1", 1), ("0", "2", 2), ("4", "2", 0), ("4", "1", 1),
    ]  # fmt: skip
    assert out["items"] == [
        {"item": "0", "text": "Kit. Supco. Sci, Electrical"},
        {"item": "1", "text": "Heavy duty & sturdy"},
    ]
    assert rejected == {
        "empty_history": 1,
        "bad_history": 1,
        "bad_item_id": 1,
        "bad_item_record": 1,
        "unknown_item_in_text": 1,
        "missing_text": 1,
    }


def test_lcrec_json_invalid_json_names_file(tmp_path: Path) -> None:
    write(tmp_path / "Toy.inter.json", '{"0": [1, 2,,]}')
    reader = build_reader({"name": "lcrec_json", "path": str(tmp_path / "Toy.inter.json")})
    reader.check_schema()
    with pytest.raises(SchemaError, match=r"Toy\.inter\.json:1:\d+: invalid JSON"):
        list(reader.interactions())


# --- amazon_reviews -------------------------------------------------------------------------
def test_amazon_reviews_gz_and_python_literal_meta(tmp_path: Path) -> None:
    reviews = [
        {"reviewerID": "U1", "asin": "A", "overall": 5.0, "summary": "Great", "reviewText": "Love it",
         "unixReviewTime": 1400000000},
        {"reviewerID": "U2", "asin": "A", "overall": "4", "unixReviewTime": 1400000001},
        {"reviewerID": "U2", "overall": 3.0},
        {"reviewerID": "U3", "asin": "B", "overall": "five"},
    ]  # fmt: skip
    lines = [json.dumps(r) for r in reviews] + ["{not json"]
    path = tmp_path / "reviews_Toy_5.json.gz"
    with gzip.open(path, "wt") as f:
        f.write("\n".join(lines) + "\n")
    meta = write(
        tmp_path / "meta_Toy.json",
        "{'asin': 'A', 'title': 'Lipstick', 'categories': [['Beauty', 'Makeup']], 'brand': 'X'}\n"
        + json.dumps({"asin": "Z", "title": "unsold"})
        + "\n"
        + json.dumps({"asin": "A", "title": "dup"})
        + "\n",
    )
    out, rejected = read_all({"name": "amazon_reviews", "path": str(path), "meta_path": str(meta)})
    assert out["inter"] == [
        {"user": "U1", "item": "A", "rating": 5.0, "timestamp": 1400000000},
        {"user": "U2", "item": "A", "rating": 4.0, "timestamp": 1400000001},
    ]
    assert out["reviews"] == [{"user": "U1", "item": "A", "text": "Great. Love it"}]
    assert out["items"] == [{"item": "A", "text": "Lipstick. X. Beauty, Makeup"}]
    # Counted once although interactions() and reviews() both pass over the review file.
    assert rejected == {
        "bad_json": 1,
        "missing_field:asin": 1,
        "bad_rating": 1,
        "empty_review": 1,
        "unknown_item_in_text": 1,
        "duplicate_text": 1,
    }


def test_amazon_reviews_schema_error_names_key(tmp_path: Path) -> None:
    path = write(tmp_path / "r.json", json.dumps({"reviewerID": "U", "item": "A"}) + "\n")
    with pytest.raises(SchemaError, match=r"r\.json:1: no key 'asin'"):
        build_reader({"name": "amazon_reviews", "path": str(path)}).check_schema()


# --- table ----------------------------------------------------------------------------------
def test_table_parquet_dir_with_reviews_and_item_text(tmp_path: Path) -> None:
    (tmp_path / "inter").mkdir()
    part0 = {"uid": [1, 2], "iid": [10.0, 11.5], "stars": [5.0, 4.0], "txt": ["good", "nice"]}
    part1 = {"uid": [3, None, 4], "iid": [10.0, 11.0, 12.0], "stars": [None, 1.0, 2.0]}
    pq.write_table(pa.table(part0), tmp_path / "inter" / "part-0.parquet")
    pq.write_table(pa.table(part1 | {"txt": ["ok", "x", " "]}), tmp_path / "inter" / "part-1.pq")
    write(tmp_path / "items.csv", 'iid,desc\n10,"A book, hardcover"\n13,unsold\n')
    cfg = {
        "name": "table",
        "path": str(tmp_path / "inter"),
        "user_col": "uid",
        "item_col": "iid",
        "rating_col": "stars",
        "text_col": "txt",
        "item_text_path": str(tmp_path / "items.csv"),
        "item_text_item_col": "iid",
        "item_text_col": "desc",
    }
    out, rejected = read_all(cfg)
    assert out["inter"] == [
        {"user": "1", "item": "10", "rating": 5.0, "timestamp": None},
        {"user": "3", "item": "10", "rating": None, "timestamp": None},
        {"user": "4", "item": "12", "rating": 2.0, "timestamp": None},
    ]
    assert out["reviews"] == [
        {"user": "1", "item": "10", "text": "good"},
        {"user": "3", "item": "10", "text": "ok"},
    ]
    assert out["items"] == [{"item": "10", "text": "A book, hardcover"}]
    # Counted once although interactions() and reviews() both pass over the table.
    assert rejected == {
        "non_integer_id": 1,
        "missing_field:uid": 1,
        "empty_review": 1,
        "unknown_item_in_text": 1,
    }


def test_table_csv_bad_rows_and_timestamps(tmp_path: Path) -> None:
    path = write(
        tmp_path / "r.tsv", "u\ti\tr\tt\na\tb\t4.5\t100\na\tc\tbad\t1\na\td\t1\nb\tb\t\t2.0\n"
    )
    cfg = {"name": "table", "path": str(path), "user_col": "u", "item_col": "i"}
    out, rejected = read_all(cfg | {"rating_col": "r", "timestamp_col": "t"})
    assert out["inter"] == [
        {"user": "a", "item": "b", "rating": 4.5, "timestamp": 100},
        {"user": "b", "item": "b", "rating": None, "timestamp": 2},
    ]
    assert rejected == {"bad_rating": 1, "bad_csv_row": 1}


def test_table_missing_column_names_file_and_column(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    write(tmp_path / "d" / "a.csv", "user,item\n1,2\n")
    write(tmp_path / "d" / "b.csv", "user,product\n1,2\n")
    with pytest.raises(SchemaError, match=r"b\.csv: no column 'item' \(config key item_col\)"):
        build_reader({"name": "table", "path": str(tmp_path / "d")}).check_schema()


def test_build_reader_errors() -> None:
    with pytest.raises(SchemaError, match="unknown reader 'nope'"):
        build_reader({"name": "nope", "path": "x"})
    with pytest.raises(SchemaError, match="no 'path'"):
        build_reader({"name": "sequences"})


def test_build_reader_accepts_an_omegaconf_node(tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    write(tmp_path / "Toy.inter.json", json.dumps({"0": [0]}))
    write(tmp_path / "Toy.item.json", json.dumps({"0": {"title": "T", "brand": "B"}}))
    node = OmegaConf.create(
        {"name": "lcrec_json", "path": str(tmp_path), "batch_rows": 8, "text_fields": ["brand"]}
    )
    out, _ = read_all(node)
    assert out["items"] == [{"item": "0", "text": "B"}]
