"""Small helpers shared by the readers: opening (possibly gzipped) text files, joining fields,
canonical ids and bounded numbers.

Text files are decoded with ``surrogateescape``: an undecodable byte becomes a lone surrogate
instead of U+FFFD, so ``u\\xff`` and ``u\\xfe`` stay different. ``canonical_id`` rejects an id
holding one (never merged); ``clean`` turns them into U+FFFD in texts.
"""

from __future__ import annotations

import gzip
import html
import math
import re
import unicodedata
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

_SPACES = re.compile(r"\s+")
# Lone surrogates: undecodable bytes (surrogateescape) or a JSON "\udXXX" escape; not UTF-8.
_SURROGATES = re.compile("[\ud800-\udfff]")
_INT64_LIMIT = 2.0**63
_TAGS = re.compile(r"<[^>]{0,200}>")
_END_PUNCT = (".", "!", "?", ":", ";")


def open_text(path: Path, encoding: str = "utf-8") -> TextIO:
    """Open ``path`` for reading text; ``*.gz`` is decompressed on the fly.

    Undecodable bytes become lone surrogates (``surrogateescape``) instead of aborting a multi-GB
    pass over one bad byte; see the module docstring for what happens to them.
    """
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding=encoding, errors="surrogateescape")
    return open(path, encoding=encoding, errors="surrogateescape")


def numbered_lines(path: Path, encoding: str = "utf-8") -> Iterator[tuple[str, str]]:
    """Yield (``"file:line"``, line without the trailing newline) for every line of ``path``.

    A file that cannot be read to its end (corrupt or truncated gzip, I/O error) raises
    InputError naming the file and the last line read.
    """
    from data_prep.readers.base import InputError

    lineno = 0
    try:
        with open_text(path, encoding) as f:
            for lineno, line in enumerate(f, start=1):
                yield f"{path}:{lineno}", line.rstrip("\r\n")
    except (OSError, EOFError, zlib.error) as err:
        raise InputError(
            f"{path}:{lineno + 1}: cannot read past line {lineno} ({type(err).__name__}: {err})"
        ) from None


def printable(text: str) -> str:
    """``text`` as a log line can hold it: undecodable bytes (lone surrogates of
    ``surrogateescape``) shown as ``\\xff``, other lone surrogates as ``\\udXXX``."""
    if not _SURROGATES.search(text):
        return text
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that is not an escaped byte (a JSON "\\udXXX")
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


# Why canonical_id refuses an id (the reader adds ``:<field>``).
BLANK_ID, UNDECODABLE_ID = "blank_id", "undecodable_id"


def canonical_id(value: str) -> tuple[str | None, str | None]:
    """(id, None) for an acceptable raw id, (None, reason) otherwise.

    The canonical form: surrounding whitespace stripped, Unicode NFC (composed accents equal
    decomposed ones; NFC, not NFKC, so fullwidth ``１２`` stays apart from ``12``). Refused:
    ``blank_id`` (empty or whitespace only), ``undecodable_id`` (holds bytes that were not valid
    in the file's encoding, or a lone surrogate).
    """
    value = value.strip()
    if not value:
        return None, BLANK_ID
    if value.isascii():
        return value, None
    if _SURROGATES.search(value):
        return None, UNDECODABLE_ID
    return unicodedata.normalize("NFC", value), None


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
    if not text.isascii():
        text = _SURROGATES.sub("\ufffd", text)
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


def to_timestamp(value: Any) -> Any:
    """An int64 timestamp (truncated) from a number or numeric string; None if absent, ``BAD``
    when not a finite number or outside int64 (``1e30``)."""
    number = to_float(value)
    if number is None or number is BAD:
        return number
    return int(number) if abs(math.trunc(number)) < _INT64_LIMIT else BAD
