"""S3Rec / SASRec / P5 sequence files: one line per user, ``user item item ...``.

Config keys (besides ``name: sequences``, ``path``, ``batch_rows``):

- ``path``: the sequence file (e.g. ``Beauty.txt``, ``user_sequence.txt``).
- ``integer_ids`` (default true): ids must be integers (S3Rec/SASRec); they are canonicalised
  (``"007" -> "7"``; ASCII digits only: ``１２`` is not ``12``). Set false for raw-id files such as
  P5's ``user_sequence.txt`` (ids canonical as in ``textutil.canonical_id``; a token with bytes
  that are not valid in ``encoding`` makes the line ``undecodable_id``).
- ``item_text_path`` (default null): optional ``item text...`` file, one item per line (e.g.
  IDGenRec's ``item_generative_indexing_phase_0.txt``).
- ``user_text_path`` (default null): optional ``user text...`` file, same layout.
- ``encoding`` (default utf-8).

Emits rating = null and timestamp = position of the item in the user's line (0-based), so the
chronological order of the sequence is kept. Rejection reasons: ``blank_line``,
``empty_history``, ``non_integer_id``, ``undecodable_id``, ``missing_text``, ``unknown_item_in_text``,
``unknown_user_in_text``, ``duplicate_text``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from data_prep.readers.base import RawReader, optional_path
from data_prep.readers.textutil import canonical_id, clean, numbered_lines

# An integer id: ASCII digits only (int() would also read fullwidth or Arabic-Indic digits and
# merge them into an ASCII id).
_INTEGER = re.compile(r"[+-]?[0-9]+")


class SequencesReader(RawReader):
    """Reader of whitespace-separated ``user item item ...`` files."""

    name = "sequences"

    def __init__(self, cfg: Mapping[str, Any]):
        super().__init__(cfg)
        self.integer_ids = bool(cfg.get("integer_ids", True))
        self.encoding = str(cfg.get("encoding", "utf-8"))
        self.item_text_path = optional_path(cfg, "item_text_path")
        self.user_text_path = optional_path(cfg, "user_text_path")

    def check_schema(self) -> None:
        """Check that the sequence file and any configured text files exist."""
        self.require_file(self.path, "sequence file (path)")
        if self.item_text_path is not None:
            self.require_file(self.item_text_path, "item text file (item_text_path)")
        if self.user_text_path is not None:
            self.require_file(self.user_text_path, "user text file (user_text_path)")

    def _canonical(self, token: str) -> str | None:
        if not self.integer_ids:
            return canonical_id(token)[0]
        return str(int(token)) if _INTEGER.fullmatch(token) else None

    def _bad_id_reason(self) -> str:
        return "non_integer_id" if self.integer_ids else "undecodable_id"

    def _interaction_rows(self) -> Iterator[tuple[str, str, None, int]]:
        for where, line in numbered_lines(self.path, self.encoding):
            tokens = line.split()
            if not tokens:
                self.reject("blank_line", where)
                continue
            if len(tokens) == 1:
                self.reject("empty_history", where, line)
                continue
            ids = [self._canonical(t) for t in tokens]
            if any(i is None for i in ids):
                # One bad token makes the whole line suspect (a shifted or merged line).
                self.reject(self._bad_id_reason(), where, line)
                continue
            user = ids[0]
            for position, item in enumerate(ids[1:]):
                yield user, item, None, position

    def _text_rows(self, path: Path | None, known: frozenset[str], kind: str):
        if path is None:
            return
        seen: set[str] = set()
        for where, line in numbered_lines(path, self.encoding):
            key, _, rest = line.strip().replace("\t", " ").partition(" ")
            if not key:
                self.reject("blank_line", where)
                continue
            key_id = self._canonical(key)
            text = clean(rest)
            if key_id is None:
                self.reject(self._bad_id_reason(), where, line)
            elif not text:
                self.reject("missing_text", where, line)
            elif key_id not in known:
                self.reject(f"unknown_{kind}_in_text", where, key)
            elif key_id in seen:
                self.reject("duplicate_text", where, key)
            else:
                seen.add(key_id)
                yield key_id, text

    def _item_text_rows(self) -> Iterator[tuple[str, str]]:
        if self.item_text_path is not None:
            yield from self._text_rows(self.item_text_path, self.known_items(), "item")

    def _user_text_rows(self) -> Iterator[tuple[str, str]]:
        if self.user_text_path is not None:
            yield from self._text_rows(self.user_text_path, self.known_users(), "user")
