"""Read a prepared dataset's WebDataset shards as blocks or rows, split over ranks and workers.

Splitting (WebDataset ``split_by_node`` then ``split_by_worker`` semantics):

1. shard i of a corpus belongs to rank ``i % world_size`` for every epoch, so the rows of each
   rank are known from the manifest without I/O (``rows_per_rank``). The data-prep pipeline pads
   each corpus to a multiple of ``shard_multiple`` shards; another world size still works but
   ranks then get unequal row counts (a warning says so).
2. with ``shuffle``, the rank's shard order is permuted from (seed, epoch, rank);
3. worker w of n takes every n-th shard of that order (the same order in every worker, so the
   workers' shards are disjoint and cover the rank's).

Row shuffle is a windowed shuffle: the (worker's) row stream is cut into consecutive windows of
``shuffle_buffer`` rows and each window is permuted with a generator seeded by (seed, epoch, rank,
worker, num_workers, window). Resuming at row ``skip`` therefore reads only from the window that
holds it: earlier shards are passed over using the manifest's row counts, without I/O.

Row dicts (numpy arrays are int64):
    collaborative  {"user": int, "items": array}
    recommendation {"user": int, "train": array, "val": array, "test": array}
    content        {"kind": int, "user": int, "item": int, "text": str}
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import IterableDataset, get_worker_info

from cllm4rec_dist.data.format import (
    CONTENT_MEMBERS,
    USER_CSR,
    USERS_MEMBER,
    member_key,
    sha256_file,
)
from cllm4rec_dist.data.manifest import Manifest, Shard, load_manifest
from cllm4rec_dist.distributed import env

DEFAULT_SHUFFLE_BUFFER = 8192
# WebDataset's rule: the key is the member path up to the first dot of its file name.
_KEY_EXT = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")


class ShardError(ValueError):
    """A shard's content disagrees with the manifest or with the sample layout."""


# --- assignment (no I/O) -------------------------------------------------------------------------
def rank_shards(manifest: Manifest, corpus: str, rank: int, world_size: int) -> list[Shard]:
    """Shards of ``corpus`` owned by ``rank``: shard i -> rank i % world_size (manifest order).

    Warns when the shard count is not a multiple of world_size (ranks get unequal shares).
    """
    _check_split(rank, world_size, "rank", "world_size")
    shards = manifest.corpus(corpus).shards
    if len(shards) % world_size:
        warnings.warn(
            f"{corpus}: {len(shards)} shards do not divide over {world_size} ranks; ranks get "
            "unequal row counts (prepare with a shard_multiple that world_size divides)",
            stacklevel=2,
        )
    return list(shards[rank::world_size])


def rows_per_rank(manifest: Manifest, corpus: str, world_size: int) -> list[int]:
    """Rows (users, or documents for content) each rank's iterator yields, from the manifest."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [
            sum(s.rows for s in rank_shards(manifest, corpus, r, world_size))
            for r in range(world_size)
        ]


def worker_shards(
    manifest: Manifest,
    corpus: str,
    *,
    rank: int,
    world_size: int,
    epoch: int,
    seed: int,
    shuffle: bool,
    worker_id: int = 0,
    num_workers: int = 1,
) -> list[Shard]:
    """The shards one (rank, worker) reads in one epoch, in reading order."""
    _check_split(worker_id, num_workers, "worker_id", "num_workers")
    shards = rank_shards(manifest, corpus, rank, world_size)
    if shuffle:
        order = np.random.default_rng(_seed(seed, epoch, rank)).permutation(len(shards))
        shards = [shards[i] for i in order]
    return shards[worker_id::num_workers]


# --- blocks --------------------------------------------------------------------------------------
def read_blocks(path: Path, sha256: str | None = None) -> Iterator[dict[str, Any]]:
    """Decoded samples of one tar in stored order: ``{"__key__": key, member: value}``.

    Members are grouped by WebDataset key; ``name.npy`` is decoded to an array under ``name``,
    ``name.json`` to a Python object, anything else is kept as bytes under its extension.
    ``sha256``: the manifest's digest; the shard is read once, hashed, and refused with a
    ShardError when it differs (so training never runs on a corrupted shard).
    """
    data = path.read_bytes()
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise ShardError(f"{path}: sha256 differs from the manifest's (corrupted or replaced)")
    if not data:  # an empty padding shard may be a zero-byte file
        return
    sample: dict[str, Any] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r|*") as tar:
            for member in tar:
                match = _KEY_EXT.match(member.name)
                if not member.isfile() or match is None:
                    continue
                key, ext = match.groups()
                if sample and sample["__key__"] != key:
                    yield sample
                    sample = {}
                sample["__key__"] = key
                data = tar.extractfile(member).read()  # type: ignore[union-attr]
                sample.update(_decode(ext, data, f"{path}:{member.name}"))
    except tarfile.TarError as err:
        raise ShardError(f"{path}: unreadable tar: {err}") from err
    if sample:
        yield sample


def _decode(ext: str, data: bytes, where: str) -> dict[str, Any]:
    try:
        if ext.endswith(".npy") or ext == "npy":
            return {ext.removesuffix("npy").rstrip("."): np.load(io.BytesIO(data))}
        if ext.endswith(".json") or ext == "json":
            return {ext.removesuffix("json").rstrip("."): json.loads(data)}
    except (ValueError, OSError) as err:
        raise ShardError(f"{where}: cannot decode: {err}") from err
    return {ext: data}


def iter_blocks(
    data_dir: str | Path,
    corpus: str,
    *,
    rank: int = 0,
    world_size: int = 1,
    epoch: int = 0,
    seed: int = 0,
    shuffle: bool = True,
    worker_id: int = 0,
    num_workers: int = 1,
) -> Iterator[dict[str, Any]]:
    """Decoded blocks (dicts of arrays / lists, see architecture.md §1) of this rank's and
    worker's shards, in shard order (blocks within a shard keep their stored order)."""
    manifest = load_manifest(data_dir)
    for shard in worker_shards(
        manifest, corpus, rank=rank, world_size=world_size, epoch=epoch, seed=seed,
        shuffle=shuffle, worker_id=worker_id, num_workers=num_workers,
    ):  # fmt: skip
        yield from read_blocks(manifest.shard_path(shard))


# --- rows ----------------------------------------------------------------------------------------
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


def _rows_from(
    manifest: Manifest, corpus: str, shards: Sequence[Shard], start: int
) -> Iterator[dict[str, Any]]:
    """Rows of ``shards`` in order from row ``start``; shards wholly before it are not opened.

    Each shard read to its end must hold exactly the rows and samples the manifest says, since
    skipping by manifest counts is only exact if they are right.
    """
    if corpus not in ROW_BUILDERS:
        raise ValueError(f"unknown corpus {corpus!r}; known: {sorted(ROW_BUILDERS)}")
    position = 0
    for shard in shards:
        if position + shard.rows > start:
            yield from _shard_rows(manifest.shard_path(shard), shard, corpus, start - position)
        position += shard.rows


def _shard_rows(
    path: Path, shard: Shard, corpus: str, skip: int, check_digest: bool = True
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


def iter_rows(
    data_dir: str | Path,
    corpus: str,
    *,
    rank: int = 0,
    world_size: int = 1,
    epoch: int = 0,
    seed: int = 0,
    shuffle: bool = True,
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
    skip: int = 0,
    worker_id: int = 0,
    num_workers: int = 1,
) -> Iterator[dict[str, Any]]:
    """Rows of this (rank, worker)'s shards, deterministically shuffled, from row ``skip``.

    The same (seed, epoch, rank, worker_id, num_workers, shuffle_buffer) always gives the same
    sequence, and ``skip=k`` yields exactly that sequence without its first k rows. Without
    workers a rank yields ``rows_per_rank(...)[rank]`` rows. Row dicts: see the module docstring.
    """
    if skip < 0 or shuffle_buffer < 1:
        raise ValueError(
            f"skip must be >= 0 and shuffle_buffer >= 1 (got {skip}, {shuffle_buffer})"
        )
    manifest = load_manifest(data_dir)
    shards = worker_shards(
        manifest, corpus, rank=rank, world_size=world_size, epoch=epoch, seed=seed,
        shuffle=shuffle, worker_id=worker_id, num_workers=num_workers,
    )  # fmt: skip
    if not shuffle:
        yield from _rows_from(manifest, corpus, shards, skip)
        return
    window, drop = divmod(skip, shuffle_buffer)
    rows = _rows_from(manifest, corpus, shards, window * shuffle_buffer)
    while chunk := list(islice(rows, shuffle_buffer)):
        rng = np.random.default_rng(_seed(seed, epoch, rank, worker_id, num_workers, window))
        for j in rng.permutation(len(chunk))[drop:]:
            yield chunk[j]
        window, drop = window + 1, 0


# --- torch Dataset -------------------------------------------------------------------------------
def split_skip(skip: int, lengths: Sequence[int]) -> tuple[list[int], int]:
    """Where a DataLoader stands after yielding ``skip`` items from workers of ``lengths`` items.

    A DataLoader over an IterableDataset takes items from its workers round-robin and drops a
    worker once it is exhausted, so item j of worker w comes out in round j. Returns each
    worker's own skip and the worker whose item comes next in the cycle.
    """
    skips, last = [0] * len(lengths), -1
    while skip > 0:
        active = [w for w, n in enumerate(lengths) if skips[w] < n]
        if not active:
            break
        # every active worker sits at the same round here, so whole rounds can be taken at once
        rounds = min(min(lengths[w] - skips[w] for w in active), skip // len(active))
        if rounds == 0:
            for w in active[:skip]:
                skips[w] += 1
            last = active[skip - 1]
            break
        for w in active:
            skips[w] += rounds
        skip, last = skip - rounds * len(active), active[-1]
    return skips, (last + 1) % len(lengths)


class ShardedRows(IterableDataset):
    """``iter_rows`` as a torch IterableDataset; DataLoader workers split the rank's shards.

    ``rank`` / ``world_size`` default to torch.distributed's (0 / 1 when not initialised).
    ``skip`` counts the items the DataLoader already yielded on this rank this epoch: rows, or
    batches when ``loader_batch_size`` (the DataLoader's batch_size; ``loader_drop_last`` its
    drop_last) is set. It is turned into each worker's own skip and the workers are renumbered
    so the round-robin resumes where it stopped: resume is exact for any num_workers, provided
    it is the same as before the interruption. Call ``set_epoch`` before creating the
    DataLoader's iterator (workers get a copy of the dataset; persistent workers never see
    later changes).
    """

    def __init__(
        self,
        data_dir: str | Path,
        corpus: str,
        *,
        rank: int | None = None,
        world_size: int | None = None,
        epoch: int = 0,
        seed: int = 0,
        shuffle: bool = True,
        shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
        skip: int = 0,
        loader_batch_size: int | None = None,
        loader_drop_last: bool = False,
    ):
        super().__init__()
        self.rank = rank if rank is not None else env.rank()
        self.world_size = world_size if world_size is not None else env.world_size()
        self.data_dir, self.corpus = Path(data_dir), corpus
        self.manifest = load_manifest(data_dir)
        self.seed, self.shuffle, self.shuffle_buffer = seed, shuffle, shuffle_buffer
        self.loader_batch_size, self.loader_drop_last = loader_batch_size, loader_drop_last
        self.set_epoch(epoch, skip)

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Select the epoch (reshuffles) and the number of DataLoader items already consumed."""
        self.epoch, self.skip = epoch, skip

    def num_rows(self) -> int:
        """Rows this rank yields per epoch (all workers together)."""
        return rows_per_rank(self.manifest, self.corpus, self.world_size)[self.rank]

    def _worker_rows(self, num_workers: int) -> list[int]:
        split = dict(
            rank=self.rank, world_size=self.world_size, epoch=self.epoch, seed=self.seed,
            shuffle=self.shuffle, num_workers=num_workers,
        )  # fmt: skip
        return [
            sum(s.rows for s in worker_shards(self.manifest, self.corpus, worker_id=w, **split))
            for w in range(num_workers)
        ]

    def _logical_worker(self, loader_worker: int, num_workers: int) -> tuple[int, int]:
        """(logical worker id, its row skip) for the DataLoader's worker ``loader_worker``.

        A fresh DataLoader starts its round-robin at worker 0, while the interrupted one would
        have continued at some worker c; numbering the workers from c makes the resumed
        sequence identical to the rest of the interrupted one.
        """
        rows = self._worker_rows(num_workers)
        b = self.loader_batch_size
        items = (
            rows if b is None else [n // b if self.loader_drop_last else -(-n // b) for n in rows]
        )
        skips, next_worker = split_skip(self.skip, items)
        worker = (loader_worker + next_worker) % num_workers
        row_skip = skips[worker] if b is None else min(skips[worker] * b, rows[worker])
        return worker, row_skip

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        num_workers = 1 if info is None else info.num_workers
        worker_id, skip = self._logical_worker(0 if info is None else info.id, num_workers)
        return iter_rows(
            self.data_dir, self.corpus, rank=self.rank, world_size=self.world_size,
            epoch=self.epoch, seed=self.seed, shuffle=self.shuffle,
            shuffle_buffer=self.shuffle_buffer, skip=skip, worker_id=worker_id,
            num_workers=num_workers,
        )  # fmt: skip


# --- validation ----------------------------------------------------------------------------------
def verify_shards(data_dir: str | Path, *, count_rows: bool = False) -> list[str]:
    """Check every shard listed in the manifest against its file; returns the problems found.

    Checks existence, byte size and sha256; with ``count_rows`` also decodes each shard and
    compares its samples and rows with the manifest (and the sample layout of its corpus).
    An empty list means the dataset is intact.
    """
    manifest = load_manifest(data_dir)
    return [
        problem
        for corpus in manifest.corpora.values()
        for shard in corpus.shards
        for problem in check_shard(manifest.shard_path(shard), shard, corpus.name, count_rows)
    ]


def check_shard(path: Path, shard: Shard, corpus: str, count_rows: bool = True) -> list[str]:
    """Problems of one shard file against its manifest entry (empty: intact): existence, byte
    size, sha256 and, with ``count_rows``, its decoded samples and rows (and sample layout).
    The one shard check, for the reader's ``verify_shards`` and ``prepare.py --validate``."""
    if not path.is_file():
        return [f"{path}: missing ({corpus})"]
    problems = []
    size = path.stat().st_size
    if size != shard.bytes:
        problems.append(f"{path}: {size} bytes, manifest says {shard.bytes}")
    digest = sha256_file(path)
    if digest != shard.sha256:
        problems.append(f"{path}: sha256 {digest}, manifest says {shard.sha256}")
    if count_rows and corpus in ROW_BUILDERS:
        try:
            for _ in _shard_rows(path, shard, corpus, 0, check_digest=False):
                pass
        except ShardError as err:
            problems.append(str(err))
    return problems


def _seed(*parts: int) -> list[int]:
    if any(p < 0 for p in parts):
        raise ValueError(f"seed, epoch, rank and worker must be non-negative, got {parts}")
    return list(parts)


def _check_split(index: int, count: int, index_name: str, count_name: str) -> None:
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"need 0 <= {index_name} < {count_name}, got {index} and {count}")
