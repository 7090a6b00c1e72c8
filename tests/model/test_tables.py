"""init_rows: the values of a row depend only on (seed, row), whatever range is asked for."""

from __future__ import annotations

import pytest
import torch

from cllm4rec_dist.model.interfaces import INIT_CHUNK_ROWS, INIT_DRAW_ROWS, init_rows


def one_draw_per_chunk(lo: int, hi: int, dim: int, seed: int, std: float) -> torch.Tensor:
    """The plain form: each chunk's whole [INIT_CHUNK_ROWS, dim] normal draw at once."""
    out = []
    for chunk in range(lo // INIT_CHUNK_ROWS, (hi - 1) // INIT_CHUNK_ROWS + 1):
        gen = torch.Generator().manual_seed(seed * 1_000_003 + chunk)
        rows = torch.randn(INIT_CHUNK_ROWS, dim, generator=gen) * std
        c_lo = chunk * INIT_CHUNK_ROWS
        out.append(rows[max(lo, c_lo) - c_lo : min(hi, c_lo + INIT_CHUNK_ROWS) - c_lo])
    return torch.cat(out)


@pytest.mark.parametrize(
    "lo,hi,dim",
    [
        (0, 5, 3),
        (4090, 4100, 7),  # across a draw boundary inside a chunk
        (65530, 65541, 5),  # across a chunk boundary
        (70000, 140000, 2),  # several chunks, ending mid-draw
        (0, INIT_CHUNK_ROWS, 1),
    ],
)
def test_draws_in_pieces_equal_one_draw_per_chunk(lo, hi, dim):
    assert INIT_CHUNK_ROWS % INIT_DRAW_ROWS == 0
    got = init_rows(lo, hi, dim, seed=3, std=0.02)
    assert torch.equal(got, one_draw_per_chunk(lo, hi, dim, seed=3, std=0.02))


def test_any_split_of_the_rows_gives_the_same_table():
    whole = init_rows(0, 9000, 4, seed=1, std=1.0)
    cuts = [0, 1, 4095, 4097, 8191, 9000]
    parts = [init_rows(a, b, 4, seed=1, std=1.0) for a, b in zip(cuts, cuts[1:])]
    assert torch.equal(torch.cat(parts), whole)
    assert init_rows(5, 5, 4, seed=1, std=1.0).shape == (0, 4)
