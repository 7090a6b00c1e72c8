"""Phase 2: per-bucket dedupe, then the iterated k-core filter, which fixes the user and item sets.

A bucket holds every interaction of its users, so deduplication and user degrees are local;
item degrees are summed over buckets by the driver after each round. Round r keeps the pairs
whose item is in I_r and whose user still has >= k_core_user of them, counts items over those
pairs, and I_{r+1} = items with count >= k_core_item. The filter is stable when I_{r+1} = I_r;
the kept pairs of that round are the k-core. (Without k-core, round 0 is already stable.)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray
from tqdm import tqdm

from data_prep.pipeline.arrays import factorize_sorted, sorted_unique
from data_prep.pipeline.arrowio import read_ipc, write_ipc
from data_prep.pipeline.raytools import run_all
from data_prep.pipeline.staging import StagingArea


@dataclass
class BucketPairs:
    """Deduplicated interactions of one bucket: local sorted dictionaries plus code pairs."""

    users: pa.Array  # string [nu], sorted
    items: pa.Array  # string [ni], sorted
    user_codes: np.ndarray  # int32 [nnz] into users
    item_codes: np.ndarray  # int32 [nnz] into items

    def save(self, folder: Path) -> None:
        write_ipc(folder / "users.arrow", pa.table({"raw_id": self.users}))
        write_ipc(folder / "items.arrow", pa.table({"raw_id": self.items}))
        np.save(folder / "user_codes.npy", self.user_codes)
        np.save(folder / "item_codes.npy", self.item_codes)

    @classmethod
    def load(cls, folder: Path) -> BucketPairs:
        return cls(
            read_ipc(folder / "users.arrow")["raw_id"].combine_chunks(),
            read_ipc(folder / "items.arrow")["raw_id"].combine_chunks(),
            np.load(folder / "user_codes.npy"),
            np.load(folder / "item_codes.npy"),
        )

    def kept(self, item_ok: np.ndarray, min_user: int) -> tuple[np.ndarray, np.ndarray]:
        """Apply one k-core round: item_ok bool [ni] -> (pair mask bool [nnz], user_ok bool [nu]).

        A user is kept when >= max(min_user, 1) of its pairs have a kept item.
        """
        pair_ok = item_ok[self.item_codes]
        degree = np.bincount(self.user_codes[pair_ok], minlength=len(self.users))
        user_ok = degree >= max(min_user, 1)
        return pair_ok & user_ok[self.user_codes], user_ok


@dataclass
class RoundResult:
    """What one bucket reports after a k-core round."""

    items: pa.Array  # string: the bucket's items still in I_r
    item_counts: np.ndarray  # int64, pairs kept per item (may be 0)
    users: pa.Array  # string, sorted: users kept this round
    duplicates: int = 0  # repeated (user, item) records dropped (round 0 only)
    pairs: int = 0  # distinct (user, item) pairs before any k-core filtering (round 0 only)


def dedupe_bucket(area: StagingArea, bucket: int) -> tuple[BucketPairs, int]:
    """Distinct (user, item) pairs of a bucket's staged interactions -> (pairs, duplicates)."""
    table = area.read_bucket("interactions", bucket)
    users, user_codes = factorize_sorted(table["user"])
    items, item_codes = factorize_sorted(table["item"])
    keys = sorted_unique(user_codes.astype(np.int64) * max(len(items), 1) + item_codes)
    pairs = BucketPairs(
        users,
        items,
        (keys // max(len(items), 1)).astype(np.int32),
        (keys % max(len(items), 1)).astype(np.int32),
    )
    return pairs, table.num_rows - len(keys)


def _round(pairs: BucketPairs, item_ok: np.ndarray, min_user: int) -> RoundResult:
    mask, user_ok = pairs.kept(item_ok, min_user)
    counts = np.bincount(pairs.item_codes[mask], minlength=len(pairs.items))
    return RoundResult(
        pairs.items.filter(pa.array(item_ok)),
        counts[item_ok].astype(np.int64),
        pairs.users.filter(pa.array(user_ok)),
    )


@ray.remote
def _first_round(area: StagingArea, bucket: int, folder: Path, min_user: int) -> RoundResult:
    pairs, duplicates = dedupe_bucket(area, bucket)
    pairs.save(folder)
    result = _round(pairs, np.ones(len(pairs.items), dtype=bool), min_user)
    result.duplicates = duplicates
    result.pairs = len(pairs.user_codes)
    return result


@ray.remote
def _next_round(folder: Path, keep_items: pa.Array, min_user: int) -> RoundResult:
    pairs = BucketPairs.load(folder)
    return _round(
        pairs, pc.is_in(pairs.items, value_set=keep_items).to_numpy(zero_copy_only=False), min_user
    )


@dataclass
class ReduceResult:
    bucket_users: list[pa.Array]  # per bucket: sorted raw ids of its kept users
    items: pa.Array  # sorted raw ids of all kept items
    duplicates: int
    pairs: int  # distinct pairs before the k-core filter
    rounds: int


def bucket_folder(work: Path, bucket: int) -> Path:
    """Where ``dedupe_bucket``'s output of ``bucket`` is kept for the later phases."""
    return work / "reduce" / f"bucket-{bucket:05d}"


def _merge_counts(results: list[RoundResult]) -> tuple[pa.Array, np.ndarray]:
    """Sum item counts over buckets -> (distinct items, total counts), in no particular order."""
    table = pa.table(
        {
            "item": pa.concat_arrays([r.items for r in results]),
            "count": pa.array(np.concatenate([r.item_counts for r in results])),
        }
    )
    summed = table.group_by("item").aggregate([("count", "sum")])
    return summed["item"].combine_chunks(), summed["count_sum"].to_numpy()


def run_reduce(
    area: StagingArea, work: Path, k_core_user: int, k_core_item: int, progress: bool
) -> ReduceResult:
    """Dedupe every bucket and iterate the k-core filter until the item set is stable."""
    folders = [bucket_folder(work, b) for b in range(area.buckets)]
    refs = [_first_round.remote(area, b, f, k_core_user) for b, f in enumerate(folders)]
    results = run_all(refs, "dedupe + k-core round 0", progress)
    duplicates = sum(r.duplicates for r in results)
    pairs = sum(r.pairs for r in results)
    rounds = 1
    with tqdm(desc="k-core rounds", disable=not progress or k_core_item <= 1) as bar:
        while True:
            items, counts = _merge_counts(results)
            keep = items.filter(pa.array(counts >= max(k_core_item, 1)))
            if len(keep) == len(items):
                break
            keep_ref = ray.put(keep)
            refs = [_next_round.remote(f, keep_ref, k_core_user) for f in folders]
            results = run_all(refs, f"k-core round {rounds}", False)
            rounds += 1
            bar.update(1)
    return ReduceResult(
        [r.users for r in results], items.take(pc.sort_indices(items)), duplicates, pairs, rounds
    )
