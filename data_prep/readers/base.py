"""The raw-reader protocol: every source format becomes four streams of Arrow record batches.

Config keys every reader takes (the ``source`` config node):

- ``name``: registry key (``movielens``, ``sequences``, ``lcrec_json``, ``amazon_reviews``,
  ``table``), or ``"package.module:ClassName"`` for a reader outside this package.
- ``path``: the input file or directory.
- ``batch_rows`` (default 65536): maximum rows per yielded record batch.

Each reader module documents its own extra keys. Streams (all may be iterated more than once):

- ``interactions()`` -> INTERACTIONS batches (``rating`` / ``timestamp`` nullable; sequence
  formats put the position in the user's sequence into ``timestamp`` so order survives).
- ``item_texts()`` -> ITEM_TEXT, ``user_texts()`` -> USER_TEXT, ``reviews()`` -> REVIEWS;
  each may yield nothing.

Malformed records are skipped and counted in ``rejected`` (reason -> count); the first few of each
reason are logged with file:line. Iterating a stream again recounts that stream from zero, so
``rejected`` never double-counts.
"""

from __future__ import annotations

import abc
import collections
import importlib
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc

log = logging.getLogger(__name__)

INTERACTIONS = pa.schema(
    [
        ("user", pa.string()),
        ("item", pa.string()),
        ("rating", pa.float64()),
        ("timestamp", pa.int64()),
    ]
)
ITEM_TEXT = pa.schema([("item", pa.string()), ("text", pa.string())])
USER_TEXT = pa.schema([("user", pa.string()), ("text", pa.string())])
REVIEWS = pa.schema([("user", pa.string()), ("item", pa.string()), ("text", pa.string())])

DEFAULT_BATCH_ROWS = 65536
# Log this many examples of each rejection reason; the rest are only counted.
LOG_FIRST_REJECTS = 3

_REGISTRY: dict[str, str] = {
    "movielens": "data_prep.readers.movielens:MovieLensReader",
    "sequences": "data_prep.readers.sequences:SequencesReader",
    "lcrec_json": "data_prep.readers.lcrec_json:LCRecJsonReader",
    "amazon_reviews": "data_prep.readers.amazon_reviews:AmazonReviewsReader",
    "table": "data_prep.readers.table:TableReader",
}


class SchemaError(ValueError):
    """The input does not have the files, columns or keys the reader needs."""


class RawReader(abc.ABC):
    """Base class of raw-format readers; subclasses set ``name`` and implement the streams."""

    name: ClassVar[str]

    def __init__(self, cfg: Mapping[str, Any]):
        if "path" not in cfg or cfg["path"] in (None, ""):
            raise SchemaError(f"source config for reader {self.name!r} has no 'path'")
        self.cfg: Mapping[str, Any] = cfg
        self.path = Path(str(cfg["path"])).expanduser()
        self.batch_rows = int(cfg.get("batch_rows", DEFAULT_BATCH_ROWS))
        if self.batch_rows <= 0:
            raise SchemaError(f"batch_rows must be positive, got {self.batch_rows}")
        self._rejected_by_stream: dict[str, collections.Counter[str]] = {}
        self._stream = "check_schema"
        self._known_items: frozenset[str] | None = None
        self._known_users: frozenset[str] | None = None

    # --- protocol -------------------------------------------------------------------------
    @property
    def rejected(self) -> collections.Counter[str]:
        """Reason -> count of skipped records over all streams iterated so far."""
        total: collections.Counter[str] = collections.Counter()
        for counter in self._rejected_by_stream.values():
            total.update(counter)
        return total

    @abc.abstractmethod
    def check_schema(self) -> None:
        """Cheap up-front check (files exist, headers/columns/keys present); raises SchemaError."""

    def interactions(self) -> Iterator[pa.RecordBatch]:
        """Yield INTERACTIONS batches (user, item, rating?, timestamp?) of at most batch_rows."""
        users: set[str] = set()
        items: set[str] = set()
        for batch in self._stream_batches("interactions", INTERACTIONS, self._interaction_rows):
            users.update(pc.unique(batch.column(0)).to_pylist())
            items.update(pc.unique(batch.column(1)).to_pylist())
            yield batch
        # Only a complete pass defines the id universe used to validate the text files.
        self._known_users, self._known_items = frozenset(users), frozenset(items)

    def item_texts(self) -> Iterator[pa.RecordBatch]:
        """Yield ITEM_TEXT batches (item, text) for items that occur in the interactions."""
        yield from self._stream_batches("item_texts", ITEM_TEXT, self._item_text_rows)

    def user_texts(self) -> Iterator[pa.RecordBatch]:
        """Yield USER_TEXT batches (user, text) for users that occur in the interactions."""
        yield from self._stream_batches("user_texts", USER_TEXT, self._user_text_rows)

    def reviews(self) -> Iterator[pa.RecordBatch]:
        """Yield REVIEWS batches (user, item, text)."""
        yield from self._stream_batches("reviews", REVIEWS, self._review_rows)

    # --- what subclasses implement: plain tuples in schema order ------------------------------
    @abc.abstractmethod
    def _interaction_rows(self) -> Iterator[tuple[str, str, float | None, int | None]]:
        """(user, item, rating, timestamp) tuples; call ``self.reject`` for bad records."""

    def _item_text_rows(self) -> Iterator[tuple[str, str]]:
        return iter(())

    def _user_text_rows(self) -> Iterator[tuple[str, str]]:
        return iter(())

    def _review_rows(self) -> Iterator[tuple[str, str, str]]:
        return iter(())

    # --- helpers for subclasses --------------------------------------------------------------
    def reject(self, reason: str, where: str, detail: str = "") -> None:
        """Count one skipped record under ``reason``; log the first few with ``where`` (file:line)."""
        counter = self._rejected_by_stream.setdefault(self._stream, collections.Counter())
        counter[reason] += 1
        if counter[reason] <= LOG_FIRST_REJECTS:
            log.warning("%s: %s: rejected (%s) %s", self.name, where, reason, detail[:200])

    def known_items(self) -> frozenset[str]:
        """Item ids present in the interactions (runs a pass over them if none finished yet)."""
        if self._known_items is None:
            self._scan_ids()
        assert self._known_items is not None
        return self._known_items

    def known_users(self) -> frozenset[str]:
        """User ids present in the interactions (runs a pass over them if none finished yet)."""
        if self._known_users is None:
            self._scan_ids()
        assert self._known_users is not None
        return self._known_users

    def require_file(self, path: Path, what: str) -> Path:
        """Return ``path`` if it is a file, else raise SchemaError saying which input is missing."""
        if not path.is_file():
            raise SchemaError(f"{self.name}: {what} not found: {path}")
        return path

    # --- internals ---------------------------------------------------------------------------
    def _stream_batches(
        self, stream: str, schema: pa.Schema, rows: Callable[[], Iterable[tuple]]
    ) -> Iterator[pa.RecordBatch]:
        # Re-select the stream's counter after every yield: the caller may interleave streams.
        self._rejected_by_stream[stream] = collections.Counter()
        self._stream = stream
        columns: list[list[Any]] = [[] for _ in schema]
        for row in rows():
            for column, value in zip(columns, row):
                column.append(value)
            if len(columns[0]) >= self.batch_rows:
                yield _to_batch(schema, columns)
                self._stream = stream
                columns = [[] for _ in schema]
        if columns[0]:
            yield _to_batch(schema, columns)

    def _scan_ids(self) -> None:
        stream = self._stream
        for _ in self.interactions():
            pass
        self._stream = stream


def _to_batch(schema: pa.Schema, columns: list[list[Any]]) -> pa.RecordBatch:
    arrays = [pa.array(col, type=field.type) for col, field in zip(columns, schema)]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def optional_path(cfg: Mapping[str, Any], key: str) -> Path | None:
    """``cfg[key]`` as a Path, or None when the key is absent, null or empty."""
    value = cfg.get(key)
    return None if value in (None, "") else Path(str(value)).expanduser()


def build_reader(source_cfg: Mapping[str, Any]) -> RawReader:
    """Instantiate the reader named by ``source_cfg["name"]`` with the whole node as its config."""
    name = source_cfg.get("name")
    if not name:
        raise SchemaError("source config has no 'name' (one of: " + ", ".join(_REGISTRY) + ")")
    target = _REGISTRY.get(str(name), str(name))
    if ":" not in target:
        raise SchemaError(f"unknown reader {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    module_name, class_name = target.split(":", 1)
    cls = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(cls, type) and issubclass(cls, RawReader)):
        raise SchemaError(f"{target} is not a RawReader subclass")
    return cls(source_cfg)
