"""Phase 4: write the three WebDataset corpora, one Ray task per shard.

Every shard is written to ``<name>.tmp`` and renamed when complete. After the rename the task
records (identity, record) in ``<work>/journal/<corpus>-NNNNNN.json``; ``identity`` is a hash of
the shard's plan and of the digests of the bucket files it is cut from. A rerun skips a shard
whose journal identity matches and whose file still has the journaled sha256.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import ray

from cllm4rec_dist.data.format import (
    CONTENT_MEMBERS,
    ROW_FIELD,
    USER_CSR,
    USERS_MEMBER,
    sha256_file,
)
from data_prep.pipeline.arrowio import read_ipc, tmp_path, write_bytes_atomic
from data_prep.pipeline.finalize import CONTENT_SCHEMA
from data_prep.pipeline.layout import ShardPlan
from data_prep.pipeline.tarwrite import json_bytes, npy_bytes, tar_bytes

# Bump when the bytes of a shard change for the same inputs (invalidates journals).
SHARD_FORMAT = 2  # 2: written by webdataset's TarWriter


@dataclass
class ShardJob:
    corpus: str
    plan: ShardPlan
    slices: list[tuple[int, int, int]]  # (bucket, lo, hi) rows of final bucket files
    bucket_dirs: list[Path]  # final folder of each slice's bucket
    relative: str  # path inside the output directory
    output_dir: Path
    journal: Path
    identity: str
    fail: bool = False  # debug.fail_after_shards: crash half-way through the write


def shard_identity(
    corpus: str, plan: ShardPlan, slices: list[tuple[int, int, int]], digests: list[str]
) -> str:
    """Hash of everything a shard's bytes depend on (plan + input bucket digests)."""
    payload = {
        "format": SHARD_FORMAT,
        "corpus": corpus,
        "plan": asdict(plan),
        "slices": [[b, lo, hi, digests[b]] for b, lo, hi in slices],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _csr_slice(folder: Path, name: str, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.load(folder / f"{name}_offsets.npy", mmap_mode="r")
    items = np.load(folder / f"{name}_items.npy", mmap_mode="r")
    begin, end = int(offsets[lo]), int(offsets[hi])
    return np.asarray(offsets[lo : hi + 1]) - begin, np.asarray(items[begin:end])


def _concat_csr(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.concatenate([np.diff(off) for off, _ in parts]) if parts else np.zeros(0)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    items = np.concatenate([it for _, it in parts]) if parts else np.zeros(0)
    return offsets, items.astype(np.int64)


def _slices(job: ShardJob) -> list[tuple[Path, int, int]]:
    """(bucket folder, lo, hi) of every bucket slice the shard is cut from, in order."""
    return [(folder, lo, hi) for folder, (_, lo, hi) in zip(job.bucket_dirs, job.slices)]


def _user_samples(job: ShardJob) -> list[tuple[str, list[tuple[str, bytes]]]]:
    parts = [np.load(d / "users.npy", mmap_mode="r")[lo:hi] for d, lo, hi in _slices(job)]
    users = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    members_of = USER_CSR[job.corpus]
    csr = {
        name: _concat_csr([_csr_slice(d, name, lo, hi) for d, lo, hi in _slices(job)])
        for name in members_of
    }
    samples, row = [], 0
    for j, size in enumerate(job.plan.sample_sizes):
        members = [(USERS_MEMBER, npy_bytes(users[row : row + size].astype(np.int64)))]
        for name, (offsets_member, items_member) in members_of.items():
            offsets, items = csr[name]
            sub = offsets[row : row + size + 1]
            members.append((offsets_member, npy_bytes(sub - sub[0])))
            members.append((items_member, npy_bytes(items[sub[0] : sub[-1]])))
        samples.append((f"{job.plan.first_sample + j:09d}", members))
        row += size
    return samples


def _content_samples(job: ShardJob) -> list[tuple[str, list[tuple[str, bytes]]]]:
    tables = [
        read_ipc(folder / "content.arrow").slice(lo, hi - lo) for folder, lo, hi in _slices(job)
    ]
    docs = pa.concat_tables(tables) if tables else CONTENT_SCHEMA.empty_table()
    kinds, users, items, texts = CONTENT_MEMBERS
    samples, row = [], 0
    for j, size in enumerate(job.plan.sample_sizes):
        part = docs.slice(row, size)
        members = [
            (kinds, npy_bytes(part["kind"].to_numpy())),
            (users, npy_bytes(part["user"].to_numpy())),
            (items, npy_bytes(part["item"].to_numpy())),
            (texts, json_bytes(part["text"].to_pylist())),
        ]
        samples.append((f"{job.plan.first_sample + j:09d}", members))
        row += size
    return samples


def _finished(job: ShardJob) -> dict[str, Any] | None:
    """The journaled record if this exact shard is already on disk, else None."""
    path = job.output_dir / job.relative
    if not (job.journal.is_file() and path.is_file()):
        return None
    entry = json.loads(job.journal.read_text())
    record = entry.get("record", {})
    if entry.get("identity") != job.identity or record.get("sha256") != sha256_file(path):
        return None
    return record


@ray.remote
def write_shard(job: ShardJob) -> tuple[dict[str, Any], bool]:
    """Write one shard (or verify it is already there) -> (manifest record, skipped)."""
    record = _finished(job)
    if record is not None:
        return record, True
    samples = _content_samples(job) if job.corpus == "content" else _user_samples(job)
    data = tar_bytes(samples)
    path = job.output_dir / job.relative
    if job.fail:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp_path(path).write_bytes(data[: len(data) // 2])
        raise RuntimeError(
            f"injected failure while writing {job.relative} (debug.fail_after_shards)"
        )
    write_bytes_atomic(path, data)
    record = {
        "path": job.relative,
        "samples": len(job.plan.sample_sizes),
        ROW_FIELD[job.corpus]: job.plan.stop - job.plan.start,
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
    }
    write_bytes_atomic(
        job.journal, json.dumps({"identity": job.identity, "record": record}).encode()
    )
    return record, False
