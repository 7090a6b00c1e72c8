"""Amazon review dumps (McAuley 2014 / Ni 2018 5-core): review JSON lines + optional metadata.

Config keys (besides ``name: amazon_reviews``, ``path``, ``batch_rows``):

- ``path``: the review file (``reviews_Beauty_5.json[.gz]``, ``Beauty_5.json.gz``), one JSON
  object per line with ``reviewerID``, ``asin``, ``overall``, ``reviewText``, ``summary``,
  ``unixReviewTime``.
- ``meta_path`` (default null): metadata lines with ``asin``, ``title``, ``description``,
  ``categories`` (2014: list of category paths) or ``category`` (2018: list), ``brand``.
  The 2014 metadata is Python-literal rather than JSON (single quotes); such lines are parsed
  with ``ast.literal_eval``.
- ``text_fields`` (default ``[title, brand, categories, category, description]``): metadata
  fields joined as sentences into the item text.

Both files are read line by line (gzip on the fly). Reviews: summary + reviewText as sentences;
a review is emitted only for a record that also makes an interaction, and malformed records of the
review file are counted once, by ``interactions()``.
Rejection reasons: ``bad_json`` (also nested deeper than the parser allows),
``missing_field:<name>``, ``bad_id_type:<name>`` (an id that is not a string),
``blank_id:<name>`` / ``undecodable_id:<name>`` (``textutil.canonical_id``), ``bad_rating``,
``bad_timestamp`` (also outside int64),
``empty_review`` (reviews stream only; the interaction is kept), ``missing_text``,
``unknown_item_in_text``, ``duplicate_text``.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from data_prep.readers.base import RawReader, SchemaError, optional_path
from data_prep.readers.textutil import (
    BAD,
    canonical_id,
    join_sentences,
    numbered_lines,
    open_text,
    to_float,
    to_timestamp,
)

DEFAULT_TEXT_FIELDS = ("title", "brand", "categories", "category", "description")
REVIEW_FIELDS = ("reviewerID", "asin")


class AmazonReviewsReader(RawReader):
    """Reader of Amazon review JSON lines and metadata JSON lines."""

    name = "amazon_reviews"

    def __init__(self, cfg: Mapping[str, Any]):
        super().__init__(cfg)
        self.meta_path = optional_path(cfg, "meta_path")
        self.text_fields = tuple(cfg.get("text_fields", DEFAULT_TEXT_FIELDS))

    def check_schema(self) -> None:
        """Files exist; the first review has reviewerID/asin, the first metadata line asin."""
        self._check_first(self.require_file(self.path, "review file (path)"), REVIEW_FIELDS)
        if self.meta_path is not None:
            self._check_first(self.require_file(self.meta_path, "metadata (meta_path)"), ("asin",))

    def _check_first(self, path: Path, keys: tuple[str, ...]) -> None:
        with open_text(path) as f:
            line = f.readline()
        record = _parse(line)
        if not isinstance(record, dict):
            raise SchemaError(f"{path}:1: not a JSON object: {line[:80]!r}")
        for key in keys:
            if key not in record:
                raise SchemaError(f"{path}:1: no key {key!r} (found {sorted(record)})")

    def _records(
        self, path: Path, keys: tuple[str, ...], count: bool = True
    ) -> Iterator[tuple[str, dict]]:
        for where, line in numbered_lines(path):
            if not line.strip():
                continue
            record = _parse(line)
            if not isinstance(record, dict):
                if count:
                    self.reject("bad_json", where, line)
                continue
            problem = next((p for p in (_id_problem(record, k) for k in keys) if p), None)
            if problem:
                if count:
                    self.reject(problem, where, line)
                continue
            for key in keys:
                record[key] = canonical_id(record[key])[0]
            yield where, record

    def _valid_reviews(self, count: bool) -> Iterator[tuple[str, dict, float | None, int | None]]:
        """Review records that make an interaction; ``count`` says whether to count rejects."""
        for where, r in self._records(self.path, REVIEW_FIELDS, count):
            rating = to_float(r.get("overall"))
            timestamp = to_timestamp(r.get("unixReviewTime"))
            if rating is BAD or timestamp is BAD:
                if count:
                    field = "overall" if rating is BAD else "unixReviewTime"
                    reason = "bad_rating" if rating is BAD else "bad_timestamp"
                    self.reject(reason, where, f"{field}={r.get(field)!r}")
                continue
            yield where, r, rating, timestamp

    def _interaction_rows(self) -> Iterator[tuple[str, str, float | None, int | None]]:
        for _, r, rating, timestamp in self._valid_reviews(count=True):
            yield r["reviewerID"], r["asin"], rating, timestamp

    def _review_rows(self) -> Iterator[tuple[str, str, str]]:
        # The interactions stream already counted this file's malformed records.
        for where, r, _, _ in self._valid_reviews(count=False):
            text = join_sentences([r.get("summary"), r.get("reviewText")])
            if text:
                yield r["reviewerID"], r["asin"], text
            else:
                self.reject("empty_review", where)

    def _item_text_rows(self) -> Iterator[tuple[str, str]]:
        if self.meta_path is None:
            return
        known = self.known_items()
        seen: set[str] = set()
        for where, r in self._records(self.meta_path, ("asin",)):
            item = r["asin"]
            text = join_sentences(r.get(field) for field in self.text_fields)
            if not text:
                self.reject("missing_text", where)
            elif item not in known:
                self.reject("unknown_item_in_text", where, item)
            elif item in seen:
                self.reject("duplicate_text", where, item)
            else:
                seen.add(item)
                yield item, text


def _id_problem(record: dict, key: str) -> str | None:
    """The rejection reason of ``record[key]`` as an id, or None if it is acceptable."""
    value = record.get(key)
    if value is None or value == "":
        return f"missing_field:{key}"
    if not isinstance(value, str):
        return f"bad_id_type:{key}"
    reason = canonical_id(value)[1]
    return None if reason is None else f"{reason}:{key}"


def _parse(line: str) -> Any:
    """JSON, falling back to a Python literal (2014 metadata); None when neither parses (also
    for nesting deeper than the parsers' recursion limit)."""
    try:
        return json.loads(line)
    except (json.JSONDecodeError, RecursionError):
        pass
    try:
        return ast.literal_eval(line.strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
