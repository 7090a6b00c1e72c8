"""Contracts between the model (plain nn.Modules) and the injected ID tables / item scorers.

The model calls these objects and never issues collectives itself. Dense implementations live in
``model/tables.py`` and ``model/heads.py``; row-partitioned / item-parallel ones live in
``distributed/``. Every call on a partitioned object is collective: all ranks call it the same
number of times in the same order, possibly with zero rows.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

# Fixed chunk of rows that share one RNG stream: table initialisation is then identical whatever
# the partitioning (a 2-rank run starts from exactly the tables of a 1-rank run).
INIT_CHUNK_ROWS = 65536


# Rows drawn per call inside a chunk. Consecutive draws of whole multiples of 16 values continue
# torch's CPU normal stream exactly (tests/model/test_tables.py checks it against one draw of
# the chunk), so the transient is [INIT_DRAW_ROWS, dim] instead of [INIT_CHUNK_ROWS, dim]
# (50 MB instead of 805 MB at dim 3072), and drawing stops at the last row needed.
INIT_DRAW_ROWS = 4096


def init_rows(lo: int, hi: int, dim: int, seed: int, std: float) -> Tensor:
    """Initial values of global rows [lo, hi) of a table: N(0, std²), fp32, independent of sharding."""
    out = torch.empty(max(hi - lo, 0), dim, dtype=torch.float32)
    if hi <= lo:
        return out
    first, last = lo // INIT_CHUNK_ROWS, (hi - 1) // INIT_CHUNK_ROWS
    for chunk in range(first, last + 1):
        c_lo = chunk * INIT_CHUNK_ROWS
        gen = torch.Generator().manual_seed(seed * 1_000_003 + chunk)
        a, b = max(lo, c_lo), min(hi, c_lo + INIT_CHUNK_ROWS)
        for d_lo in range(c_lo, b, INIT_DRAW_ROWS):
            rows = torch.randn(INIT_DRAW_ROWS, dim, generator=gen)
            r0, r1 = max(a, d_lo), min(b, d_lo + INIT_DRAW_ROWS)
            if r1 > r0:
                out[r0 - lo : r1 - lo] = rows[r0 - d_lo : r1 - d_lo] * std
    return out


class IdTable(Protocol):
    """An embedding table of ``num_rows`` ID tokens (users or items), fp32 rows of size ``dim``."""

    num_rows: int
    dim: int

    def __call__(self, ids: Tensor) -> Tensor:
        """ids: int64 of any shape with values in [0, num_rows) -> fp32 [*ids.shape, dim]."""
        ...


class ItemScorer(Protocol):
    """Scores hidden states against ALL items of the (collaborative) item table it was built on.

    Logits are ``hidden @ item_table.T`` (the item head is tied to the item table), computed in fp32.
    """

    def cross_entropy(self, hidden: Tensor, targets: Tensor) -> Tensor:
        """hidden [N, H], targets [N] item indices -> per-row loss [N] = -log softmax(logits)[target]."""
        ...

    def multinomial_nll(
        self, hidden: Tensor, target_offsets: Tensor, target_items: Tensor
    ) -> Tensor:
        """hidden [B, H]; targets as CSR (offsets [B+1], items [nnz]) -> per-row loss [B] =
        -sum_{j in targets(b)} log softmax(logits_b)[j]. Never builds a dense [B, I] target."""
        ...

    @torch.no_grad()
    def topk(
        self, hidden: Tensor, k: int, exclude_offsets: Tensor, exclude_items: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Exact top-k items per row with the CSR ``exclude`` items masked out.

        Returns (scores [B, k] fp32 descending, items [B, k] int64). Ties: lower item index first.
        k <= number of items; rows with fewer than k non-excluded items pad with (-inf, -1).
        """
        ...
