"""PartitionedTable lookups == DenseTable lookups (values and averaged gradients), 1 and 2 ranks."""

from __future__ import annotations

import pytest
import torch
from helpers import run_ranks_serialized

from cllm4rec_dist.distributed.partitioned_table import PartitionedTable, row_ranges
from cllm4rec_dist.model.tables import DenseTable

# (num_rows, dim, ids of rank 0, ids of rank 1): duplicates, multi-dim ids, uneven shards,
# zero ids on one rank, and more ranks than rows (rank 1 owns nothing when num_rows == 1).
CASES = [
    (7, 3, [[0, 6, 6], [3, 3, 0]], [[6, 1, 2], [2, 2, 5]]),
    (7, 3, [4, 4, 5, 0], []),
    (7, 2, [], [1, 1, 1]),
    (1, 4, [0, 0], [0]),
    (10, 2, [9, 8, 7], [0, 1, 2]),
]


def test_row_ranges_cover_contiguously_with_remainder_first():
    assert row_ranges(7, 2) == [(0, 4), (4, 7)]
    assert row_ranges(10, 4) == [(0, 3), (3, 6), (6, 8), (8, 10)]
    assert row_ranges(2, 4) == [(0, 1), (1, 2), (2, 2), (2, 2)]
    assert row_ranges(5, 1) == [(0, 5)]


def _upstream(ids: torch.Tensor, dim: int, seed: int) -> torch.Tensor:
    """Fixed, non-uniform upstream gradient for a lookup of ``ids``."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*ids.shape, dim, generator=gen)


def _lookup_cases(rank: int, world_size: int) -> list:
    out = []
    for num_rows, dim, *ids in CASES:
        table = PartitionedTable(num_rows, dim, seed=3, std=1.0)
        mine = torch.tensor(ids[rank], dtype=torch.int64)
        rows = table(mine)
        (rows * _upstream(mine, dim, rank)).sum().backward()
        grad = table.weight.grad
        out.append(
            (
                table.row_range,
                rows.detach(),
                grad.is_sparse,
                grad._nnz(),
                grad.to_dense(),
            )
        )
    try:  # out-of-range ids on rank 1 only: every rank must raise, none may hang
        PartitionedTable(7, 2)(torch.tensor([0, 7] if rank == 1 else [1]))
        out.append("no error")
    except IndexError as exc:
        out.append(str(exc))
    return out


@pytest.mark.distributed
def test_two_rank_lookup_matches_dense_values_and_averaged_grads():
    ranks = run_ranks_serialized(_lookup_cases, 2)
    for c, (num_rows, dim, *ids) in enumerate(CASES):
        dense = DenseTable(num_rows, dim, seed=3, std=1.0)
        losses = []
        for r in range(2):
            mine = torch.tensor(ids[r], dtype=torch.int64)
            rows = dense(mine)
            torch.testing.assert_close(ranks[r][c][1], rows.detach(), rtol=0, atol=0)
            losses.append((rows * _upstream(mine, dim, r)).sum())
        # Convention: 2 ranks == one process on the mean of the two ranks' losses.
        (sum(losses) / 2).backward()
        full = torch.cat([ranks[r][c][4] for r in range(2)])
        torch.testing.assert_close(full, dense.weight.grad)
        for r in range(2):
            (lo, hi), _, is_sparse, nnz, _ = ranks[r][c]
            assert is_sparse
            touched = {i for i in torch.tensor(ids[0] + ids[1]).flatten().tolist() if lo <= i < hi}
            assert nnz == len(touched)  # only touched rows, each once
    assert "ids out of range [0, 7)" in ranks[1][-1] and "min=0, max=7" in ranks[1][-1]
    assert "on ranks [1]" in ranks[0][-1]


def test_single_process_without_process_group_matches_dense():
    table, dense = PartitionedTable(9, 4, seed=1), DenseTable(9, 4, seed=1)
    assert table.row_range == (0, 9)
    ids = torch.tensor([[8, 0, 8], [2, 2, 2]])
    up = _upstream(ids, 4, 0)
    rows = table(ids)
    torch.testing.assert_close(rows, dense(ids), rtol=0, atol=0)
    (rows * up).sum().backward()
    (dense(ids) * up).sum().backward()
    assert table.weight.grad.is_sparse and table.weight.grad._nnz() == 3
    torch.testing.assert_close(table.weight.grad.to_dense(), dense.weight.grad)
    assert table(torch.empty(0, dtype=torch.int64)).shape == (0, 4)
    with pytest.raises(IndexError, match=r"out of range \[0, 9\)"):
        table(torch.tensor([-1]))
