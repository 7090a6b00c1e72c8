"""MovieLens: RecBole atomic files, or the original ml-100k / ml-1m distribution files.

Config keys (besides ``name: movielens``, ``path``, ``batch_rows``):

- ``path``: a directory (or one of its files) holding one of
  ``<stem>.inter`` [+ ``.item``, ``.user``] (RecBole atomic, typed TSV header ``user_id:token``),
  ``u.data`` [+ ``u.item``, ``u.user``] (ml-100k), ``ratings.dat`` [+ ``movies.dat``,
  ``users.dat``] (ml-1m).
- ``format`` (default ``auto``): ``atomic``, ``ml-100k`` or ``ml-1m``; auto picks by file names.
- ``encoding`` (default: utf-8 for atomic files, latin-1 for the original GroupLens files).

Item text: ``"Toy Story (1995). Genres: Animation, Children's, Comedy"``; for atomic files of
other datasets (no ``movie_title``) the non-id text fields joined as sentences. User text from
demographics: ``"A 24 year old male. Occupation: technician"`` (ml-1m: ``"A male aged 25-34.
..."``, since ml-1m only has age brackets). Rejection reasons: ``short_line``,
``missing_field:<field>``, ``blank_id:<field>`` / ``undecodable_id:<field>`` (see
``textutil.canonical_id``), ``bad_rating``, ``bad_timestamp`` (also outside int64),
``missing_text``,
``unknown_item_in_text``, ``unknown_user_in_text``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data_prep.readers.base import RawReader, SchemaError
from data_prep.readers.textutil import (
    BAD,
    canonical_id,
    join_sentences,
    numbered_lines,
    to_float,
    to_timestamp,
)

ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
# ml-1m README: users.dat codes age brackets and occupations.
ML1M_AGES = {
    "1": "under 18", "18": "18-24", "25": "25-34", "35": "35-44", "45": "45-49", "50": "50-55",
    "56": "56 or over",
}  # fmt: skip
ML1M_OCCUPATIONS = (
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student",
    "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker",
    "K-12 student", "lawyer", "programmer", "retired", "sales/marketing", "scientist",
    "self-employed", "technician/engineer", "tradesman/craftsman", "unemployed", "writer",
)  # fmt: skip
GENDERS = {"M": "male", "F": "female"}
_YEAR_SUFFIX = re.compile(r"\(\d{4}\)\s*$")
# Atomic-file field types that hold text (floats and sequences of floats are features, not text).
_TEXT_TYPES = ("token", "token_seq")


@dataclass(frozen=True)
class _Layout:
    kind: str  # "atomic" | "ml-100k" | "ml-1m"
    inter: Path
    item: Path | None
    user: Path | None
    sep: str
    encoding: str


class MovieLensReader(RawReader):
    """Reader of MovieLens in RecBole atomic or original GroupLens layout."""

    name = "movielens"

    def __init__(self, cfg: Mapping[str, Any]):
        super().__init__(cfg)
        self.format = str(cfg.get("format", "auto"))
        self.encoding = cfg.get("encoding")
        self._layout: _Layout | None = None

    # --- layout and schema --------------------------------------------------------------------
    @property
    def layout(self) -> _Layout:
        """The detected files, separator and encoding."""
        if self._layout is None:
            self._layout = self._detect()
        return self._layout

    def _detect(self) -> _Layout:
        folder = self.path if self.path.is_dir() else self.path.parent
        if not folder.is_dir():
            raise SchemaError(f"movielens: path not found: {self.path}")
        atomic = [self.path] if self.path.suffix == ".inter" else sorted(folder.glob("*.inter"))
        candidates = {
            "atomic": atomic[0] if len(atomic) == 1 else None,
            "ml-100k": folder / "u.data" if (folder / "u.data").is_file() else None,
            "ml-1m": folder / "ratings.dat" if (folder / "ratings.dat").is_file() else None,
        }
        kind = self.format
        if kind == "auto":
            found = [k for k, v in candidates.items() if v is not None]
            if len(found) != 1:
                raise SchemaError(
                    f"movielens: cannot tell the format of {self.path} (found {found or 'none'} "
                    "of <stem>.inter / u.data / ratings.dat); set format explicitly"
                )
            kind = found[0]
        if kind not in candidates:
            raise SchemaError(f"movielens: unknown format {kind!r} (atomic, ml-100k, ml-1m)")
        inter = candidates[kind]
        if inter is None:
            raise SchemaError(f"movielens: no {kind} interaction file in {folder}")
        original = "latin-1"  # GroupLens files predate UTF-8 (accented titles in latin-1)
        if kind == "atomic":
            stem = inter.name.removesuffix(".inter")
            item, user = folder / f"{stem}.item", folder / f"{stem}.user"
            sep, encoding = "\t", self.encoding or "utf-8"
        elif kind == "ml-100k":
            item, user = folder / "u.item", folder / "u.user"
            sep, encoding = "\t", self.encoding or original
        else:
            item, user = folder / "movies.dat", folder / "users.dat"
            sep, encoding = "::", self.encoding or original
        return _Layout(
            kind,
            inter,
            item if item.is_file() else None,
            user if user.is_file() else None,
            sep,
            str(encoding),
        )

    def check_schema(self) -> None:
        """Detect the layout; for atomic files check the header names the needed fields."""
        layout = self.layout
        if layout.kind != "atomic":
            return
        _header(layout.inter, layout.encoding, required=("user_id", "item_id"))
        if layout.item is not None:
            _header(layout.item, layout.encoding, required=("item_id",))
        if layout.user is not None:
            _header(layout.user, layout.encoding, required=("user_id",))

    # --- interactions ------------------------------------------------------------------------
    def _interaction_rows(self) -> Iterator[tuple[str, str, float | None, int | None]]:
        layout = self.layout
        names = ["user_id", "item_id", "rating", "timestamp"]
        for where, fields in self._records(layout.inter, layout.sep, names):
            user, item = fields.get("user_id", ""), fields.get("item_id", "")
            if not user or not item:
                self.reject("missing_field:" + ("user_id" if not user else "item_id"), where)
                continue
            user = self._id(user, "user_id", where)
            item = None if user is None else self._id(item, "item_id", where)
            if item is None:
                continue
            rating = to_float(fields.get("rating"))
            if rating is BAD:
                self.reject("bad_rating", where, fields["rating"])
                continue
            timestamp = to_timestamp(fields.get("timestamp"))
            if timestamp is BAD:
                self.reject("bad_timestamp", where, fields["timestamp"])
                continue
            yield user, item, rating, timestamp

    def _id(self, raw: str, field: str, where: str) -> str | None:
        """The canonical id, or None after counting why it was refused."""
        value, reason = canonical_id(raw)
        if reason is not None:
            self.reject(f"{reason}:{field}", where, repr(raw))
        return value

    def _records(
        self, path: Path, sep: str, names: list[str]
    ) -> Iterator[tuple[str, dict[str, str]]]:
        """Yield (file:line, {field: value}) with ``names`` for headerless files.

        Atomic files name their fields in the header (``name:type``, replacing ``names``); a line
        with fewer fields than names is rejected as ``short_line``.
        """
        lines = numbered_lines(path, self.layout.encoding)
        if self.layout.kind == "atomic":
            _, header = next(lines, ("", ""))
            names = [h.split(":", 1)[0] for h in header.split(sep)]
        for where, line in lines:
            if not line.strip():
                continue
            values = line.split(sep)
            if len(values) < len(names):
                self.reject("short_line", where, line)
                continue
            yield where, {n: v.strip() for n, v in zip(names, values)}

    # --- texts -------------------------------------------------------------------------------
    def _item_text_rows(self) -> Iterator[tuple[str, str]]:
        layout = self.layout
        if layout.item is None:
            return
        known = self.known_items()
        for where, raw, text in self._item_records(layout):
            item = self._id(raw, "item_id", where)
            if item is None:
                continue
            if not text:
                self.reject("missing_text", where)
            elif item not in known:
                self.reject("unknown_item_in_text", where, item)
            else:
                yield item, text

    def _item_records(self, layout: _Layout) -> Iterator[tuple[str, str, str]]:
        assert layout.item is not None
        if layout.kind == "atomic":
            types = _header(layout.item, layout.encoding, required=("item_id",))
            for where, f in self._records(layout.item, "\t", []):
                if "movie_title" in f:
                    genres = f.get("class", "").split()
                    yield (
                        where,
                        f["item_id"],
                        movie_text(f["movie_title"], f.get("release_year"), genres),
                    )
                else:
                    text_fields = [
                        n for n, t in types.items() if t in _TEXT_TYPES and n != "item_id"
                    ]
                    yield where, f["item_id"], join_sentences(f.get(n) for n in text_fields)
        elif layout.kind == "ml-100k":
            for where, line in numbered_lines(layout.item, layout.encoding):
                values = line.split("|")
                if len(values) != 5 + len(ML100K_GENRES):
                    self.reject("short_line", where, line)
                    continue
                genres = [g for g, flag in zip(ML100K_GENRES, values[5:]) if flag.strip() == "1"]
                yield where, values[0].strip(), movie_text(values[1], None, genres)
        else:
            for where, line in numbered_lines(layout.item, layout.encoding):
                values = line.split("::")
                if len(values) != 3:
                    self.reject("short_line", where, line)
                    continue
                yield where, values[0].strip(), movie_text(values[1], None, values[2].split("|"))

    def _user_text_rows(self) -> Iterator[tuple[str, str]]:
        layout = self.layout
        if layout.user is None:
            return
        known = self.known_users()
        for where, raw, text in self._user_records(layout):
            user = self._id(raw, "user_id", where)
            if user is None:
                continue
            if not text:
                self.reject("missing_text", where)
            elif user not in known:
                self.reject("unknown_user_in_text", where, user)
            else:
                yield user, text

    def _user_records(self, layout: _Layout) -> Iterator[tuple[str, str, str]]:
        assert layout.user is not None
        if layout.kind == "atomic":
            for where, f in self._records(layout.user, "\t", []):
                yield (
                    where,
                    f["user_id"],
                    user_text(f.get("age"), f.get("gender"), f.get("occupation")),
                )
            return
        sep = "|" if layout.kind == "ml-100k" else "::"
        for where, line in numbered_lines(layout.user, layout.encoding):
            values = [v.strip() for v in line.split(sep)]
            if len(values) != 5:
                self.reject("short_line", where, line)
            elif layout.kind == "ml-100k":  # id|age|gender|occupation|zip
                yield where, values[0], user_text(values[1], values[2], values[3])
            else:  # id::gender::age-bracket::occupation-code::zip
                occupation = values[3]
                if occupation.isdigit() and int(occupation) < len(ML1M_OCCUPATIONS):
                    occupation = ML1M_OCCUPATIONS[int(occupation)]
                yield where, values[0], user_text(None, values[1], occupation, values[2])


def movie_text(title: str, year: str | None, genres: list[str]) -> str:
    """``"Toy Story (1995). Genres: Animation, Comedy"``; the year is added unless in the title."""
    title = title.strip()
    if year and year.strip() and not _YEAR_SUFFIX.search(title):
        title = f"{title} ({year.strip()})"
    genres = [g.strip() for g in genres if g.strip() and g.strip() != "unknown"]
    return join_sentences([title, "Genres: " + ", ".join(genres) if genres else ""])


def user_text(
    age: str | None, gender: str | None, occupation: str | None, age_bracket: str | None = None
) -> str:
    """``"A 24 year old male. Occupation: technician"`` from whatever demographics are known."""
    who = GENDERS.get((gender or "").strip().upper(), "person")
    if age and age.strip().isdigit():
        first = f"A {age.strip()} year old {who}"
    elif age_bracket and age_bracket.strip() in ML1M_AGES:
        first = f"A {who} aged {ML1M_AGES[age_bracket.strip()]}"
    elif gender:
        first = f"A {who}"
    else:
        first = ""
    occupation = (occupation or "").strip()
    # "other"/"none" say nothing about the user; leave them out rather than print them.
    job = f"Occupation: {occupation}" if occupation.lower() not in ("", "other", "none") else ""
    return join_sentences([first, job])


def _header(path: Path, encoding: str, required: tuple[str, ...]) -> dict[str, str]:
    """Read an atomic file's typed header into {field: type}; SchemaError if a field is missing."""
    if not path.is_file():
        raise SchemaError(f"movielens: file not found: {path}")
    _, line = next(numbered_lines(path, encoding), ("", ""))
    fields = dict((h.split(":", 1) + [""])[:2] for h in line.split("\t") if h)
    for name in required:
        if name not in fields:
            raise SchemaError(f"{path}:1: header has no column {name!r} (found {list(fields)})")
    return fields
