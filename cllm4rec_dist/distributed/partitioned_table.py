"""Row-partitioned ID table: each rank owns one contiguous block of rows (users or items).

A lookup is collective. Every rank dedupes its ids, asks each owner for the rows it needs with
``all_to_all_single`` and gets them back the same way; the backward pass sends row gradients to
the owners, which turn them into a sparse COO gradient of their local shard. See
docs/distributed.md for the diagram and the gradient convention.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from cllm4rec_dist.distributed.comm import all_to_all_rows, exchange_counts
from cllm4rec_dist.distributed.env import Group, world
from cllm4rec_dist.model.interfaces import init_rows
from cllm4rec_dist.model.tables import check_ids


def row_ranges(num_rows: int, world_size: int) -> list[tuple[int, int]]:
    """Even split of [0, num_rows) into ``world_size`` contiguous blocks; the first
    ``num_rows % world_size`` ranks get one extra row. Ranks past ``num_rows`` get empty blocks."""
    base, extra = divmod(num_rows, world_size)
    ranges, lo = [], 0
    for r in range(world_size):
        hi = lo + base + (1 if r < extra else 0)
        ranges.append((lo, hi))
        lo = hi
    return ranges


class _Plan:
    """Who asks whom for which rows in one lookup (computed once, reused by backward).

    uniq [u]: this rank's distinct ids, sorted, hence already grouped by owner;
    inverse [n]: position in ``uniq`` of each requested id;
    local_rows [m]: rows of this rank's shard that other ranks (and itself) asked for, grouped by
    requesting rank; send/recv: row counts per peer for the request direction.
    """

    def __init__(self, table: PartitionedTable, ids: Tensor):
        rank, ws = world(table.group)
        flat = ids.reshape(-1).to(device=table.weight.device, dtype=torch.int64)
        bad = flat.numel() > 0 and (int(flat.min()) < 0 or int(flat.max()) >= table.num_rows)
        self.uniq, self.inverse = torch.unique(flat, sorted=True, return_inverse=True)
        if bad:
            owner_counts = torch.zeros(ws, dtype=torch.int64, device=flat.device)
        else:
            owner = torch.searchsorted(table.bounds.to(flat.device), self.uniq, right=True)
            owner_counts = torch.bincount(owner, minlength=ws)
        # One all_to_all carries the counts AND a "bad ids" flag, so that every rank raises
        # together instead of leaving its peers blocked in the next collective.
        send = torch.stack([owner_counts, torch.full_like(owner_counts, int(bad))], dim=1)
        recv = exchange_counts(send, table.group).cpu()
        if bad:
            check_ids(flat, table.num_rows, table.what)
        if int(recv[:, 1].sum()):
            culprits = recv[:, 1].nonzero().flatten().tolist()
            raise IndexError(
                f"{table.what} ids out of range [0, {table.num_rows}) on ranks {culprits}"
            )
        self.send = owner_counts.cpu().tolist()
        self.recv = recv[:, 0].tolist()
        asked = all_to_all_rows(self.uniq, self.send, self.recv, table.group)
        self.local_rows = asked - table.row_range[0]


class _Lookup(torch.autograd.Function):
    """weight [hi-lo, dim] (local shard) -> rows [u, dim] for this rank's distinct ids."""

    @staticmethod
    def forward(ctx, weight: Tensor, plan: _Plan, group: Group) -> Tensor:
        ctx.plan, ctx.group, ctx.shape = plan, group, weight.shape
        served = weight.index_select(0, plan.local_rows)
        return all_to_all_rows(served, plan.recv, plan.send, group)

    @staticmethod
    def backward(ctx, grad_uniq: Tensor) -> tuple[Tensor, None, None]:
        plan = ctx.plan
        _, ws = world(ctx.group)
        grad_rows = all_to_all_rows(grad_uniq, plan.send, plan.recv, ctx.group)
        # Several ranks may have asked for the same row: sum them per row. Dividing by the world
        # size averages over ranks, matching DeepSpeed's data-parallel gradient averaging.
        rows, inv = torch.unique(plan.local_rows, sorted=True, return_inverse=True)
        values = grad_rows.new_zeros(rows.numel(), grad_rows.shape[1])
        values.index_add_(0, inv, grad_rows)
        values.div_(ws)
        grad = torch.sparse_coo_tensor(
            rows.unsqueeze(0), values, ctx.shape, is_coalesced=True, check_invariants=False
        )
        return grad, None, None


class PartitionedTable(nn.Module):
    """This rank's contiguous block of a ``num_rows`` x ``dim`` fp32 table (an ``IdTable``).

    Starts from the same global values as ``DenseTable(num_rows, dim, seed, std)`` for any world
    size. ``forward`` is collective: every rank of ``group`` calls it, possibly with zero ids, and
    every rank's loss must depend on the result so that backward is collective too.
    """

    def __init__(
        self,
        num_rows: int,
        dim: int,
        seed: int = 0,
        std: float = 0.02,
        group: Group = None,
        what: str = "table",
    ):
        super().__init__()
        self.num_rows, self.dim, self.group, self.what = num_rows, dim, group, what
        self.rank, self.world_size = world(group)
        ranges = row_ranges(num_rows, self.world_size)
        self.row_range = ranges[self.rank]
        # Upper bounds of every rank's block: searchsorted(bounds, id, right=True) is the owner.
        self.register_buffer(
            "bounds", torch.tensor([hi for _, hi in ranges], dtype=torch.int64), persistent=False
        )
        self.weight = nn.Parameter(init_rows(*self.row_range, dim, seed, std))

    def forward(self, ids: Tensor) -> Tensor:
        """ids: int64 [...] global row ids -> fp32 [..., dim]. Collective."""
        plan = _Plan(self, ids)
        rows = _Lookup.apply(self.weight, plan, self.group)
        return rows.index_select(0, plan.inverse).reshape(*ids.shape, self.dim)

    def extra_repr(self) -> str:
        lo, hi = self.row_range
        return (
            f"num_rows={self.num_rows}, dim={self.dim}, rows=[{lo}, {hi}), world={self.world_size}"
        )


__all__ = ["PartitionedTable", "row_ranges"]
