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
- ``item_text_path`` (default null): optional item-text table (same formats), with
  ``item_text_item_col`` (default ``item``) and ``item_text_col`` (default ``text``).

The named columns are checked in every file before any work (SchemaError naming file and
column). Rejection reasons: ``bad_csv_row`` (wrong number of fields), ``missing_field:<col>``,
``non_integer_id`` (a fractional float id), ``bad_rating``, ``bad_timestamp``, ``empty_review``,
``missing_text``, ``unknown_item_in_text``, ``duplicate_text``.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from data_prep.readers.base import RawReader, SchemaError, optional_path
from data_prep.readers.textutil import BAD, clean, open_text, to_float

_PARQUET = (".parquet", ".pq")
_CSV = (".csv", ".tsv", ".txt")


class TableReader(RawReader):
    """Reader of Parquet / CSV interaction tables and an optional item-text table."""

    name = "table"

    def __init__(self, cfg: Any):
        super().__init__(cfg)
        self.cols = {
            key: (None if cfg.get(key) in (None, "") else str(cfg.get(key)))
            for key in ("rating_col", "timestamp_col", "text_col")
        }
        self.cols["user_col"] = str(cfg.get("user_col", "user"))
        self.cols["item_col"] = str(cfg.get("item_col", "item"))
        self.delimiter = cfg.get("delimiter")
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
        self, root: Path, columns: list[str], reject: Callable[..., None]
    ) -> Iterator[tuple[Path, int, pa.Table]]:
        """Yield (file, first row number, table of ``columns``) in bounded chunks."""
        for path in _files(root):
            first = 1
            if _base_suffix(path) in _PARQUET:
                chunks = pq.ParquetFile(path).iter_batches(self.batch_rows, columns=columns)
            else:
                chunks = self._csv_batches(path, columns, reject)
            for chunk in chunks:
                yield path, first, pa.Table.from_batches([chunk])
                first += chunk.num_rows

    def _csv_batches(
        self, path: Path, columns: list[str], reject: Callable[..., None]
    ) -> Iterator[pa.RecordBatch]:
        def invalid(row: Any) -> str:
            # Row numbers from pyarrow count the header line as row 1 when known.
            reject("bad_csv_row", f"{path}:{row.number or '?'}", row.text or "")
            return "skip"

        reader = pacsv.open_csv(
            path,
            parse_options=pacsv.ParseOptions(
                delimiter=self._delimiter(path), invalid_row_handler=invalid
            ),
            # Everything as strings: parsing (and counting failures) happens per value below.
            convert_options=pacsv.ConvertOptions(
                include_columns=columns, column_types={c: pa.string() for c in columns}
            ),
        )
        yield from reader

    # --- streams ---------------------------------------------------------------------------
    def _interaction_rows(self) -> Iterator[tuple[str, str, float | None, int | None]]:
        for _where, user, item, rating, timestamp, _ in self._rows(with_text=False, count=True):
            yield user, item, rating, timestamp

    def _review_rows(self) -> Iterator[tuple[str, str, str]]:
        if self.cols["text_col"] is None:
            return
        # The interactions stream already counted the malformed rows of these files.
        for where, user, item, _, _, text in self._rows(with_text=True, count=False):
            if text:
                yield user, item, text
            else:
                self.reject("empty_review", where)

    def _rows(self, with_text: bool, count: bool) -> Iterator[tuple[str, str, str, Any, Any, str]]:
        """Valid rows as (where, user, item, rating, timestamp, text); ``count`` rejections?"""
        reject = self.reject if count else _ignore
        c = self.cols
        wanted = ["user_col", "item_col", "rating_col", "timestamp_col"]
        if with_text:
            wanted.append("text_col")
        names = [c[k] for k in wanted if c[k] is not None]
        for path, first, table in self._batches(self.path, list(dict.fromkeys(names)), reject):
            columns = {k: _column(table, c[k], k == "timestamp_col") for k in wanted}
            for offset in range(table.num_rows):
                where = f"{path}:row {first + offset}"
                user = self._id(columns["user_col"][offset], c["user_col"], where, reject)
                item = self._id(columns["item_col"][offset], c["item_col"], where, reject)
                if user is None or item is None:
                    continue
                rating = to_float(columns["rating_col"][offset])
                if rating is BAD:
                    reject("bad_rating", where, repr(columns["rating_col"][offset]))
                    continue
                timestamp = to_float(columns["timestamp_col"][offset])
                if timestamp is BAD:
                    reject("bad_timestamp", where, repr(columns["timestamp_col"][offset]))
                    continue
                text = clean(columns["text_col"][offset]) if with_text else ""
                ts = None if timestamp is None else int(timestamp)
                yield where, user, item, rating, ts, text

    @staticmethod
    def _id(value: Any, col: str, where: str, reject: Callable[..., None]) -> str | None:
        if isinstance(value, str):
            value = value.strip()
        if value is None or value == "":
            reject(f"missing_field:{col}", where)
            return None
        if isinstance(value, float):
            if not value.is_integer():
                reject("non_integer_id", where, repr(value))
                return None
            value = int(value)
        return str(value)

    def _item_text_rows(self) -> Iterator[tuple[str, str]]:
        if self.item_text_path is None:
            return
        known = self.known_items()
        seen: set[str] = set()
        item_col = self.item_text_cols["item_text_item_col"]
        text_col = self.item_text_cols["item_text_col"]
        for path, first, table in self._batches(
            self.item_text_path, [item_col, text_col], self.reject
        ):
            items, texts = table.column(item_col).to_pylist(), table.column(text_col).to_pylist()
            for offset, (raw_item, raw_text) in enumerate(zip(items, texts)):
                where = f"{path}:row {first + offset}"
                item = self._id(raw_item, item_col, where, self.reject)
                text = clean(raw_text)
                if item is None:
                    continue
                if not text:
                    self.reject("missing_text", where)
                elif item not in known:
                    self.reject("unknown_item_in_text", where, item)
                elif item in seen:
                    self.reject("duplicate_text", where, item)
                else:
                    seen.add(item)
                    yield item, text


def _ignore(*_: Any) -> None:
    """A reject() that counts nothing (for a second pass over rows already counted)."""


def _column(table: pa.Table, name: str | None, is_time: bool) -> list[Any]:
    """Column values as Python objects; absent columns are all-None; times become seconds."""
    if name is None:
        return [None] * table.num_rows
    array = table.column(name)
    if is_time and (pa.types.is_timestamp(array.type) or pa.types.is_date(array.type)):
        array = array.cast(pa.timestamp("s"), safe=False).cast(pa.int64())
    return array.to_pylist()


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
        with open_text(path) as f:
            found = next(csv.reader(f, delimiter=delimiter), [])
    for key, col in cols.items():
        if col is not None and col not in found:
            raise SchemaError(f"{path}: no column {col!r} (config key {key}); found {found}")
