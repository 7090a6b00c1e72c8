"""Typed, validated view of a prepared dataset's ``manifest.json`` (architecture.md §1)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cllm4rec_dist.data import location
from cllm4rec_dist.data.format import MANIFEST_NAME, ROW_KEYS, SCHEMA_VERSION


class ManifestError(ValueError):
    """manifest.json is missing, unreadable, of another schema version, or lacks a key."""


@dataclass(frozen=True)
class Shard:
    """One WebDataset tar: ``path`` relative to the dataset dir; ``rows`` = users or documents."""

    path: str
    samples: int
    rows: int
    sha256: str
    bytes: int


@dataclass(frozen=True)
class Corpus:
    """A corpus (``collaborative``, ``content``, ``recommendation``) and its shards, in order."""

    name: str
    shards: tuple[Shard, ...]

    @property
    def num_shards(self) -> int:
        return len(self.shards)

    @property
    def rows(self) -> int:
        """Total users (documents for content) over all shards."""
        return sum(s.rows for s in self.shards)


@dataclass(frozen=True)
class Counts:
    """``counts``: interactions / evaluated_users by split, documents by kind."""

    users: int
    items: int
    interactions: dict[str, int]
    evaluated_users: dict[str, int]
    documents: dict[str, int]


@dataclass(frozen=True)
class GrownFrom:
    """``grown_from``: the earlier dataset whose users [0, num_users) and items [0, num_items)
    keep their indices in this one."""

    dir: str
    manifest_sha256: str
    num_users: int
    num_items: int


@dataclass(frozen=True)
class FileRecord:
    """A ``files`` entry: a split part, id map, cold part or the tokenizer, by relative path."""

    sha256: str
    bytes: int


@dataclass(frozen=True)
class Manifest:
    """A loaded manifest.json; ``data_dir`` is where the dataset lives (``location.normalize``:
    an absolute local directory, an http(s) URL or a pipe: command)."""

    data_dir: str
    schema_version: int
    source: dict[str, Any]
    config: dict[str, Any]
    seed: int
    counts: Counts
    prompts: dict[str, str]
    corpora: dict[str, Corpus]
    rejected: dict[str, int]
    tokenizer: str | None
    created_by: str
    # A grown catalog (data prep ``id_maps_from``): the dataset whose id maps this one extends,
    # {"dir", "manifest_sha256", "num_users", "num_items"}; its ids keep their indices here.
    grown_from: GrownFrom | None = None
    # ``files``: every file besides the shards, by relative path (read_file checks them)
    files: dict[str, FileRecord] = field(default_factory=dict)
    # sha256 of the manifest without ``created_by`` (see ``dataset_fingerprint``)
    sha256: str = field(default="", compare=False)

    @property
    def fingerprint(self) -> dict[str, Any]:
        """What identifies this dataset to exports and checkpoints made from it."""
        return {
            "manifest_sha256": self.sha256,
            "num_users": self.num_users,
            "num_items": self.num_items,
            "schema_version": self.schema_version,
        }

    @property
    def num_users(self) -> int:
        return self.counts.users

    @property
    def num_items(self) -> int:
        return self.counts.items

    def corpus(self, name: str) -> Corpus:
        """The named corpus; ManifestError listing the available ones if absent."""
        if name not in self.corpora:
            raise ManifestError(
                f"{location.join(self.data_dir, MANIFEST_NAME)}: no corpus {name!r} under "
                f"'corpora' (has {sorted(self.corpora)})"
            )
        return self.corpora[name]

    def shard_path(self, shard: Shard) -> str:
        """Where a shard of this dataset is read from (a path, a URL or a pipe: command)."""
        return location.join(self.data_dir, shard.path)

    def files_under(self, folder: str) -> list[str]:
        """Relative paths of the ``files`` entries under ``folder`` (e.g. ``cold/items``),
        sorted: what a glob would list, for local and remote datasets alike."""
        prefix = folder.rstrip("/") + "/"
        return sorted(p for p in self.files if p.startswith(prefix))

    def read_file(self, relative: str) -> bytes:
        """The bytes of a file of this dataset, checked against its ``files`` record (size and
        sha256) when it has one: ManifestError naming the file otherwise."""
        address = location.join(self.data_dir, relative)
        try:
            data = location.read_bytes(address)
        except FileNotFoundError:
            raise ManifestError(f"{address}: not found (listed by the dataset)") from None
        record = self.files.get(relative)
        if record is not None and (
            len(data) != record.bytes or hashlib.sha256(data).hexdigest() != record.sha256
        ):
            raise ManifestError(
                f"{address}: differs from the manifest's files record (corrupted or replaced)"
            )
        return data

    def tokenizer_json(self) -> str | None:
        """The dataset tokenizer's JSON text (digest-checked), or None if it has none."""
        return None if self.tokenizer is None else self.read_file(self.tokenizer).decode()


def load_manifest(data_dir: str | Path) -> Manifest:
    """Read and validate ``<data_dir>/manifest.json``.

    Raises ManifestError naming the file and the dotted key (e.g. ``counts.users``) when a field
    is missing or has the wrong type, or when ``schema_version`` is not SCHEMA_VERSION.
    """
    try:
        where = location.normalize(data_dir)
    except ValueError as err:
        raise ManifestError(str(err)) from None
    path = location.join(where, MANIFEST_NAME)
    try:
        raw = json.loads(location.read_bytes(path).decode("utf-8"))
    except FileNotFoundError as err:
        raise ManifestError(f"{path}: not found (is {where} a prepared dataset?)") from err
    except json.JSONDecodeError as err:
        raise ManifestError(f"{path}:{err.lineno}:{err.colno}: invalid JSON: {err.msg}") from err
    except UnicodeDecodeError as err:
        raise ManifestError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from err
    get = _Getter(path)
    version = get(raw, "schema_version", int)
    if version != SCHEMA_VERSION:
        raise ManifestError(
            f"{path}: schema_version {version}, this reader understands {SCHEMA_VERSION}"
        )
    counts = get(raw, "counts", dict)
    tokenizer = None if raw.get("tokenizer", "") is None else get(raw, "tokenizer", str)
    if tokenizer is not None:
        _relative(get, tokenizer, "tokenizer")
    prompts = get(raw, "prompts", dict)
    for name, template in prompts.items():
        get.check(template, f"prompts.{name}", str)
    return Manifest(
        data_dir=where,
        schema_version=version,
        source=get(raw, "source", dict),
        config=get(raw, "config", dict),
        seed=get(raw, "seed", int),
        counts=Counts(
            users=get(counts, "counts.users", int),
            items=get(counts, "counts.items", int),
            interactions=get.int_map(counts, "counts.interactions"),
            evaluated_users=get.int_map(counts, "counts.evaluated_users"),
            documents=get.int_map(counts, "counts.documents"),
        ),
        prompts=prompts,
        corpora={
            name: _corpus(get, name, node) for name, node in get(raw, "corpora", dict).items()
        },
        rejected=get.int_map(raw, "rejected"),
        tokenizer=tokenizer,
        created_by=get(raw, "created_by", str),
        grown_from=_grown_from(get, raw),
        files=_files(get, raw),
        sha256=dataset_fingerprint(raw),
    )


def _files(get: _Getter, raw: dict[str, Any]) -> dict[str, FileRecord]:
    """``files`` (absent in manifests written before it existed: no checks then)."""
    records = {}
    for relative, node in get(raw, "files", dict).items() if "files" in raw else ():
        key = f"files.{relative}"
        get.check(node, key, dict)
        _relative(get, relative, key)
        records[relative] = FileRecord(
            sha256=get.check(node.get("sha256"), f"{key}.sha256", str),
            bytes=get.check(node.get("bytes"), f"{key}.bytes", int),
        )
    return records


def _relative(get: _Getter, path: str, key: str) -> None:
    if Path(path).is_absolute() or ".." in Path(path).parts or "://" in path:
        raise ManifestError(f"{get.path}: '{key}' must be a relative path: {path!r}")


def _grown_from(get: _Getter, raw: dict[str, Any]) -> GrownFrom | None:
    if raw.get("grown_from") is None:
        return None
    node = get(raw, "grown_from", dict)
    grown = GrownFrom(
        dir=get(node, "grown_from.dir", str),
        manifest_sha256=get(node, "grown_from.manifest_sha256", str),
        num_users=get(node, "grown_from.num_users", int),
        num_items=get(node, "grown_from.num_items", int),
    )
    counts = raw["counts"]
    if grown.num_users > counts["users"] or grown.num_items > counts["items"]:
        raise ManifestError(
            f"{get.path}: grown_from has more users or items than counts "
            f"({grown.num_users}/{grown.num_items} > {counts['users']}/{counts['items']})"
        )
    return grown


def dataset_fingerprint(raw: dict[str, Any]) -> str:
    """sha256 of a parsed manifest in canonical JSON, ``created_by`` left out: the same data
    prepared by another package version has the same fingerprint, any change to the data (shard
    checksums, counts, config, source) another one."""
    content = {k: v for k, v in raw.items() if k != "created_by"}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _corpus(get: _Getter, name: str, node: Any) -> Corpus:
    where = f"corpora.{name}"
    get.check(node, where, dict)
    shards = []
    for i, entry in enumerate(get(node, f"{where}.shards", list)):
        key = f"{where}.shards[{i}]"
        get.check(entry, key, dict)
        row_key = next((k for k in ROW_KEYS if k in entry), None)
        if row_key is None:
            raise ManifestError(f"{get.path}: missing key '{key}.users' (or '.documents')")
        shard = Shard(
            path=get(entry, f"{key}.path", str),
            samples=get(entry, f"{key}.samples", int),
            rows=get(entry, f"{key}.{row_key}", int),
            sha256=get(entry, f"{key}.sha256", str),
            bytes=get(entry, f"{key}.bytes", int),
        )
        _relative(get, shard.path, f"{key}.path")
        shards.append(shard)
    num_shards = get(node, f"{where}.num_shards", int)
    if num_shards != len(shards):
        raise ManifestError(
            f"{get.path}: '{where}.num_shards' is {num_shards} but {len(shards)} shards are listed"
        )
    return Corpus(name=name, shards=tuple(shards))


class _Getter:
    """Typed lookups by dotted key that fail with the manifest path and the full key."""

    def __init__(self, path: str):
        self.path = path

    def __call__(self, node: dict[str, Any], dotted: str, kind: type) -> Any:
        leaf = dotted.rsplit(".", 1)[-1]
        if leaf not in node:
            raise ManifestError(f"{self.path}: missing key '{dotted}'")
        return self.check(node[leaf], dotted, kind)

    def check(self, value: Any, dotted: str, kind: type) -> Any:
        # bool is an int subclass; a count of True is a writer bug, not a count.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ManifestError(
                f"{self.path}: key '{dotted}' should be {kind.__name__}, got {type(value).__name__}"
            )
        return value

    def int_map(self, node: dict[str, Any], dotted: str) -> dict[str, int]:
        mapping = self(node, dotted, dict)
        return {k: self.check(v, f"{dotted}.{k}", int) for k, v in mapping.items()}
