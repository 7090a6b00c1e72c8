"""One shard file: its tar samples decoded, turned into rows, and checked against the manifest.

A sample is a block of many users (or documents); its members are named by ``format.py``. Row
dicts (numpy arrays are int64):
    collaborative  {"user": int, "items": array}
    recommendation {"user": int, "train": array, "val": array, "test": array}
    content        {"kind": int, "user": int, "item": int, "text": str}
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from webdataset.tariterators import group_by_keys, tar_file_iterator

from cllm4rec_dist.data.format import CONTENT_MEMBERS, USER_CSR, USERS_MEMBER, member_key
from cllm4rec_dist.data.location import is_remote, open_stream
from cllm4rec_dist.data.manifest import Shard, load_manifest


class ShardError(ValueError):
    """A shard's content disagrees with the manifest or with the sample layout."""


def read_blocks(address: str | Path, sha256: str | None = None) -> Iterator[dict[str, Any]]:
    """Decoded samples of one tar in stored order: ``{"__key__": key, member: value}``.

    ``address``: a local path, an http(s) URL or a pipe: command (``location.join``), streamed
    through webdataset's I/O and tar iterators (members grouped by WebDataset key).
    ``name.npy`` is decoded to an array under ``name`` (never unpickled), ``name.json`` to a
    Python object, anything else is kept as bytes under its extension. ``sha256``: the
    manifest's digest, computed as the bytes stream in; nothing is yielded before it matched,
    so training never sees a row of a corrupted shard (ShardError).
    """
    where = str(address)
    blocks: list[dict[str, Any]] = []
    with open_stream(where) as raw:
        stream = _Hashing(raw)
        try:
            if not stream.empty:  # an empty padding shard may be a zero-byte file
                files = ({**f, "__url__": where} for f in tar_file_iterator(stream))
                blocks = [_decoded(sample, where) for sample in group_by_keys(files)]
        except (tarfile.TarError, ValueError) as err:
            stream.drain()
            _check_digest(where, stream, sha256)
            reason = err.args[0] if err.args else err
            raise ShardError(f"{where}: unreadable tar: {reason}") from err
        stream.drain()
    _check_digest(where, stream, sha256)
    yield from blocks


class _Hashing:
    """A binary stream that hashes and counts what is read through it."""

    def __init__(self, raw: BinaryIO):
        self.raw, self.digest, self.bytes = raw, hashlib.sha256(), 0
        self._head = self._take(raw.read(1 << 16))
        self.empty = not self._head

    def _take(self, data: bytes) -> bytes:
        self.digest.update(data)
        self.bytes += len(data)
        return data

    def read(self, size: int = -1) -> bytes:
        if self._head:
            head, self._head = self._head, b""
            if 0 <= size < len(head):
                head, self._head = head[:size], head[size:]
                return head
            rest = self.raw.read(-1 if size < 0 else size - len(head))
            return head + self._take(rest)
        return self._take(self.raw.read(size))

    def drain(self) -> None:
        """Read to the end (tar stops at its end-of-archive blocks; the file's padding after
        them counts in its digest)."""
        while self.read(1 << 20):
            pass


def _check_digest(where: str, stream: _Hashing, sha256: str | None) -> None:
    if sha256 is not None and stream.digest.hexdigest() != sha256:
        raise ShardError(f"{where}: sha256 differs from the manifest's (corrupted or replaced)")


def _decoded(sample: dict[str, Any], where: str) -> dict[str, Any]:
    block: dict[str, Any] = {"__key__": sample["__key__"]}
    for ext, data in sample.items():
        if not ext.startswith("__"):
            block.update(_decode(ext, data, f"{where}:{sample['__key__']}.{ext}"))
    return block


def _decode(ext: str, data: bytes, where: str) -> dict[str, Any]:
    try:
        if ext.endswith(".npy") or ext == "npy":
            return {ext.removesuffix("npy").rstrip("."): np.load(io.BytesIO(data))}
        if ext.endswith(".json") or ext == "json":
            return {ext.removesuffix("json").rstrip("."): json.loads(data)}
    except (ValueError, OSError) as err:
        raise ShardError(f"{where}: cannot decode: {err}") from err
    return {ext: data}


def _csr(block: dict[str, Any], name: str, values: str, n: int, where: str) -> list[np.ndarray]:
    offsets, flat = _member(block, name, where), _member(block, values, where)
    if (
        offsets.shape != (n + 1,)
        or offsets[0] != 0
        or offsets[-1] != len(flat)
        or np.any(np.diff(offsets) < 0)
    ):
        raise ShardError(f"{where}: {name} is not valid CSR offsets for {n} rows and {values}")
    flat = flat.astype(np.int64, copy=False)
    return [flat[offsets[i] : offsets[i + 1]] for i in range(n)]


def _member(block: dict[str, Any], name: str, where: str) -> Any:
    if name not in block:
        members = sorted(k for k in block if k != "__key__")
        raise ShardError(f"{where}: missing member {name!r} (has {members})")
    return block[name]


def _user_csr(block: dict[str, Any], corpus: str, n: int, where: str) -> dict[str, list]:
    """Split name -> its per-user item arrays, from the corpus's CSR members (format.USER_CSR)."""
    return {
        split: _csr(block, member_key(offsets), member_key(items), n, where)
        for split, (offsets, items) in USER_CSR[corpus].items()
    }


def _collaborative_rows(block: dict[str, Any], where: str) -> list[dict[str, Any]]:
    users = _member(block, member_key(USERS_MEMBER), where)
    items = _user_csr(block, "collaborative", len(users), where)["train"]
    return [{"user": int(u), "items": i} for u, i in zip(users, items)]


def _recommendation_rows(block: dict[str, Any], where: str) -> list[dict[str, Any]]:
    users = _member(block, member_key(USERS_MEMBER), where)
    n = len(users)
    splits = _user_csr(block, "recommendation", n, where)
    return [{"user": int(users[i]), **{s: v[i] for s, v in splits.items()}} for i in range(n)]


def _content_rows(block: dict[str, Any], where: str) -> list[dict[str, Any]]:
    kinds, users, items, texts = (_member(block, member_key(m), where) for m in CONTENT_MEMBERS)
    if not (len(kinds) == len(users) == len(items) == len(texts)):
        raise ShardError(f"{where}: kinds/users/items/texts lengths differ")
    return [
        {"kind": int(k), "user": int(u), "item": int(i), "text": str(t)}
        for k, u, i, t in zip(kinds, users, items, texts)
    ]


ROW_BUILDERS: dict[str, Callable[[dict[str, Any], str], list[dict[str, Any]]]] = {
    "collaborative": _collaborative_rows,
    "recommendation": _recommendation_rows,
    "content": _content_rows,
}


def shard_rows(
    path: str | Path, shard: Shard, corpus: str, skip: int, check_digest: bool = True
) -> Iterator[dict[str, Any]]:
    """Rows of one shard file from row ``skip``; read to its end, it must hold exactly the rows
    and samples its manifest entry ``shard`` says."""
    build = ROW_BUILDERS[corpus]
    rows, samples = 0, 0
    for block in read_blocks(path, shard.sha256 if check_digest else None):
        block_rows = build(block, f"{path}: sample {block['__key__']}")
        samples += 1
        rows += len(block_rows)
        if skip >= len(block_rows):
            skip -= len(block_rows)
            continue
        yield from block_rows[max(skip, 0) :]
        skip = 0
    if (rows, samples) != (shard.rows, shard.samples):
        raise ShardError(
            f"{path}: has {rows} rows in {samples} samples, manifest says "
            f"{shard.rows} rows in {shard.samples} samples"
        )


def verify_shards(data_dir: str | Path, *, count_rows: bool = False) -> list[str]:
    """Check every shard listed in the manifest against its file; returns the problems found.

    Checks existence, byte size and sha256; with ``count_rows`` also decodes each shard and
    compares its samples and rows with the manifest (and the sample layout of its corpus).
    An empty list means the dataset is intact. ``data_dir`` may be a URL (location.py).
    """
    manifest = load_manifest(data_dir)
    return [
        problem
        for corpus in manifest.corpora.values()
        for shard in corpus.shards
        for problem in check_shard(manifest.shard_path(shard), shard, corpus.name, count_rows)
    ]


def check_shard(path: str | Path, shard: Shard, corpus: str, count_rows: bool = True) -> list[str]:
    """Problems of one shard file against its manifest entry (empty: intact): existence, byte
    size, sha256 and, with ``count_rows``, its decoded samples and rows (and sample layout).
    The one shard check, for the reader's ``verify_shards`` and ``prepare.py --validate``."""
    where = str(path)
    if not is_remote(where) and not Path(where).is_file():
        return [f"{where}: missing ({corpus})"]
    with open_stream(where) as raw:
        stream = _Hashing(raw)
        stream.drain()
    problems = []
    if stream.bytes != shard.bytes:
        problems.append(f"{where}: {stream.bytes} bytes, manifest says {shard.bytes}")
    digest = stream.digest.hexdigest()
    if digest != shard.sha256:
        problems.append(f"{where}: sha256 {digest}, manifest says {shard.sha256}")
    if count_rows and corpus in ROW_BUILDERS:
        try:
            for _ in shard_rows(where, shard, corpus, 0, check_digest=False):
                pass
        except ShardError as err:
            problems.append(str(err))
    return problems
