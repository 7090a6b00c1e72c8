"""model/collab_rows.py: the randomized item factors against a dense SVD, on one and two ranks."""

from __future__ import annotations

import torch
import torch.distributed as dist

from cllm4rec_dist.model.collab_rows import (
    into_space,
    item_factors,
    random_basis,
    reference_factors,
)
from tests.helpers import csr, run_ranks_serialized


def planted(num_users: int = 120, num_items: int = 40, blocks=(16, 10, 6, 3)) -> torch.Tensor:
    """A binary matrix of exact rank len(blocks) with distinct singular values: block b's users
    took block b's items, and blocks differ in size."""
    x = torch.zeros(num_users, num_items)
    user, item = 0, 0
    for b, width in enumerate(blocks):
        users = (len(blocks) - b) * 8
        x[user : user + users, item : item + width] = 1.0
        user, item = user + users, item + width
    return x


def histories(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return csr([row.nonzero().flatten().tolist() for row in x])


def test_factors_match_the_dense_svd_on_a_planted_matrix():
    x = planted()
    offsets, items = histories(x)
    got = item_factors(offsets, items, x.shape[1], 4, lambda t: t)
    torch.testing.assert_close(got, reference_factors(x, 4), atol=1e-4, rtol=1e-4)
    # The item-item scores of PureSVD (x V S V^T) follow: what the rows are for.
    torch.testing.assert_close(got @ got.T, (lambda r: r @ r.T)(reference_factors(x, 4)),
                               atol=1e-3, rtol=1e-3)  # fmt: skip


def test_repeated_items_count_once_and_dims_are_cut_to_the_items():
    offsets, items = csr([[0, 0, 1], [1, 2], [2, 2, 2]])
    once = item_factors(*csr([[0, 1], [1, 2], [2]]), 3, 2, lambda t: t)
    torch.testing.assert_close(item_factors(offsets, items, 3, 2, lambda t: t), once)
    assert item_factors(offsets, items, 3, 10, lambda t: t).shape == (3, 3)


def _two_rank_factors(rank: int, world: int):
    x = planted()
    half = x.shape[0] // world
    offsets, items = histories(x[rank * half : (rank + 1) * half])

    def reduce(t):
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    return item_factors(offsets, items, x.shape[1], 4, reduce)


def test_two_ranks_holding_half_the_users_each_get_the_one_process_factors():
    x = planted()
    single = item_factors(*histories(x), x.shape[1], 4, lambda t: t)
    ranks = run_ranks_serialized(_two_rank_factors)
    for got in ranks:
        torch.testing.assert_close(got, single, atol=1e-4, rtol=1e-4)
    assert torch.equal(ranks[0], ranks[1])  # bit-identical: every rank adds its slice of them


def test_into_space_gives_every_row_the_norm_and_keeps_the_cosines():
    factors = reference_factors(planted(), 4)
    factors[5] = 0.0  # an item no user took
    basis = random_basis(16, 4, seed=3)
    torch.testing.assert_close(basis.T @ basis, torch.eye(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(basis, random_basis(16, 4, seed=3))  # the same on every rank
    rows = into_space(factors, basis, norm=1.5)
    assert rows.shape == (40, 16)
    taken = factors.norm(dim=1) > 0  # the planted blocks leave items 35-39 untaken too
    assert not taken[5] and int(taken.sum()) == 34
    torch.testing.assert_close(rows[taken].norm(dim=1), torch.full((34,), 1.5))
    assert torch.equal(rows[~taken], torch.zeros(6, 16))
    unit = torch.nn.functional.normalize(factors[taken], dim=1)
    torch.testing.assert_close(rows[taken] @ rows[taken].T / 1.5**2, unit @ unit.T,
                               atol=1e-5, rtol=1e-5)  # fmt: skip
