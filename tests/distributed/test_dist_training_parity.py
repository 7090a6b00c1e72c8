"""A few training steps with partitioned tables on 2 ranks == the same steps with dense tables on
one process, given the gradient convention (table grads averaged over ranks, backbone grads
averaged as DeepSpeed does)."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from helpers import DenseScorer, csr, run_ranks_serialized
from torch import nn

from cllm4rec_dist.distributed.item_parallel import ItemParallelScorer
from cllm4rec_dist.distributed.partitioned_table import PartitionedTable
from cllm4rec_dist.distributed.rowwise_optim import RowWiseAdagrad
from cllm4rec_dist.model.tables import DenseTable

USERS, ITEMS, DIM, STEPS = 7, 5, 4, 3


def batch(step: int, rank: int) -> dict:
    """Rank ``rank``'s batch at ``step``; rank 1 has no users at step 1."""
    gen = torch.Generator().manual_seed(100 * step + rank)
    n = 0 if (step, rank) == (1, 1) else 3
    return dict(
        users=torch.randint(0, USERS, (n,), generator=gen),
        history=torch.randint(0, ITEMS, (n, 2), generator=gen),
        target=torch.randint(0, ITEMS, (n,), generator=gen),
        multi=csr([torch.randint(0, ITEMS, (2,), generator=gen).tolist() for _ in range(n)]),
    )


def stand_in_loss(users, items, backbone, scorer, b: dict) -> torch.Tensor:
    """Lookups -> a linear 'backbone' -> scorer CE + multinomial NLL (sum over rows / 4)."""
    hidden = backbone(users(b["users"]) + items(b["history"]).mean(dim=1))
    ce = scorer.cross_entropy(hidden, b["target"])
    nll = scorer.multinomial_nll(hidden, *b["multi"])
    return (ce.sum() + nll.sum()) / 4


def build(table_cls):
    users = table_cls(USERS, DIM, seed=1, std=0.5)
    items = table_cls(ITEMS, DIM, seed=2, std=0.5)
    torch.manual_seed(0)
    backbone = nn.Linear(DIM, DIM)
    table_opt = RowWiseAdagrad([users.weight, items.weight], lr=0.2)
    backbone_opt = torch.optim.SGD(backbone.parameters(), lr=0.2)
    return users, items, backbone, table_opt, backbone_opt


def _train_two_ranks(rank: int, world_size: int) -> dict:
    users, items, backbone, table_opt, backbone_opt = build(PartitionedTable)
    scorer = ItemParallelScorer(items)
    losses = []
    for step in range(STEPS):
        loss = stand_in_loss(users, items, backbone, scorer, batch(step, rank))
        loss.backward()
        for p in backbone.parameters():  # what DeepSpeed does to backbone gradients
            dist.all_reduce(p.grad)
            p.grad /= world_size
        table_opt.step()
        backbone_opt.step()
        table_opt.zero_grad()
        backbone_opt.zero_grad()
        losses.append(loss.item())
    return dict(
        users=(users.weight.detach(), table_opt.state[users.weight]["sum"]),
        items=(items.weight.detach(), table_opt.state[items.weight]["sum"]),
        backbone=backbone.state_dict(),
        losses=losses,
    )


@pytest.mark.distributed
def test_partitioned_training_matches_dense_single_process():
    ranks = run_ranks_serialized(_train_two_ranks, 2)
    users, items, backbone, table_opt, backbone_opt = build(DenseTable)
    scorer = DenseScorer(items)
    for step in range(STEPS):
        per_rank = [stand_in_loss(users, items, backbone, scorer, batch(step, r)) for r in range(2)]
        (sum(per_rank) / 2).backward()
        table_opt.step()
        backbone_opt.step()
        table_opt.zero_grad()
        backbone_opt.zero_grad()
        for r in range(2):
            assert abs(ranks[r]["losses"][step] - per_rank[r].item()) < 1e-5
    for name, table in (("users", users), ("items", items)):
        weight = torch.cat([r[name][0] for r in ranks])
        row_sum = torch.cat([r[name][1] for r in ranks])
        torch.testing.assert_close(weight, table.weight.detach())
        torch.testing.assert_close(row_sum, table_opt.state[table.weight]["sum"])
    for r in ranks:
        for key, value in backbone.state_dict().items():
            torch.testing.assert_close(r["backbone"][key], value)
    # the steps did train: the user table moved away from its initial value
    assert not torch.equal(users.weight, DenseTable(USERS, DIM, seed=1, std=0.5).weight)
