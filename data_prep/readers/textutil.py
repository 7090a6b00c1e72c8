"""Small helpers shared by the readers: opening (possibly gzipped) text files, joining fields."""

from __future__ import annotations

import gzip
import html
import math
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

_SPACES = re.compile(r"\s+")
_TAGS = re.compile(r"<[^>]{0,200}>")
_END_PUNCT = (".", "!", "?", ":", ";")


def open_text(path: Path, encoding: str = "utf-8") -> TextIO:
    """Open ``path`` for reading text; ``*.gz`` is decompressed on the fly.

    Undecodable bytes become U+FFFD instead of aborting a multi-GB pass over one bad byte.
    """
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding=encoding, errors="replace")
    return open(path, encoding=encoding, errors="replace")


def numbered_lines(path: Path, encoding: str = "utf-8") -> Iterator[tuple[str, str]]:
    """Yield (``"file:line"``, line without the trailing newline) for every line of ``path``."""
    with open_text(path, encoding) as f:
        for lineno, line in enumerate(f, start=1):
            yield f"{path}:{lineno}", line.rstrip("\r\n")


def clean(value: Any) -> str:
    """Flatten a metadata value (str, number, nested lists) into one trimmed line of text.

    Amazon metadata mixes strings, lists of strings and lists of category paths, and carries
    HTML entities and tags; all of that becomes plain space-normalised text.
    """
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return ", ".join(part for part in (clean(v) for v in value) if part)
    text = html.unescape(_TAGS.sub(" ", str(value)))
    return _SPACES.sub(" ", text).strip()


def join_sentences(parts: Iterable[Any]) -> str:
    """Join non-empty parts as sentences: ``["A", "b.", "c"] -> "A. b. c"`` (no doubled dots)."""
    pieces = [p for p in (clean(part) for part in parts) if p]
    out = ""
    for i, piece in enumerate(pieces):
        if i:
            out += " " if out.endswith(_END_PUNCT) else ". "
        out += piece
    return out


# Marker returned by to_float for a value that is present but not a finite number.
BAD = object()


def to_float(value: Any) -> Any:
    """A finite float from a number or numeric string; None if absent/empty, ``BAD`` otherwise."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        return BAD
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return BAD
    return number if math.isfinite(number) else BAD
