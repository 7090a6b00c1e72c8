"""Balanced shard layout over a bucket-major row order.

Rows (users of the collaborative / recommendation corpora, documents of the content corpus) are
ordered bucket by bucket (within a bucket: users by index, documents by kind/user/item/text).
With R rows, r rows per sample and s samples per shard:

- S = ceil(R / r) samples; sample j holds R // S rows, the first R % S samples one more;
- N = ceil(S / s) shards rounded up to a multiple of ``shard_multiple`` (at least one multiple);
  shard k holds S // N samples, the first S % N shards one more.

Readers split shards by striding (rank r takes shards r, r + W, ...), and the extra samples sit
on the first shards, so any W (x workers) dividing N gets equal sample counts +-1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ShardPlan:
    """One shard: its rows [start, stop) in bucket-major order, cut into samples."""

    index: int
    first_sample: int  # global number of its first sample (sample keys are unique)
    sample_sizes: tuple[int, ...]
    start: int
    stop: int


def plan_shards(
    rows: int, rows_per_sample: int, samples_per_shard: int, shard_multiple: int
) -> list[ShardPlan]:
    """The shard plans of a corpus with ``rows`` rows (see module docstring)."""
    samples = math.ceil(rows / rows_per_sample)
    shards = max(1, math.ceil(samples / samples_per_shard))
    shards = math.ceil(shards / shard_multiple) * shard_multiple
    sample_sizes = [rows // samples + (j < rows % samples) for j in range(samples)] if rows else []
    per_shard = [samples // shards + (k < samples % shards) for k in range(shards)]
    plans, sample, row = [], 0, 0
    for k, count in enumerate(per_shard):
        sizes = tuple(sample_sizes[sample : sample + count])
        plans.append(ShardPlan(k, sample, sizes, row, row + sum(sizes)))
        sample += count
        row += sum(sizes)
    return plans


def bucket_slices(start: int, stop: int, bucket_rows: list[int]) -> list[tuple[int, int, int]]:
    """Rows [start, stop) of the bucket-major order as (bucket, lo, hi) slices of buckets."""
    bounds = np.cumsum([0] + list(bucket_rows))
    slices = []
    for b in range(len(bucket_rows)):
        lo, hi = max(start, bounds[b]), min(stop, bounds[b + 1])
        if lo < hi:
            slices.append((b, int(lo - bounds[b]), int(hi - bounds[b])))
    return slices
