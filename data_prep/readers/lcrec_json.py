"""LC-Rec / LETTER JSON files: ``*.inter.json`` ``{user: [items]}`` + ``*.item.json`` metadata.

Config keys (besides ``name: lcrec_json``, ``path``, ``batch_rows``):

- ``path``: the ``*.inter.json`` file, or a directory holding exactly one of them.
- ``item_path`` (default: ``<stem>.item.json`` beside the inter file, if present): item metadata
  ``{item: {title, description, brand, categories}}``.
- ``text_fields`` (default ``[title, brand, categories, description]``): metadata fields joined
  as sentences into the item text, in this order.

Both files are single JSON objects, so each is parsed whole (the format allows no streaming; the
files are a few MB). A file that is not valid JSON raises SchemaError naming the file and the
position (or nesting deeper than the parser allows). Per-record rejection reasons:
``bad_history`` (not a list), ``empty_history``, ``bad_item_id`` (an entry that is not a string
or integer, or a blank or undecodable one), ``blank_id:user`` / ``undecodable_id:user`` /
``blank_id:item`` / ``undecodable_id:item`` (``textutil.canonical_id``), ``bad_item_record`` (not an object),
``missing_text``, ``unknown_item_in_text``. Timestamp = position in the user's list.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from data_prep.readers.base import RawReader, SchemaError, optional_path
from data_prep.readers.textutil import canonical_id, join_sentences, open_text

DEFAULT_TEXT_FIELDS = ("title", "brand", "categories", "description")


class LCRecJsonReader(RawReader):
    """Reader of the LC-Rec ``{dataset}.inter.json`` / ``{dataset}.item.json`` pair."""

    name = "lcrec_json"

    def __init__(self, cfg: Mapping[str, Any]):
        super().__init__(cfg)
        self.text_fields = tuple(cfg.get("text_fields", DEFAULT_TEXT_FIELDS))
        self._item_path_cfg = optional_path(cfg, "item_path")

    @property
    def inter_path(self) -> Path:
        """The ``*.inter.json`` file (``path`` itself, or the single one inside it)."""
        if not self.path.is_dir():
            return self.path
        found = sorted(self.path.glob("*.inter.json"))
        if len(found) != 1:
            raise SchemaError(
                f"lcrec_json: expected one *.inter.json in {self.path}, found {found}"
            )
        return found[0]

    @property
    def item_path(self) -> Path | None:
        """The item metadata file, or None when not configured and not found beside inter."""
        if self._item_path_cfg is not None:
            return self._item_path_cfg
        guess = self.inter_path.with_name(
            self.inter_path.name.removesuffix(".inter.json") + ".item.json"
        )
        return guess if guess.is_file() else None

    def check_schema(self) -> None:
        """Check both files exist and start like a JSON object (does not parse them)."""
        self.require_file(self.inter_path, "interaction file (path)")
        for path in (self.inter_path, self.item_path):
            if path is None:
                continue
            self.require_file(path, "item metadata file (item_path)")
            with open_text(path) as f:
                head = f.read(64).lstrip()
            if not head.startswith("{"):
                raise SchemaError(f"{path}: expected a JSON object, starts with {head[:20]!r}")

    def _load(self, path: Path) -> dict[str, Any]:
        with open_text(path) as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as err:
                raise SchemaError(
                    f"{path}:{err.lineno}:{err.colno}: invalid JSON: {err.msg}"
                ) from err
            except RecursionError:
                raise SchemaError(f"{path}: JSON nested too deeply to parse") from None
        if not isinstance(data, dict):
            raise SchemaError(f"{path}: top level is {type(data).__name__}, expected an object")
        return data

    def _interaction_rows(self) -> Iterator[tuple[str, str, None, int]]:
        path = self.inter_path
        for raw_user, history in self._load(path).items():
            where = f"{path}:user {raw_user}"
            user, reason = canonical_id(raw_user)
            items = [_item_id(item) for item in history] if isinstance(history, list) else []
            if reason is not None:
                self.reject(f"{reason}:user", where, repr(raw_user))
            elif not isinstance(history, list):
                self.reject("bad_history", where, repr(history))
            elif not history:
                self.reject("empty_history", where)
            elif any(item is None for item in items):
                self.reject("bad_item_id", where, repr(history)[:200])
            else:
                for position, item in enumerate(items):
                    yield user, item, None, position

    def _item_text_rows(self) -> Iterator[tuple[str, str]]:
        path = self.item_path
        if path is None:
            return
        known = self.known_items()
        for raw_item, record in self._load(path).items():
            where = f"{path}:item {raw_item}"
            item, reason = canonical_id(raw_item)
            if reason is not None:
                self.reject(f"{reason}:item", where, repr(raw_item))
            elif not isinstance(record, dict):
                self.reject("bad_item_record", where, repr(record))
                continue
            text = join_sentences(_field(record, field) for field in self.text_fields)
            if not text:
                self.reject("missing_text", where)
            elif item not in known:
                self.reject("unknown_item_in_text", where)
            else:
                yield item, text


def _item_id(value: Any) -> str | None:
    """The canonical id of a history entry (a string or an integer), None if it is not one."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return canonical_id(value)[0] if isinstance(value, str) else None


def _field(record: dict[str, Any], field: str) -> Any:
    value = record.get(field)
    # LC-Rec stores the category path as "A,B,C"; spaced commas read (and tokenize) as a list.
    if field == "categories" and isinstance(value, str):
        return ", ".join(part.strip() for part in value.split(",") if part.strip())
    return value
