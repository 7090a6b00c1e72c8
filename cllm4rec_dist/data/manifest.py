"""Typed, validated view of a prepared dataset's ``manifest.json`` (architecture.md §1)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
class Manifest:
    """A loaded manifest.json; ``data_dir`` is the (absolute) dataset directory it came from."""

    data_dir: Path
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

    @property
    def tokenizer_path(self) -> Path | None:
        """Absolute path of the dataset's tokenizer file, or None if it has none."""
        return None if self.tokenizer is None else self.data_dir / self.tokenizer

    def corpus(self, name: str) -> Corpus:
        """The named corpus; ManifestError listing the available ones if absent."""
        if name not in self.corpora:
            raise ManifestError(
                f"{self.data_dir / MANIFEST_NAME}: no corpus {name!r} under 'corpora' "
                f"(has {sorted(self.corpora)})"
            )
        return self.corpora[name]

    def shard_path(self, shard: Shard) -> Path:
        """Absolute path of a shard of this dataset."""
        return self.data_dir / shard.path


def load_manifest(data_dir: str | Path) -> Manifest:
    """Read and validate ``<data_dir>/manifest.json``.

    Raises ManifestError naming the file and the dotted key (e.g. ``counts.users``) when a field
    is missing or has the wrong type, or when ``schema_version`` is not SCHEMA_VERSION.
    """
    data_dir = Path(data_dir).expanduser().resolve()
    path = data_dir / MANIFEST_NAME
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise ManifestError(f"{path}: not found (is {data_dir} a prepared dataset?)") from err
    except json.JSONDecodeError as err:
        raise ManifestError(f"{path}:{err.lineno}:{err.colno}: invalid JSON: {err.msg}") from err
    get = _Getter(path)
    version = get(raw, "schema_version", int)
    if version != SCHEMA_VERSION:
        raise ManifestError(
            f"{path}: schema_version {version}, this reader understands {SCHEMA_VERSION}"
        )
    counts = get(raw, "counts", dict)
    tokenizer = None if raw.get("tokenizer", "") is None else get(raw, "tokenizer", str)
    prompts = get(raw, "prompts", dict)
    for name, template in prompts.items():
        get.check(template, f"prompts.{name}", str)
    return Manifest(
        data_dir=data_dir,
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
        sha256=dataset_fingerprint(raw),
    )


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
        if Path(shard.path).is_absolute() or ".." in Path(shard.path).parts:
            raise ManifestError(f"{get.path}: '{key}.path' must be relative: {shard.path!r}")
        shards.append(shard)
    num_shards = get(node, f"{where}.num_shards", int)
    if num_shards != len(shards):
        raise ManifestError(
            f"{get.path}: '{where}.num_shards' is {num_shards} but {len(shards)} shards are listed"
        )
    return Corpus(name=name, shards=tuple(shards))


class _Getter:
    """Typed lookups by dotted key that fail with the manifest path and the full key."""

    def __init__(self, path: Path):
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
