"""Readers of raw recommendation data formats (see ``base.py`` for the protocol)."""

from data_prep.readers.base import (
    INTERACTIONS,
    ITEM_TEXT,
    REVIEWS,
    USER_TEXT,
    RawReader,
    SchemaError,
    build_reader,
)

__all__ = [
    "INTERACTIONS",
    "ITEM_TEXT",
    "REVIEWS",
    "USER_TEXT",
    "RawReader",
    "SchemaError",
    "build_reader",
]
