"""The per-user split rule and CSR packing of a block of users' items.

Split rule (docs/data_prep.md): a user's n distinct items are ordered by
``split_keys(seed, user_index, item_index)`` (a uniform random permutation that depends only on
seed, user and item). If n >= min_items_for_eval:
    n_test = max(1, floor(n * test_fraction + 0.5))
    n_val  = min(max(1, floor(n * val_fraction + 0.5)), n - n_test - 1)
the first n_test items go to test, the next n_val to val, the rest to train. Users with
n < min_items_for_eval are train-only and not evaluated.
"""

from __future__ import annotations

import numpy as np

from data_prep.pipeline.hashing import split_keys

TRAIN, VAL, TEST = 0, 1, 2  # split codes: the index of the name in format.SPLITS
SPLIT_RULE = (
    "order each user's distinct items by splitmix64(splitmix64(splitmix64(seed) ^ user) ^ item) "
    "(user/item = contiguous indices); if n >= min_items_for_eval: n_test = max(1, "
    "floor(n*test_fraction + 0.5)), n_val = min(max(1, floor(n*val_fraction + 0.5)), "
    "n - n_test - 1); first n_test -> test, next n_val -> val, rest -> train; otherwise all train"
)


def held_out_sizes(
    n: np.ndarray, val_fraction: float, test_fraction: float, min_items: int
) -> tuple[np.ndarray, np.ndarray]:
    """(n_val, n_test) per user with n items (int64 arrays like ``n``), per the split rule."""
    evaluated = n >= min_items
    n_test = np.maximum(1, np.floor(n * test_fraction + 0.5).astype(np.int64))
    n_val = np.minimum(
        np.maximum(1, np.floor(n * val_fraction + 0.5).astype(np.int64)), n - n_test - 1
    )
    return np.where(evaluated, n_val, 0), np.where(evaluated, n_test, 0)


def assign_splits(
    users: np.ndarray,
    items: np.ndarray,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    min_items: int,
) -> np.ndarray:
    """Split of each distinct (user, item) pair: int8 [nnz] of TRAIN / VAL / TEST.

    users, items: int64 [nnz] indices (any order, every pair of a user present).
    """
    keys = split_keys(seed, users, items)
    by_key = np.argsort(keys)
    order = by_key[np.argsort(users[by_key], kind="stable")]  # = lexsort((keys, users)), faster
    sorted_users = users[order]
    starts = np.flatnonzero(np.r_[True, sorted_users[1:] != sorted_users[:-1]])
    sizes = np.diff(np.r_[starts, len(order)])
    n_val, n_test = held_out_sizes(sizes, val_fraction, test_fraction, min_items)
    group = np.repeat(np.arange(len(starts)), sizes)
    rank = np.arange(len(order)) - starts[group]
    in_sorted = np.where(
        rank < n_test[group], TEST, np.where(rank < (n_test + n_val)[group], VAL, TRAIN)
    ).astype(np.int8)
    split = np.empty(len(order), dtype=np.int8)
    split[order] = in_sorted
    return split


def to_csr(
    row_ids: np.ndarray, users: np.ndarray, items: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Items of each user in ``row_ids`` as CSR, items ascending within a row.

    row_ids: int64 [r] sorted users; users, items: int64 [nnz] with every user in row_ids ->
    (offsets int64 [r+1], items int64 [nnz]).
    """
    if not _sorted_pairs(users, items):
        order = np.lexsort((items, users))
        users, items = users[order], items[order]
    offsets = np.searchsorted(users, np.r_[row_ids, np.iinfo(np.int64).max])
    offsets[-1] = len(users)
    return offsets.astype(np.int64), items.astype(np.int64)


def _sorted_pairs(users: np.ndarray, items: np.ndarray) -> bool:
    """Whether (users, items) rows are already in lexicographic order (skips a sort)."""
    if len(users) < 2:
        return True
    later_user = users[1:] > users[:-1]
    same_user = users[1:] == users[:-1]
    return bool(np.all(later_user | (same_user & (items[1:] >= items[:-1]))))
