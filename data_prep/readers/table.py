"""Generic tables: Parquet or CSV/TSV files (or a directory of them) with configurable columns.

Config keys (besides ``name: table``, ``path``, ``batch_rows``):

- ``path``: a ``.parquet``/``.pq``, ``.csv``, ``.tsv`` (optionally ``.gz``) file, or a directory
  of such files (read in sorted order).
- ``user_col`` (default ``user``), ``item_col`` (default ``item``): id columns (any type; integer
  values become decimal strings).
- ``rating_col``, ``timestamp_col`` (default null): optional numeric columns (timestamp may also
  be an Arrow timestamp/date, converted to epoch seconds).
- ``text_col`` (default null): if given, each row's text becomes a review (user, item, text).
- ``delimiter`` (default ``,``; ``\\t`` for ``.tsv``): CSV field separator.
- ``csv_block_bytes`` (default 16 MiB): the CSV parser's block; a longer row is an InputError
  naming the file and this key.
- ``item_text_path`` (default null): optional item-text table (same formats), with
  ``item_text_item_col`` (default ``item``) and ``item_text_col`` (default ``text``).

The named columns are checked in every file before any work (SchemaError naming file and
column). Rejection reasons: ``bad_csv_row`` (wrong number of fields), ``blank_line`` (an empty
CSV line, or one whose configured fields are all empty), ``missing_field:<col>``
(null, empty or whitespace only), ``undecodable_id:<col>`` (bytes that are not UTF-8: CSV, or
Parquet ``binary``), ``bad_id_type:<col>`` (list, struct or map ids), ``non_integer_id`` (a
fractional or non-finite float id), ``bad_rating``, ``bad_timestamp``
(not a finite number, or outside int64 once truncated to an integer), ``empty_review``,
``missing_text``, ``unknown_item_in_text``, ``duplicate_text``.

Files are read in Arrow batches (Parquet row groups, or pyarrow's streaming CSV reader with the
configured columns typed as strings, so a bad value is a rejected row rather than a failed read)
and validated a whole column at a time with ``pyarrow.compute``. The rules are those of one
value at a time (``_id_value``, ``textutil.to_float``, ``textutil.clean``), and those functions
still run, per value, wherever Arrow has no exact equivalent: id columns of other types than
string/integer/float (bool, decimal, binary, ...), float ids beyond int64, numbers written other
than as plain decimals (``1_000``, ``Infinity``, non-ASCII digits), texts with ``&`` (HTML
entities) or non-ASCII characters, and the item-text membership and duplicate checks (Python
sets: ``pc.is_in`` would rebuild its hash table of every known item on each batch). CSV rows with
a wrong number of fields are counted by the parser's ``invalid_row_handler``.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from data_prep.readers.base import (
    INTERACTIONS,
    ITEM_TEXT,
    REVIEWS,
    InputError,
    RawReader,
    SchemaError,
    optional_path,
)

# _TAGS: the very pattern clean() removes tags with, run by RE2 on the vectorized path.
from data_prep.readers.textutil import (
    _TAGS,
    BAD,
    UNDECODABLE_ID,
    canonical_id,
    clean,
    open_text,
    to_float,
)

_PARQUET = (".parquet", ".pq")
# The CSV parser reads blocks of this many bytes; one row must fit in a block (Arrow: 1 MiB).
DEFAULT_CSV_BLOCK_BYTES = 16 << 20
_CSV = (".csv", ".tsv", ".txt")
_INT64_LIMIT = 2.0**63
# Numbers that Python's float() and Arrow's string -> float64 cast both read, to the same value.
_PLAIN_NUMBER = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"
# The ASCII characters that ``textutil.clean``'s ``\s`` matches (it includes \x1c-\x1f), for RE2.
_ASCII_SPACE_RUN = "[" + "".join(f"\\x{{{i:02x}}}" for i in range(128) if chr(i).isspace()) + "]+"
_MISSING, _FRACTIONAL = object(), object()

RejectMany = Callable[[str, int, Iterator[tuple[str, str]]], None]


class TableReader(RawReader):
    """Reader of Parquet / CSV interaction tables and an optional item-text table."""

    name = "table"

    def __init__(self, cfg: Mapping[str, Any]):
        super().__init__(cfg)
        self.cols = {
            key: (None if cfg.get(key) in (None, "") else str(cfg.get(key)))
            for key in ("rating_col", "timestamp_col", "text_col")
        }
        self.cols["user_col"] = str(cfg.get("user_col", "user"))
        self.cols["item_col"] = str(cfg.get("item_col", "item"))
        self.delimiter = cfg.get("delimiter")
        self.block_bytes = int(cfg.get("csv_block_bytes", DEFAULT_CSV_BLOCK_BYTES))
        if self.block_bytes < 1024:
            raise SchemaError(f"table: csv_block_bytes must be >= 1024, got {self.block_bytes}")
        self.item_text_path = optional_path(cfg, "item_text_path")
        self.item_text_cols = {
            "item_text_item_col": str(cfg.get("item_text_item_col", "item")),
            "item_text_col": str(cfg.get("item_text_col", "text")),
        }

    # --- files and schema ----------------------------------------------------------------
    def check_schema(self) -> None:
        """Every file has every configured column (reads headers / Parquet footers only)."""
        for path in _files(self.path):
            _require_columns(path, self._delimiter(path), self.cols)
        if self.item_text_path is not None:
            for path in _files(self.item_text_path):
                _require_columns(path, self._delimiter(path), self.item_text_cols)

    def _delimiter(self, path: Path) -> str:
        if self.delimiter:
            return str(self.delimiter)
        return "\t" if _base_suffix(path) == ".tsv" else ","

    def _batches(
        self, root: Path, columns: list[str], reject: RejectMany
    ) -> Iterator[tuple[_Pos, pa.RecordBatch]]:
        """Yield (where each row is, batch of ``columns``), <= batch_rows rows per batch.

        Parquet rows are numbered from 1; CSV rows by their line in the file (header = line 1),
        exact after rows the parser skipped. A file that cannot be read on raises InputError
        naming it.
        """
        for path in _files(root):
            kept = 0
            skipped: list[int] = []  # CSV lines the parser skipped (bad_csv_row), in order
            if _base_suffix(path) in _PARQUET:
                unit, chunks = "row", _parquet_batches(path, columns, self.batch_rows)
            else:
                unit, chunks = "line", self._csv_batches(path, columns, reject, skipped)
            for chunk in chunks:
                index = np.arange(kept, kept + chunk.num_rows)
                if unit == "row":
                    numbers = index + 1
                else:
                    gaps = np.asarray(skipped, dtype=np.int64)
                    gaps = np.sort(gaps) - np.arange(len(gaps)) - 2  # kept rows before each skip
                    numbers = index + 2 + np.searchsorted(gaps, index, side="right")
                if unit == "line":
                    chunk, numbers = _drop_blank_lines(path, chunk, numbers, reject)
                # CSV blocks are sized in bytes, not rows.
                for start in range(0, chunk.num_rows, self.batch_rows):
                    stop = start + self.batch_rows
                    yield _Pos(path, unit, numbers[start:stop]), chunk.slice(start, self.batch_rows)
                kept += chunk.num_rows

    def _csv_batches(
        self, path: Path, columns: list[str], reject: RejectMany, skipped: list[int]
    ) -> Iterator[pa.RecordBatch]:
        def invalid(row: Any) -> str:
            # pyarrow's row number is the line number (header = 1); None only if unknown.
            if row.number is not None:
                skipped.append(row.number)
            reject("bad_csv_row", 1, iter([(f"{path}:line {row.number or '?'}", row.text or "")]))
            return "skip"

        try:
            reader = pacsv.open_csv(
                path,
                # Without threads the parser knows line numbers for invalid_row_handler; the
                # streaming reader parses serially either way (no measurable difference).
                read_options=pacsv.ReadOptions(use_threads=False, block_size=self.block_bytes),
                # Empty lines are parsed as rows (of empty fields) rather than skipped, so
                # that every line keeps its number; _drop_blank_lines counts them.
                parse_options=pacsv.ParseOptions(
                    delimiter=self._delimiter(path),
                    invalid_row_handler=invalid,
                    ignore_empty_lines=False,
                ),
                # Everything as bytes: a typed column would fail the whole read on one bad value
                # (and a string column on one invalid UTF-8 byte); decoding and parsing, and
                # counting their failures, happen per column below.
                convert_options=pacsv.ConvertOptions(
                    include_columns=columns, column_types={c: pa.binary() for c in columns}
                ),
            )
            yield from reader
        except (pa.ArrowInvalid, OSError) as err:
            if "straddl" in str(err):
                raise InputError(
                    f"{path}: a CSV row is longer than the parser's block of {self.block_bytes} "
                    "bytes; raise source.csv_block_bytes (or remove the row)"
                ) from None
            raise InputError(f"{path}: unreadable CSV ({type(err).__name__}: {err})") from None

    # --- streams ---------------------------------------------------------------------------
    def _interaction_batches(self) -> Iterator[pa.RecordBatch]:
        for _, batch in self._valid_rows(with_text=False, reject=self.reject_many):
            yield batch.select(INTERACTIONS.names)

    def _review_batches(self) -> Iterator[pa.RecordBatch]:
        if self.cols["text_col"] is None:
            return
        # The interactions stream already counted the malformed rows of these files.
        for pos, batch in self._valid_rows(with_text=True, reject=_ignore):
            text = _clean_texts(batch.column("text"))
            empty = _empty(text)
            rows = batch.column("row").to_numpy()
            where = ((f"{pos.path}:{pos.unit} {row}", "") for row in rows[empty])
            self.reject_many("empty_review", int(empty.sum()), where)
            keep = pa.array(~empty)
            columns = [batch.column("user").filter(keep), batch.column("item").filter(keep)]
            yield pa.RecordBatch.from_arrays([*columns, text.filter(keep)], schema=REVIEWS)

    def _valid_rows(
        self, with_text: bool, reject: RejectMany
    ) -> Iterator[tuple[_Pos, pa.RecordBatch]]:
        """(where, batch of the rows that pass) per input batch, with columns user, item, rating,
        timestamp, text (``with_text`` only, raw) and row (row or line number in the file);
        ``reject`` counts the other rows by reason."""
        c = self.cols
        wanted = ["user_col", "item_col", "rating_col", "timestamp_col"]
        if with_text:
            wanted.append("text_col")
        names = list(dict.fromkeys(c[k] for k in wanted if c[k] is not None))
        for pos, batch in self._batches(self.path, names, reject):
            n = batch.num_rows
            user = _ids(batch.column(c["user_col"]))
            item = _ids(batch.column(c["item_col"]))
            rating = _numbers(_optional(batch, c["rating_col"]), n, is_time=False)
            timestamp = _numbers(_optional(batch, c["timestamp_col"]), n, is_time=True)
            # The checks of one row at a time, in order: both ids (each counted), then the
            # rating, then the timestamp (each only if everything before it passed).
            ok = _reject_bad_ids(reject, pos, [(c["user_col"], user), (c["item_col"], item)])
            for reason, numbers in (("bad_rating", rating), ("bad_timestamp", timestamp)):
                bad = ok & numbers.bad
                reject(reason, int(bad.sum()), _examples(pos, bad, numbers.raw))
                ok &= ~numbers.bad
            columns = {
                "user": user.values,
                "item": item.values,
                "rating": pa.array(rating.values, mask=rating.null),
                "timestamp": pa.array(
                    np.where(np.isnan(timestamp.values), 0.0, timestamp.values).astype(np.int64),
                    mask=timestamp.null,
                ),
            }
            if with_text:
                columns["text"] = batch.column(c["text_col"])
            columns["row"] = pa.array(pos.numbers)
            valid = pa.RecordBatch.from_pydict(columns)
            # A clean batch (the common case) is passed on without a copy.
            yield pos, valid if ok.all() else valid.filter(pa.array(ok))

    def _item_text_batches(self) -> Iterator[pa.RecordBatch]:
        if self.item_text_path is None:
            return
        known = self.known_items()
        seen: set[str] = set()
        item_col = self.item_text_cols["item_text_item_col"]
        text_col = self.item_text_cols["item_text_col"]
        for pos, batch in self._batches(
            self.item_text_path, [item_col, text_col], self.reject_many
        ):
            ids = _ids(batch.column(item_col))
            text = _clean_texts(batch.column(text_col))
            ok = _reject_bad_ids(self.reject_many, pos, [(item_col, ids)])
            no_text = ok & _empty(text)
            self.reject_many("missing_text", int(no_text.sum()), _examples(pos, no_text))
            candidates = np.flatnonzero(ok & ~no_text)
            # Set lookups per row: pc.is_in would rebuild a hash table of all known items (and
            # of those seen so far) for every batch.
            keep, unknown, duplicate = [], [], []
            for row, item in zip(candidates, ids.values.take(pa.array(candidates)).to_pylist()):
                if item not in known:
                    unknown.append((row, item))
                elif item in seen:
                    duplicate.append((row, item))
                else:
                    seen.add(item)
                    keep.append(row)
            for reason, rejected in (
                ("unknown_item_in_text", unknown),
                ("duplicate_text", duplicate),
            ):
                where = ((pos.at(row), item) for row, item in rejected)
                self.reject_many(reason, len(rejected), where)
            take = pa.array(keep, pa.int64())
            yield pa.RecordBatch.from_arrays(
                [ids.values.take(take), text.take(take)], schema=ITEM_TEXT
            )


# --- one column at a time ------------------------------------------------------------------
class _Pos(NamedTuple):
    """Where the rows of a batch are: ``<path>:<unit> <number>`` (unit ``row`` or ``line``)."""

    path: Path
    unit: str
    numbers: np.ndarray  # int64 [n]

    def at(self, offset: int) -> str:
        return f"{self.path}:{self.unit} {int(self.numbers[offset])}"


class _Ids(NamedTuple):
    values: pa.Array  # string [n], canonical (stripped, NFC); any value where the id is rejected
    missing: np.ndarray  # bool [n]: null, empty or blank -> missing_field:<col>
    fractional: np.ndarray  # bool [n]: float with a fractional part (or NaN/inf) -> non_integer_id
    raw: pa.Array  # the input column, for log details
    # (reason, bool [n]) of ids refused for their bytes or type: undecodable_id (not UTF-8),
    # bad_id_type (list, struct or map values); None when the column cannot hold such ids.
    refused: tuple[str, np.ndarray] | None = None


class _Numbers(NamedTuple):
    values: np.ndarray  # float64 [n], NaN where null or bad
    null: np.ndarray  # bool [n]: absent or empty
    bad: np.ndarray  # bool [n]: present but not a finite number (timestamps: nor in int64)
    raw: pa.Array | None  # the input column, for log details


def _id_value(value: Any) -> Any:
    """One id as the row rule reads it: a string, ``_MISSING`` or ``_FRACTIONAL``."""
    if isinstance(value, str):
        value = canonical_id(value)[0] or ""
    if value is None or value == "":
        return _MISSING
    if isinstance(value, float):
        if not value.is_integer():
            return _FRACTIONAL
        value = int(value)
    return str(value)


def _ids(array: pa.Array) -> _Ids:
    """``_id_value`` applied to a whole column, vectorized for string, integer and float ids.

    Binary ids (Parquet ``bytes``, every CSV column) are decoded as UTF-8, and refused as
    ``undecodable_id`` where they are not UTF-8; list, struct and map ids as ``bad_id_type``.
    """
    array = _decoded(array)
    raw, kind, none = array, array.type, np.zeros(len(array), dtype=bool)
    refused = None
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        array, bad = _utf8(array)
        kind, refused = array.type, (UNDECODABLE_ID, bad)
    if pa.types.is_nested(kind):
        missing = _mask(pc.is_null(array), False)
        return _Ids(
            pa.nulls(len(array), pa.string()), missing, none, raw, ("bad_id_type", ~missing)
        )
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        # utf8_trim_whitespace strips exactly the code points str.strip() strips (checked for
        # all of Unicode in the tests); NFC as textutil.canonical_id (NFC, not NFKC).
        trimmed = pc.utf8_trim_whitespace(array.cast(pa.string()))
        if not _mask(pc.string_is_ascii(trimmed), True).all():
            trimmed = pc.utf8_normalize(trimmed, "NFC")
        missing = _empty(trimmed)
        if refused is not None:
            missing &= ~refused[1]
        return _Ids(trimmed, missing, none, raw, refused)
    if pa.types.is_integer(kind):
        return _Ids(array.cast(pa.string()), _mask(pc.is_null(array), False), none, array)
    if pa.types.is_floating(kind):
        x = array.cast(pa.float64())
        integral = _mask(pc.and_(pc.is_finite(x), pc.equal(pc.trunc(x), x)), False)
        # Integral floats beyond int64 keep every digit of str(int(value)): left to Python.
        if not np.any(np.abs(x.to_numpy(zero_copy_only=False)[integral]) >= _INT64_LIMIT):
            missing = _mask(pc.is_null(x), False)
            as_int = pc.if_else(pa.array(integral), x, 0.0).cast(pa.int64(), safe=False)
            return _Ids(as_int.cast(pa.string()), missing, ~missing & ~integral, array)
    if pa.types.is_null(kind):
        return _Ids(pa.nulls(len(array), pa.string()), ~none, none, array)
    parsed = [_id_value(v) for v in array.to_pylist()]
    missing = np.array([v is _MISSING for v in parsed], dtype=bool)
    fractional = np.array([v is _FRACTIONAL for v in parsed], dtype=bool)
    values = pa.array([v if isinstance(v, str) else None for v in parsed], pa.string())
    return _Ids(values, missing, fractional, array)


def _numbers(array: pa.Array | None, n: int, is_time: bool) -> _Numbers:
    """``textutil.to_float`` applied to a whole column (all null when the column is absent);
    timestamps may be Arrow timestamps/dates (-> epoch seconds) and must fit int64."""
    if array is None:
        return _Numbers(np.full(n, np.nan), np.ones(n, dtype=bool), np.zeros(n, dtype=bool), None)
    array = _decoded(array)
    if pa.types.is_binary(array.type) or pa.types.is_large_binary(array.type):
        array, undecodable = _utf8(array)  # not UTF-8: not a number either
        values, null, bad = _parse_numbers(array)
        bad |= undecodable
        null &= ~undecodable
        if is_time:
            bad |= ~null & ~bad & ~(np.abs(np.trunc(values)) < _INT64_LIMIT)
        values = np.where(bad | null, np.nan, np.trunc(values) if is_time else values)
        return _Numbers(values, null, bad, array)
    if is_time and (pa.types.is_timestamp(array.type) or pa.types.is_date(array.type)):
        array = array.cast(pa.timestamp("s"), safe=False).cast(pa.int64())
    kind = array.type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        null = _mask(pc.is_null(array), False)
        values = array.cast(pa.float64(), safe=False).to_numpy(zero_copy_only=False)
        bad = ~null & ~np.isfinite(values)
    elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
        values, null, bad = _parse_numbers(array.cast(pa.string()))
    elif pa.types.is_null(kind):
        values, null, bad = np.full(n, np.nan), np.ones(n, dtype=bool), np.zeros(n, dtype=bool)
    else:
        values, null, bad = _to_floats(array.to_pylist())
    if is_time:
        # int() of the row rule: a timestamp must be a whole int64 after truncation.
        bad |= ~null & ~bad & ~(np.abs(np.trunc(values)) < _INT64_LIMIT)
    values = np.where(bad | null, np.nan, np.trunc(values) if is_time else values)
    return _Numbers(values, null, bad, array)


def _parse_numbers(strings: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values, null, bad) of number strings: plain decimals by Arrow, the rest by to_float."""
    trimmed = pc.utf8_trim_whitespace(strings)
    null = _empty(trimmed)
    plain = _mask(pc.match_substring_regex(trimmed, _PLAIN_NUMBER), False)
    parsed = pc.if_else(pa.array(plain), trimmed, pa.scalar(None, pa.string()))
    values = parsed.cast(pa.float64()).to_numpy(zero_copy_only=False)
    bad = plain & ~np.isfinite(values)
    others = np.flatnonzero(~null & ~plain)
    if len(others):
        more_values, more_null, more_bad = _to_floats(strings.take(pa.array(others)).to_pylist())
        values[others], null[others], bad[others] = more_values, more_null, more_bad
    return values, null, bad


def _to_floats(raw: Sequence[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    parsed = [to_float(v) for v in raw]
    null = np.array([v is None for v in parsed], dtype=bool)
    bad = np.array([v is BAD for v in parsed], dtype=bool)
    values = np.array([v if isinstance(v, float) else np.nan for v in parsed], dtype=np.float64)
    return values, null, bad


def _clean_texts(array: pa.Array) -> pa.Array:
    """``textutil.clean`` of every value (string [n], no nulls): tags -> space, whitespace runs
    -> one space, trimmed; HTML entities and non-ASCII texts go through ``clean`` itself."""
    array = _decoded(array)
    if pa.types.is_binary(array.type) or pa.types.is_large_binary(array.type):
        array = _utf8(array, errors="replace")[0]
    if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
        return pa.array([clean(v) for v in array.to_pylist()], pa.string())
    text = pc.fill_null(array.cast(pa.string()), "")
    # Without "&", html.unescape changes nothing; on ASCII, RE2's and Python's regexes agree.
    simple = _mask(pc.and_(pc.string_is_ascii(text), pc.invert(pc.match_substring(text, "&"))))
    out = pc.replace_substring_regex(text, _TAGS.pattern, " ")
    out = pc.utf8_trim(pc.replace_substring_regex(out, _ASCII_SPACE_RUN, " "), " ")
    others = np.flatnonzero(~simple)
    if len(others):
        cleaned = pa.array([clean(v) for v in text.take(pa.array(others)).to_pylist()])
        out = pc.replace_with_mask(out, pa.array(~simple), cleaned)
    return out


# --- small helpers -------------------------------------------------------------------------
def _drop_blank_lines(
    path: Path, chunk: pa.RecordBatch, numbers: np.ndarray, reject: RejectMany
) -> tuple[pa.RecordBatch, np.ndarray]:
    """Reject (``blank_line``) the CSV rows whose every field is empty: the empty lines."""
    blank = np.logical_and.reduce([_empty(column) for column in chunk.columns])
    if not blank.any():
        return chunk, numbers
    reject("blank_line", int(blank.sum()), _examples(_Pos(path, "line", numbers), blank))
    return chunk.filter(pa.array(~blank)), numbers[~blank]


def _ignore(*_: Any) -> None:
    """A reject that counts nothing (for a second pass over rows already counted)."""


def _mask(condition: pa.Array, null_as: bool = True) -> np.ndarray:
    """A boolean Arrow array as a numpy bool array, nulls read as ``null_as``."""
    if condition.null_count:
        condition = pc.fill_null(condition, null_as)
    return condition.to_numpy(zero_copy_only=False)


def _empty(strings: pa.Array) -> np.ndarray:
    """Rows (numpy bool) that are null or the empty string."""
    lengths = pc.binary_length(strings)
    if lengths.null_count:
        lengths = pc.fill_null(lengths, 0)
    return lengths.to_numpy() == 0


def _utf8(array: pa.Array, errors: str = "strict") -> tuple[pa.Array, np.ndarray]:
    """A binary column as strings and the rows (bool) that are not UTF-8: those are null, or
    with ``errors="replace"`` decoded with U+FFFD. Valid columns are cast without a copy."""
    try:
        return array.cast(pa.string()), np.zeros(len(array), dtype=bool)
    except pa.ArrowInvalid:
        pass
    values, bad = [], np.zeros(len(array), dtype=bool)
    for i, raw in enumerate(array.to_pylist()):
        try:
            values.append(None if raw is None else raw.decode("utf-8"))
        except UnicodeDecodeError:
            bad[i] = errors == "strict"
            values.append(None if bad[i] else raw.decode("utf-8", errors))
    return pa.array(values, pa.string()), bad


def _parquet_batches(path: Path, columns: list[str], rows: int) -> Iterator[pa.RecordBatch]:
    """Record batches of a Parquet file; a corrupt or truncated file raises InputError."""
    try:
        yield from pq.ParquetFile(path).iter_batches(rows, columns=columns)
    except (pa.ArrowException, OSError) as err:
        raise InputError(f"{path}: unreadable Parquet ({type(err).__name__}: {err})") from None


def _decoded(array: pa.Array) -> pa.Array:
    """Dictionary-encoded columns (pandas categoricals) as plain ones."""
    return array.dictionary_decode() if pa.types.is_dictionary(array.type) else array


def _optional(batch: pa.RecordBatch, name: str | None) -> pa.Array | None:
    return None if name is None else batch.column(name)


def _reject_bad_ids(
    reject: RejectMany, pos: _Pos, columns: Sequence[tuple[str, _Ids]]
) -> np.ndarray:
    """Count the missing, refused and fractional ids of each (name, ids) column; returns the
    rows whose ids all pass. A row with two bad ids counts twice, as when its ids were checked
    one by one."""
    ok = np.ones(len(columns[0][1].missing), dtype=bool)
    for col, ids in columns:
        reject(f"missing_field:{col}", int(ids.missing.sum()), _examples(pos, ids.missing))
        if ids.refused is not None:
            reason, refused = ids.refused
            refused = refused & ~ids.missing
            reject(f"{reason}:{col}", int(refused.sum()), _examples(pos, refused, ids.raw))
            ok &= ~refused
        ok &= ~(ids.missing | ids.fractional)
    count = sum(int(ids.fractional.sum()) for _, ids in columns)
    reject("non_integer_id", count, _fractional_examples(pos, [ids for _, ids in columns]))
    return ok


def _examples(
    pos: _Pos, mask: np.ndarray, raw: pa.Array | None = None
) -> Iterator[tuple[str, str]]:
    """(file:row, repr of the raw value) of the rows in ``mask``, lazily (only logged ones)."""
    for offset in np.flatnonzero(mask):
        detail = "" if raw is None else repr(raw[int(offset)].as_py())
        yield pos.at(int(offset)), detail


def _fractional_examples(pos: _Pos, columns: Sequence[_Ids]) -> Iterator[tuple[str, str]]:
    """Fractional ids in row order (a row with two of them gives two examples)."""
    for offset in np.flatnonzero(np.logical_or.reduce([c.fractional for c in columns])):
        for column in columns:
            if column.fractional[offset]:
                yield pos.at(int(offset)), repr(column.raw[int(offset)].as_py())


def _base_suffix(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    return suffixes[-1] if suffixes else ""


def _files(root: Path) -> list[Path]:
    if root.is_file():
        if _base_suffix(root) not in _PARQUET + _CSV:
            raise SchemaError(f"table: {root}: unsupported extension (parquet, pq, csv, tsv, txt)")
        return [root]
    if not root.is_dir():
        raise SchemaError(f"table: path not found: {root}")
    files = sorted(p for p in root.iterdir() if p.is_file() and _base_suffix(p) in _PARQUET + _CSV)
    if not files:
        raise SchemaError(f"table: no .parquet/.csv/.tsv files in {root}")
    return files


def _require_columns(path: Path, delimiter: str, cols: dict[str, str | None]) -> None:
    if _base_suffix(path) in _PARQUET:
        try:
            found = pq.read_schema(path).names
        except (OSError, pa.ArrowInvalid) as err:
            raise SchemaError(f"{path}: not a readable Parquet file: {err}") from err
    else:
        try:
            with open_text(path, encoding="utf-8-sig") as f:  # a UTF-8 BOM is not a name
                found = next(csv.reader(f, delimiter=delimiter), [])
        except (OSError, EOFError, csv.Error) as err:
            raise SchemaError(
                f"{path}:1: unreadable header ({type(err).__name__}: {err})"
            ) from None
    for key, col in cols.items():
        if col is not None and col not in found:
            raise SchemaError(f"{path}: no column {col!r} (config key {key}); found {found}")
