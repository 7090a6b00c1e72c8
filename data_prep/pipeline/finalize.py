"""Phase 3 (one Ray task per bucket): indices, split, split parts, and the bucket's shard inputs.

For bucket b it writes
- ``<output>/splits/{train,val,test}/part-BBBBB.parquet``: COO (user, item) int64, sorted;
- ``<work>/final/bucket-BBBBB/``: ``users.npy`` (sorted global user indices) and CSR
  ``{split}_offsets.npy`` / ``{split}_items.npy``, plus ``content.arrow`` (kind, user, item,
  text) with the bucket's reviews, user descriptions and the descriptions of the items hashed to
  bucket b. The shard writers slice these files.

Content rules: a text whose user or item is not in the final id maps is rejected
(``<kind>_unknown_user`` / ``<kind>_unknown_item``); a review of a (user, item) pair that is in
val or test is rejected as ``review_heldout_pair`` (it would reveal the held-out interaction).
Documents are ordered by (kind, user, item, text), so the order does not depend on chunking.

Cold ids (``split.cold_*_fraction``, ``cllm4rec_dist/data/cold.py``) are taken out after the
split, so the split of every other pair is the one a run without them gets: a cold user's pairs
go to ``cold/users/part-BBBBB.parquet`` and its texts are dropped; a cold item's train pairs and
reviews are dropped and its description goes to ``cold/items/part-BBBBB.parquet``.
"""

from __future__ import annotations

import collections
import hashlib
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray

from cllm4rec_dist.data.cold import (
    COLD_ITEM_TEXTS,
    COLD_USER_PAIRS,
    ITEM_TEXT_SCHEMA,
    USER_PAIR_SCHEMA,
    cold_mask,
)
from cllm4rec_dist.data.format import SPLITS, sha256_file
from data_prep.pipeline.arrowio import write_bytes_atomic, write_ipc, write_parquet
from data_prep.pipeline.manifest import file_info
from data_prep.pipeline.reduce import BucketPairs
from data_prep.pipeline.split import TRAIN, VAL, assign_splits, to_csr
from data_prep.pipeline.staging import StagingArea

REVIEW, ITEM_DESCRIPTION, USER_DESCRIPTION = 0, 1, 2
DOC_KINDS = {REVIEW: "review", ITEM_DESCRIPTION: "item", USER_DESCRIPTION: "user"}
CONTENT_SCHEMA = pa.schema(
    [("kind", pa.int64()), ("user", pa.int64()), ("item", pa.int64()), ("text", pa.string())]
)


@dataclass
class FinalizeJob:
    """Inputs of one bucket's finalize task (besides the shared global item list)."""

    bucket: int
    reduce_dir: Path
    final_dir: Path
    output_dir: Path
    users: pa.Array  # sorted raw ids of the bucket's kept users
    user_index: np.ndarray  # int64 global index of each of them
    seed: int
    split: dict[str, Any]
    num_users: int  # users in the id map (the cold draw is over all of them)
    min_user: int
    tokenizer_sample: int  # texts to return for tokenizer training


@dataclass
class BucketSummary:
    """What the driver needs from one bucket: sizes, digests and counts."""

    bucket: int
    users: int
    documents: int
    interactions: dict[str, int]
    evaluated: dict[str, int]
    doc_kinds: dict[str, int]
    rejected: collections.Counter[str]
    digest: str  # sha256 over the bucket's shard-input files
    split_files: dict[str, dict[str, Any]]  # relative path -> {rows, sha256, bytes}
    cold: dict[str, int]  # what the cold split held out: user_pairs, item_train_pairs, ...
    text_sample: list[str] = field(default_factory=list)


def _save_npy(path: Path, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    # An intermediate file: a crash recomputes it, so it needs no fsync.
    write_bytes_atomic(path, buf.getvalue(), durable=False)


def _member_of_sorted(values: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    """bool [n]: whether each of ``values`` is in ``sorted_set`` (ascending, no hashing)."""
    if len(sorted_set) == 0:
        return np.zeros(len(values), dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_set, values), len(sorted_set) - 1)
    return sorted_set[pos] == values


def _map_ids(raw: pa.Array | pa.ChunkedArray, known: pa.Array, index: np.ndarray) -> np.ndarray:
    """Index of each raw id among ``known`` (sorted raw ids with their ``index``), -1 if absent."""
    pos = pc.fill_null(pc.index_in(raw, value_set=known), -1).to_numpy().astype(np.int64)
    out = np.full(len(pos), -1, dtype=np.int64)
    found = pos >= 0
    out[found] = index[pos[found]]
    return out


def _content(
    area: StagingArea,
    job: FinalizeJob,
    item_map: ItemMap,
    heldout: np.ndarray,
    rejected: collections.Counter[str],
    cold: _ColdIds,
) -> pa.Table:
    """The bucket's documents (CONTENT_SCHEMA), unknown ids and held-out reviews rejected;
    cold users' and items' texts left out (cold item descriptions are written by the caller)."""
    items, item_index = item_map.raw, item_map.index
    parts = []
    reviews = area.read_bucket("reviews", job.bucket)
    users = _map_ids(reviews["user"], job.users, job.user_index)
    review_items = _map_ids(reviews["item"], items, item_index)
    pair_keys = users * item_map.size + review_items
    reasons = [
        (users < 0, "review_unknown_user"),
        (review_items < 0, "review_unknown_item"),
        (_member_of_sorted(pair_keys, heldout), "review_heldout_pair"),
    ]
    keep = np.ones(reviews.num_rows, dtype=bool)
    for bad, reason in reasons:
        bad = bad & keep
        if bad.any():
            rejected[reason] += int(bad.sum())
        keep &= ~bad
    keep = cold.drop_texts(keep, users, review_items)
    parts.append((REVIEW, users[keep], review_items[keep], reviews["text"].filter(keep)))

    texts = area.read_bucket("user_texts", job.bucket)
    users = _map_ids(texts["user"], job.users, job.user_index)
    if (users < 0).any():
        rejected["user_text_unknown_user"] += int((users < 0).sum())
    keep = cold.drop_texts(users >= 0, users, None)
    parts.append(
        (USER_DESCRIPTION, users[keep], np.full(keep.sum(), -1), texts["text"].filter(keep))
    )

    texts = area.read_bucket("item_texts", job.bucket)
    text_items = _map_ids(texts["item"], items, item_index)
    if (text_items < 0).any():
        rejected["item_text_unknown_item"] += int((text_items < 0).sum())
    keep = text_items >= 0
    is_cold = keep & cold.items[np.maximum(text_items, 0)]
    cold.item_texts = pa.table(
        {"item": pa.array(text_items[is_cold]), "text": texts["text"].filter(is_cold)},
        schema=ITEM_TEXT_SCHEMA,
    ).sort_by("item")
    keep &= ~is_cold
    parts.append(
        (ITEM_DESCRIPTION, np.full(keep.sum(), -1), text_items[keep], texts["text"].filter(keep))
    )
    tables = [
        pa.table(
            {
                "kind": pa.array(np.full(len(u), kind, dtype=np.int64)),
                "user": pa.array(np.asarray(u, dtype=np.int64)),
                "item": pa.array(np.asarray(i, dtype=np.int64)),
                "text": pc.utf8_trim_whitespace(t),
            },
            schema=CONTENT_SCHEMA,
        )
        for kind, u, i, t in parts
    ]
    table = pa.concat_tables(tables).combine_chunks()
    keys = [(name, "ascending") for name in ("kind", "user", "item", "text")]
    return table.sort_by(keys)


@dataclass
class _ColdIds:
    """The cold masks over all users and items, and what one bucket held out by them."""

    users: np.ndarray  # bool [num_users]
    items: np.ndarray  # bool [num_items]
    counts: collections.Counter[str] = field(default_factory=collections.Counter)
    item_texts: pa.Table | None = None

    @classmethod
    def of(cls, job: FinalizeJob, num_items: int) -> _ColdIds:
        get = job.split.get
        return cls(
            cold_mask(job.seed, job.num_users, get("cold_user_fraction", 0.0), "users"),
            cold_mask(job.seed, num_items, get("cold_item_fraction", 0.0), "items"),
        )

    def drop_texts(
        self, keep: np.ndarray, users: np.ndarray, items: np.ndarray | None
    ) -> np.ndarray:
        """``keep`` without the texts of a cold user or item (unknown ids, -1, stay as they are)."""
        cold = keep & self.users[np.maximum(users, 0)]
        if items is not None:
            cold |= keep & self.items[np.maximum(items, 0)]
        self.counts["texts_dropped"] += int(cold.sum())
        return keep & ~cold


@dataclass(frozen=True)
class ItemMap:
    """The global item map as finalize looks ids up in it: ``raw`` sorted raw ids, ``index``
    the index of each, ``size`` the number of indices (items in the catalog)."""

    raw: pa.Array
    index: np.ndarray
    size: int

    @classmethod
    def sorted_order(cls, items: pa.Array) -> ItemMap:
        """index = rank in sorted order (a fresh catalog)."""
        return cls(items, np.arange(len(items), dtype=np.int64), len(items))


@ray.remote
def finalize_bucket(area: StagingArea, job: FinalizeJob, items: ItemMap) -> BucketSummary:
    """Run the finalize phase of one bucket (see module docstring); ``items`` = global item map."""
    pairs = BucketPairs.load(job.reduce_dir)
    item_global = _map_ids(pairs.items, items.raw, items.index)
    mask, user_ok = pairs.kept(item_global >= 0, job.min_user)
    if int(user_ok.sum()) != len(job.user_index):
        raise RuntimeError(f"bucket {job.bucket}: user set changed between k-core and finalize")
    user_global = np.full(len(pairs.users), -1, dtype=np.int64)
    user_global[user_ok] = job.user_index
    users = user_global[pairs.user_codes[mask]]
    item_idx = item_global[pairs.item_codes[mask]]
    split = assign_splits(
        users,
        item_idx,
        job.seed,
        job.split["val_fraction"],
        job.split["test_fraction"],
        job.split["min_items_for_eval"],
    )

    cold = _ColdIds.of(job, items.size)
    split_files: dict[str, dict[str, Any]] = {}
    users, item_idx, split = _hold_out_cold(job, cold, users, item_idx, split, split_files)

    rows = np.sort(job.user_index)
    rows = rows[~cold.users[rows]]
    job.final_dir.mkdir(parents=True, exist_ok=True)
    _save_npy(job.final_dir / "users.npy", rows)
    counts: dict[str, int] = {}
    evaluated: dict[str, int] = {}
    for code, name in enumerate(SPLITS):
        sel = split == code
        offsets, flat = to_csr(rows, users[sel], item_idx[sel])
        _save_npy(job.final_dir / f"{name}_offsets.npy", offsets)
        _save_npy(job.final_dir / f"{name}_items.npy", flat)
        counts[name] = len(flat)
        if name != "train":
            evaluated[name] = int((np.diff(offsets) > 0).sum())
        part = pa.table({"user": pa.array(np.repeat(rows, np.diff(offsets))), "item": flat})
        relative = f"splits/{name}/part-{job.bucket:05d}.parquet"
        write_parquet(job.output_dir / relative, part)
        split_files[relative] = file_info(job.output_dir / relative, len(flat))

    rejected: collections.Counter[str] = collections.Counter()
    heldout = np.sort(users[split >= VAL] * items.size + item_idx[split >= VAL])
    content = _content(area, job, items, heldout, rejected, cold)
    write_ipc(job.final_dir / "content.arrow", content)
    if cold.item_texts is not None and cold.item_texts.num_rows:
        relative = f"{COLD_ITEM_TEXTS}/part-{job.bucket:05d}.parquet"
        write_parquet(job.output_dir / relative, cold.item_texts)
        split_files[relative] = file_info(job.output_dir / relative, cold.item_texts.num_rows)
        cold.counts["item_texts"] += cold.item_texts.num_rows
    kinds = np.bincount(content["kind"].to_numpy(), minlength=len(DOC_KINDS))

    digest_files = ["users.npy", "content.arrow"] + [
        f"{name}_{part}.npy" for name in SPLITS for part in ("offsets", "items")
    ]
    digest = hashlib.sha256(
        "".join(sha256_file(job.final_dir / f) for f in digest_files).encode()
    ).hexdigest()
    rng = np.random.default_rng([job.seed, job.bucket])
    take = min(content.num_rows, job.tokenizer_sample)
    sample = np.sort(rng.choice(content.num_rows, take, replace=False)) if take else []
    return BucketSummary(
        bucket=job.bucket,
        users=len(rows),
        documents=content.num_rows,
        interactions=counts,
        evaluated=evaluated,
        doc_kinds={DOC_KINDS[k]: int(kinds[k]) for k in DOC_KINDS},
        rejected=rejected,
        digest=digest,
        split_files=split_files,
        cold=dict(cold.counts),
        text_sample=content["text"].take(pa.array(sample, pa.int64())).to_pylist(),
    )


def _hold_out_cold(
    job: FinalizeJob,
    cold: _ColdIds,
    users: np.ndarray,
    items: np.ndarray,
    split: np.ndarray,
    files: dict[str, dict[str, Any]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pairs left for training files: a cold user's pairs are written to its cold part
    (and counted), a cold item's train pairs are dropped (and counted)."""
    user_cold = cold.users[users]
    item_dropped = ~user_cold & (split == TRAIN) & cold.items[items]
    if user_cold.any():
        order = np.lexsort((items[user_cold], users[user_cold]))
        part = pa.table(
            {
                "user": pa.array(users[user_cold][order]),
                "item": pa.array(items[user_cold][order]),
                "split": pa.array(split[user_cold][order]),
            },
            schema=USER_PAIR_SCHEMA,
        )
        relative = f"{COLD_USER_PAIRS}/part-{job.bucket:05d}.parquet"
        write_parquet(job.output_dir / relative, part)
        files[relative] = file_info(job.output_dir / relative, part.num_rows)
    cold.counts["user_pairs"] += int(user_cold.sum())
    cold.counts["item_train_pairs"] += int(item_dropped.sum())
    keep = ~user_cold & ~item_dropped
    return users[keep], items[keep], split[keep]


def tokenizer_sample_per_bucket(max_documents: int, buckets: int) -> int:
    """Texts each bucket contributes to the tokenizer's bounded training sample."""
    return math.ceil(max_documents / buckets)
