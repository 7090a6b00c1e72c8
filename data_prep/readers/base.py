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

Subclasses either yield plain tuples (``_interaction_rows`` ...), which the base class packs into
batches, or override the batch hooks (``_interaction_batches`` ...) to produce whole Arrow
batches themselves, as the ``table`` reader does.
"""

from __future__ import annotations

import abc
import collections
import importlib
import itertools
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc

from data_prep.readers.textutil import printable

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


class InputError(SchemaError):
    """An input file cannot be read on (corrupt compression or pages, a row longer than the
    parser's block); the message names the file and, where known, the line."""


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
        # Distinct ids of the last complete interactions pass, as Arrow arrays; the frozensets
        # are built from them only when a text stream asks.
        self._item_ids: pa.Array | None = None
        self._user_ids: pa.Array | None = None
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
        users, items = _DistinctIds(), _DistinctIds()
        for batch in self._stream_batches("interactions", self._interaction_batches):
            users.add(batch.column(0))
            items.add(batch.column(1))
            yield batch
        # Only a complete pass defines the id universe used to validate the text files.
        self._user_ids, self._item_ids = users.result(), items.result()
        self._known_users = self._known_items = None

    def item_texts(self) -> Iterator[pa.RecordBatch]:
        """Yield ITEM_TEXT batches (item, text) for items that occur in the interactions."""
        yield from self._stream_batches("item_texts", self._item_text_batches)

    def user_texts(self) -> Iterator[pa.RecordBatch]:
        """Yield USER_TEXT batches (user, text) for users that occur in the interactions."""
        yield from self._stream_batches("user_texts", self._user_text_batches)

    def reviews(self) -> Iterator[pa.RecordBatch]:
        """Yield REVIEWS batches (user, item, text)."""
        yield from self._stream_batches("reviews", self._review_batches)

    # --- batch hooks: override to yield whole Arrow batches (at most batch_rows each) ---------
    def _interaction_batches(self) -> Iterator[pa.RecordBatch]:
        return self._pack(INTERACTIONS, self._interaction_rows())

    def _item_text_batches(self) -> Iterator[pa.RecordBatch]:
        return self._pack(ITEM_TEXT, self._item_text_rows())

    def _user_text_batches(self) -> Iterator[pa.RecordBatch]:
        return self._pack(USER_TEXT, self._user_text_rows())

    def _review_batches(self) -> Iterator[pa.RecordBatch]:
        return self._pack(REVIEWS, self._review_rows())

    # --- or implement these: plain tuples in schema order -------------------------------------
    def _interaction_rows(self) -> Iterator[tuple[str, str, float | None, int | None]]:
        """(user, item, rating, timestamp) tuples; call ``self.reject`` for bad records."""
        raise NotImplementedError(f"{type(self).__name__} yields no interactions")

    def _item_text_rows(self) -> Iterator[tuple[str, str]]:
        return iter(())

    def _user_text_rows(self) -> Iterator[tuple[str, str]]:
        return iter(())

    def _review_rows(self) -> Iterator[tuple[str, str, str]]:
        return iter(())

    # --- helpers for subclasses --------------------------------------------------------------
    def reject(self, reason: str, where: str, detail: str = "") -> None:
        """Count one skipped record under ``reason``; log the first few with ``where`` (file:line)."""
        self.reject_many(reason, 1, [(where, detail)])

    def reject_many(self, reason: str, count: int, examples: Iterable[tuple[str, str]]) -> None:
        """Count ``count`` skipped records under ``reason`` (a whole batch's worth at once).

        ``examples`` yields (where, detail) of those records in order; it is consumed only as far
        as logging the first few of the reason needs, so it may be a lazy generator.
        """
        if count <= 0:
            return
        counter = self._rejected_by_stream.setdefault(self._stream, collections.Counter())
        to_log = max(0, min(count, LOG_FIRST_REJECTS - counter[reason]))
        counter[reason] += count
        for where, detail in itertools.islice(examples, to_log):
            log.warning(
                "%s: %s: rejected (%s) %s", self.name, printable(where), reason,
                printable(detail[:200]),
            )  # fmt: skip

    def known_items(self) -> frozenset[str]:
        """Item ids present in the interactions (runs a pass over them if none finished yet)."""
        if self._item_ids is None:
            self._scan_ids()
        if self._known_items is None:
            assert self._item_ids is not None
            self._known_items = frozenset(self._item_ids.to_pylist())
        return self._known_items

    def known_users(self) -> frozenset[str]:
        """User ids present in the interactions (runs a pass over them if none finished yet)."""
        if self._user_ids is None:
            self._scan_ids()
        if self._known_users is None:
            assert self._user_ids is not None
            self._known_users = frozenset(self._user_ids.to_pylist())
        return self._known_users

    def require_file(self, path: Path, what: str) -> Path:
        """Return ``path`` if it is a file, else raise SchemaError saying which input is missing."""
        if not path.is_file():
            raise SchemaError(f"{self.name}: {what} not found: {path}")
        return path

    # --- internals ---------------------------------------------------------------------------
    def _stream_batches(
        self, stream: str, batches: Callable[[], Iterable[pa.RecordBatch]]
    ) -> Iterator[pa.RecordBatch]:
        # Re-select the stream's counter after every yield: the caller may interleave streams.
        self._rejected_by_stream[stream] = collections.Counter()
        self._stream = stream
        for batch in batches():
            if batch.num_rows:
                yield batch
                self._stream = stream

    def _pack(self, schema: pa.Schema, rows: Iterable[tuple]) -> Iterator[pa.RecordBatch]:
        """Batches of ``schema`` (batch_rows rows each, the last may be shorter) from tuples."""
        columns: list[list[Any]] = [[] for _ in schema]
        for row in rows:
            for column, value in zip(columns, row):
                column.append(value)
            if len(columns[0]) >= self.batch_rows:
                yield _to_batch(schema, columns)
                columns = [[] for _ in schema]
        if columns[0]:
            yield _to_batch(schema, columns)

    def _scan_ids(self) -> None:
        stream = self._stream
        for _ in self.interactions():
            pass
        self._stream = stream


class _DistinctIds:
    """The distinct values of an id column seen batch by batch, kept in Arrow (no Python str per
    id): per-batch uniques are merged whenever they outgrow the merged set, so the work stays
    linear in the rows and the memory within about twice the distinct ids."""

    def __init__(self) -> None:
        self._parts: list[pa.Array] = []
        self._pending = 0
        self._distinct = 0

    def add(self, ids: pa.Array) -> None:
        part = pc.unique(ids)
        self._parts.append(part)
        self._pending += len(part)
        if self._pending > 2 * self._distinct + (1 << 20):
            self._merge()

    def result(self) -> pa.Array:
        """The distinct ids (any order)."""
        self._merge()
        return self._parts[0] if self._parts else pa.array([], pa.string())

    def _merge(self) -> None:
        if len(self._parts) > 1:
            self._parts = [pc.unique(pa.chunked_array(self._parts))]
        self._distinct = self._pending = sum(len(p) for p in self._parts)


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
