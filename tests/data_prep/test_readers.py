"""Each raw reader on a tiny fixture written here: rows, texts, rejection counts, schema errors."""

from __future__ import annotations

import datetime
import gzip
import json
import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_prep.readers import (
    INTERACTIONS,
    ITEM_TEXT,
    REVIEWS,
    USER_TEXT,
    SchemaError,
    build_reader,
    table,
)
from data_prep.readers.textutil import BAD, clean, to_float


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


# --- table: the whole-batch path against the one-row-at-a-time rules --------------------------
def reference_id(value):
    """The id rule of one value: stripped string, int for integral floats, else a reason."""
    if isinstance(value, str):
        value = value.strip()
    if value is None or value == "":
        return "missing"
    if isinstance(value, float):
        if not value.is_integer():
            return "fractional"
        value = int(value)
    return str(value)


def reference_table(cfg: dict) -> tuple[dict[str, list[dict]], dict[str, int]]:
    """What the table reader yields, computed one row at a time in plain Python."""
    rejected: dict[str, int] = {}

    def reject(reason: str) -> None:
        rejected[reason] = rejected.get(reason, 0) + 1

    def bad_csv_row(_: object) -> str:
        reject("bad_csv_row")
        return "skip"

    def rows_of(root: Path, columns: list[str]) -> list[dict]:
        out = []
        for path in sorted(root.iterdir()) if root.is_dir() else [root]:
            if path.suffix == ".parquet":
                tab = pq.read_table(path, columns=columns)
            else:
                tab = pacsv.read_csv(
                    path,
                    parse_options=pacsv.ParseOptions(invalid_row_handler=bad_csv_row),
                    convert_options=pacsv.ConvertOptions(
                        include_columns=columns, column_types=dict.fromkeys(columns, pa.string())
                    ),
                )
            for name in tab.column_names:
                if pa.types.is_timestamp(tab[name].type) or pa.types.is_date(tab[name].type):
                    seconds = tab[name].cast(pa.timestamp("s"), safe=False).cast(pa.int64())
                    tab = tab.set_column(tab.column_names.index(name), name, seconds)
            out += tab.to_pylist()
        return out

    u, i, r, t, x = (cfg.get(k) for k in ("user_col", "item_col", "rating_col", "timestamp_col",
                                          "text_col"))  # fmt: skip
    inter, reviews = [], []
    for row in rows_of(Path(cfg["path"]), [c for c in (u, i, r, t, x) if c]):
        user, item = reference_id(row[u]), reference_id(row[i])
        for col, value in ((u, user), (i, item)):
            if value in ("missing", "fractional"):
                reject(f"missing_field:{col}" if value == "missing" else "non_integer_id")
        if {user, item} & {"missing", "fractional"}:
            continue
        rating, ts = to_float(row.get(r)), to_float(row.get(t))
        if rating is BAD:
            reject("bad_rating")
            continue
        if ts is BAD or (ts is not None and not -(2.0**63) < int(ts) < 2**63):
            reject("bad_timestamp")
            continue
        inter.append({"user": user, "item": item, "rating": rating,
                      "timestamp": None if ts is None else int(ts)})  # fmt: skip
        if x and clean(row[x]):
            reviews.append({"user": user, "item": item, "text": clean(row[x])})
        elif x:
            reject("empty_review")
    known, seen, items = {row["item"] for row in inter}, set(), []
    for row in rows_of(Path(cfg["item_text_path"]), ["item", "text"]):
        item, text = reference_id(row["item"]), clean(row["text"])
        if item in ("missing", "fractional"):
            reject("missing_field:item" if item == "missing" else "non_integer_id")
        elif not text:
            reject("missing_text")
        elif item not in known:
            reject("unknown_item_in_text")
        elif item in seen:
            reject("duplicate_text")
        else:
            seen.add(item)
            items.append({"item": item, "text": text})
    return {"inter": inter, "items": items, "users": [], "reviews": reviews}, rejected


MESSY_CSV = """uid,iid,stars,when,txt
 u1 ,10,4.5,100,plain text
u2,10.0, 3 ,12.7,"<p>tags</p> &amp; entities"
,11,5,1,no user
u3,,5,1,no item
u4,12,bad,1,bad rating
u5,12,1_0,2020-01-01,python-only number; bad timestamp
u6,12,Infinity,1,infinite rating
u7,13,\u0663,1e400,arabic-indic digit; overflowing timestamp
u8,13,,,empty rating and timestamp
u9,14,4
u10,14,4,5,too,many
u11,15,+.5,-3.9,caf\u00e9  au\tlait
u12,15,2,9223372036854775808,beyond int64
"""


def write_messy_table(folder: Path) -> dict:
    """Parquet (int / float / dictionary / string ids, typed and string numbers, Arrow
    timestamps) and CSV (bad rows) files in one directory, and an item-text Parquet."""
    inter = folder / "inter"
    inter.mkdir()
    nan, inf = float("nan"), float("inf")
    when = [datetime.datetime(2020, 1, 1, 0, 0, s, 900_000) for s in range(9)] + [None]
    pq.write_table(pa.table({
        "uid": pa.array([1, 2, None, 4, 5, 6, 7, 8, 9, 10], pa.int64()),
        "iid": [10.0, 11.5, 12.0, None, nan, inf, -0.0, 13.0, 1e20, 2.0],
        "stars": ["5", "bad", " 4 ", "", "1_0", "inf", "1_0", "\u0663", None, "bad"],
        "when": pa.array(when, pa.timestamp("ms")),
        "txt": ["good", "<b>nice</b> &amp; fun", " ", None, "caf\u00e9  au\tlait", "a\x1cb",
                "<" + "x" * 300 + ">", "ok", "fine", "<i>x</i>  y"],
    }), inter / "a.parquet")  # fmt: skip
    pq.write_table(pa.table({
        "uid": pa.array(["\u3000u1\u3000", "", None, " u2", "u3", "u4"]).dictionary_encode(),
        "iid": pa.array([1.0, 2.5, 3.0, 4.0, 5.0, 6.0], pa.float32()),
        "stars": [4.0, nan, None, inf, 2.0, 1.0],
        "when": pa.array([1, 2, 3, None, 2**63 - 1, -(2**62)], pa.int64()),
        "txt": ["a", "b", "c", "d", "e", " "],
    }), inter / "b.parquet")  # fmt: skip
    (inter / "c.csv").write_text(MESSY_CSV)
    pq.write_table(pa.table({
        "item": pa.array([10, 12, 10, 99, None, 13, 14, 1], pa.int64()),
        "text": ["ten", "twelve", "ten again", "unknown", "no id", "  ", "fourteen", "one &lt;"],
    }), folder / "items.parquet")  # fmt: skip
    return {
        "name": "table", "path": str(inter), "user_col": "uid", "item_col": "iid",
        "rating_col": "stars", "timestamp_col": "when", "text_col": "txt",
        "item_text_path": str(folder / "items.parquet"), "batch_rows": 4,
    }  # fmt: skip


def test_table_batches_match_the_row_rules_on_messy_input(tmp_path: Path) -> None:
    cfg = write_messy_table(tmp_path)
    reader = build_reader(cfg)
    batches = list(reader.interactions())
    assert max(b.num_rows for b in batches) <= 4
    out, rejected = read_all(cfg)
    expected, expected_rejected = reference_table(cfg)
    assert out == expected
    assert rejected == expected_rejected
    # Spot checks of the rules themselves, so the reference cannot drift with the reader.
    assert {"user": "1", "item": "10", "rating": 5.0, "timestamp": 1577836800} in out["inter"]
    assert {"user": "u1", "item": "10", "rating": 4.5, "timestamp": 100} in out["inter"]
    assert {"user": "u11", "item": "15", "rating": 0.5, "timestamp": -3} in out["inter"]
    assert {"user": "7", "item": "0", "rating": 10.0, "timestamp": 1577836806} in out["inter"]
    assert {"user": "8", "item": "13", "rating": 3.0, "timestamp": 1577836807} in out["inter"]
    assert [r["user"] for r in out["inter"]].count("u1") == 2  # "\u3000u1\u3000" stripped
    assert {"user": "u2", "item": "10.0", "rating": 3.0, "timestamp": 12} in out["inter"]
    assert {"user": "u2", "item": "10.0", "text": "tags & entities"} in out["reviews"]
    assert {"user": "7", "item": "0", "text": "<" + "x" * 300 + ">"} in out["reviews"]
    assert {"user": "9", "item": "100000000000000000000", "rating": None,
            "timestamp": 1577836808} in out["inter"]  # fmt: skip
    assert out["items"] == [{"item": "10", "text": "ten"}, {"item": "1", "text": "one <"}]
    assert rejected == {
        "bad_csv_row": 2, "missing_field:uid": 4, "missing_field:iid": 2, "non_integer_id": 4,
        "bad_rating": 4, "bad_timestamp": 4, "empty_review": 1, "missing_field:item": 1,
        "missing_text": 1, "unknown_item_in_text": 3, "duplicate_text": 1,
    }  # fmt: skip


def test_table_logs_the_first_rejections_with_file_and_row(tmp_path: Path, caplog) -> None:
    lines = "".join(f"a,b,bad{k}\n" for k in range(6))
    path = write(tmp_path / "r.csv", "u,i,r\nshort,row\n" + lines)
    cfg = {"name": "table", "path": str(path), "user_col": "u", "item_col": "i", "rating_col": "r"}
    with caplog.at_level(logging.WARNING, logger="data_prep.readers.base"):
        out, rejected = read_all(cfg)
    assert out["inter"] == [] and rejected == {"bad_rating": 6, "bad_csv_row": 1}
    logged = [r.getMessage() for r in caplog.records]
    # CSV rows are named by their line (header = 1), also after the row the parser skipped.
    assert logged == [f"table: {path}:line 2: rejected (bad_csv_row) short,row"] + [
        f"table: {path}:line {k + 3}: rejected (bad_rating) 'bad{k}'" for k in (0, 1, 2)
    ]


IDS = st.one_of(
    st.none(),
    st.text(alphabet=" \t\x1c\u3000\xa0ab7.-"),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["str", "int", "float", "dictionary"]), st.data())
def test_ids_column_matches_the_value_rule(kind: str, data) -> None:
    values = data.draw(st.lists(IDS, max_size=12))
    arrays = {
        "str": lambda: pa.array([v if isinstance(v, str) else None for v in values], pa.string()),
        "int": lambda: pa.array([v if isinstance(v, int) else None for v in values], pa.int64()),
        "float": lambda: pa.array([v if isinstance(v, float) else None for v in values]),
        "dictionary": lambda: (
            pa.array([v if isinstance(v, str) else None for v in values])
            .cast(pa.large_string())
            .dictionary_encode()
        ),
    }
    array = arrays[kind]()
    ids = table._ids(array)
    for k, value in enumerate(array.to_pylist()):
        expected = reference_id(value)
        assert ids.missing[k] == (expected == "missing")
        assert ids.fractional[k] == (expected == "fractional")
        if expected not in ("missing", "fractional"):
            assert ids.values[k].as_py() == expected


NUMBER_TEXT = st.one_of(
    st.none(),
    st.from_regex(r"\A[ ]?[+-]?(\d{1,25}\.?\d{0,5}|\.\d{1,5})([eE][+-]?\d{1,4})?[ ]?\Z"),
    st.text(alphabet="0123456789.eE+-_ infatyINF\u0663\xa0x"),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(NUMBER_TEXT, max_size=12), st.booleans())
def test_number_strings_match_to_float(values: list, is_time: bool) -> None:
    numbers = table._numbers(pa.array(values, pa.string()), len(values), is_time)
    for k, value in enumerate(values):
        expected = to_float(value)
        if is_time and isinstance(expected, float) and not abs(int(expected)) < 2**63:
            expected = BAD
        assert numbers.null[k] == (expected is None), value
        assert numbers.bad[k] == (expected is BAD), value
        if isinstance(expected, float):
            assert numbers.values[k] == (float(int(expected)) if is_time else expected), value


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.none(), st.text(alphabet="<>&;amp/b \t\n\x0b\x1c\xa0\u00e9x")),
                max_size=8))  # fmt: skip
def test_texts_match_clean(values: list) -> None:
    assert table._clean_texts(pa.array(values, pa.string())).to_pylist() == [
        clean(v) for v in values
    ]


def test_arrow_trim_is_str_strip_on_every_code_point() -> None:
    # The id and number paths rely on it: Arrow's whitespace is Python's, all of Unicode.
    chars = [chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000]
    trimmed = pc.utf8_trim_whitespace(pa.array([f"x{c}" for c in chars])).to_pylist()
    assert [c for c, t in zip(chars, trimmed) if t != f"x{c}".strip()] == []


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
