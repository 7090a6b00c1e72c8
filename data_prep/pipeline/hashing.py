"""Stable hashes: which bucket a raw id goes to, and the random key that orders a user's items.

Both depend only on their inputs (never on process, worker count or block layout), which is what
makes the output identical however the work is scheduled.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from cllm4rec_dist.ops.hashing import mix64


def bucket_of(values: pa.Array | pa.ChunkedArray, buckets: int) -> np.ndarray:
    """Bucket in [0, buckets) of each raw id string: SipHash-2-4 (pandas' fixed key) mod buckets.

    values: string array without nulls, length n -> int32 [n].
    """
    if values.null_count:
        raise ValueError("bucket_of: null ids must be rejected before hashing")
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    # Ids repeat (a user has many interactions): hash each distinct id once, then gather.
    encoded = values.dictionary_encode()
    hashes = pd.util.hash_array(encoded.dictionary.to_numpy(zero_copy_only=False), categorize=False)
    per_id = (hashes % np.uint64(buckets)).astype(np.int32)
    return per_id[encoded.indices.to_numpy(zero_copy_only=False)]


def split_keys(seed: int, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Pseudo-random uint64 key of each (user index, item index) pair under ``seed``.

    users, items: int64 [n] -> uint64 [n]. Sorting a user's items by this key is a uniform random
    permutation that depends only on (seed, user, item).
    """
    base = mix64(np.uint64(seed & 0xFFFFFFFFFFFFFFFF))
    per_user = mix64(base ^ users.astype(np.uint64))
    return mix64(per_user ^ items.astype(np.uint64))
