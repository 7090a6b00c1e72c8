"""RowWiseAdagrad == a per-row loop reference; untouched rows stay bit-identical."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from cllm4rec_dist.distributed.rowwise_optim import RowWiseAdagrad
from cllm4rec_dist.model.tables import DenseTable


def reference_step(weight, row_sum, grad, touched, lr, eps, weight_decay):
    """Textbook per-row loop over the rows in ``touched`` (dense grad [R, dim])."""
    weight, row_sum = weight.clone(), row_sum.clone()
    for i in touched:
        g = grad[i] + weight_decay * weight[i]
        row_sum[i] += (g * g).mean()
        weight[i] -= lr * g / (math.sqrt(row_sum[i]) + eps)
    return weight, row_sum


def _sparse_grad_step(table, opt, ids, up):
    (F.embedding(ids, table.weight, sparse=True) * up).sum().backward()
    opt.step()


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_sparse_dense_and_mixed_grads_match_reference(weight_decay):
    gen = torch.Generator().manual_seed(0)
    table = DenseTable(10, 3, seed=2, std=1.0)
    opt = RowWiseAdagrad(table.parameters(), lr=0.3, eps=1e-6, weight_decay=weight_decay)
    w, s = table.weight.detach().clone(), torch.zeros(10)
    kw = dict(lr=0.3, eps=1e-6, weight_decay=weight_decay)

    # 1) sparse, uncoalesced (two lookups accumulate into one sparse grad), duplicate ids
    ids_a, ids_b = torch.tensor([1, 4, 4]), torch.tensor([4, 7])
    up_a, up_b = torch.randn(3, 3, generator=gen), torch.randn(2, 3, generator=gen)
    (F.embedding(ids_a, table.weight, sparse=True) * up_a).sum().backward()
    (F.embedding(ids_b, table.weight, sparse=True) * up_b).sum().backward()
    assert table.weight.grad.is_sparse
    dense_grad = torch.zeros(10, 3).index_add(0, ids_a, up_a).index_add(0, ids_b, up_b)
    before = table.weight.detach().clone()
    opt.step()
    w, s = reference_step(w, s, dense_grad, [1, 4, 7], **kw)
    torch.testing.assert_close(table.weight.detach(), w)
    torch.testing.assert_close(opt.state[table.weight]["sum"], s)
    untouched = [0, 2, 3, 5, 6, 8, 9]
    assert torch.equal(table.weight.detach()[untouched], before[untouched])
    assert torch.equal(opt.state[table.weight]["sum"][untouched], torch.zeros(7))

    # 2) dense grad (DenseTable's own forward): every row is updated
    opt.zero_grad()
    up = torch.randn(2, 3, generator=gen)
    ids = torch.tensor([0, 9])
    (table(ids) * up).sum().backward()
    assert not table.weight.grad.is_sparse
    opt.step()
    w, s = reference_step(w, s, torch.zeros(10, 3).index_add(0, ids, up), range(10), **kw)
    torch.testing.assert_close(table.weight.detach(), w)
    torch.testing.assert_close(opt.state[table.weight]["sum"], s)

    # 3) sparse lookup + dense head gradient on the same weight (autograd sums to dense)
    opt.zero_grad()
    head = torch.randn(3, generator=gen)
    (F.embedding(ids_a, table.weight, sparse=True) * up_a).sum().backward()
    (table.weight @ head).sum().backward()
    opt.step()
    grad = torch.zeros(10, 3).index_add(0, ids_a, up_a) + head
    w, s = reference_step(w, s, grad, range(10), **kw)
    torch.testing.assert_close(table.weight.detach(), w)


def test_state_dict_round_trip_and_scheduled_lr():
    gen = torch.Generator().manual_seed(1)
    a, b = DenseTable(6, 2, seed=0, std=1.0), DenseTable(6, 2, seed=0, std=1.0)
    opt_a = RowWiseAdagrad(a.parameters(), lr=0.5)
    ids, up = torch.tensor([0, 3]), torch.randn(2, 2, generator=gen)
    _sparse_grad_step(a, opt_a, ids, up)
    opt_b = RowWiseAdagrad(b.parameters(), lr=0.5)
    # deepcopy: as if read from disk (load_state_dict keeps the given tensors, no copy)
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))
    with torch.no_grad():
        b.weight.copy_(a.weight)
    for opt in (opt_a, opt_b):
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.1)
        assert opt.param_groups[0]["lr"] == pytest.approx(0.05)
        del sched
    for table, opt in ((a, opt_a), (b, opt_b)):
        opt.zero_grad()
        assert table.weight.grad is None
        _sparse_grad_step(table, opt, ids, up)
    assert torch.equal(a.weight, b.weight)
    assert torch.equal(opt_a.state[a.weight]["sum"], opt_b.state[b.weight]["sum"])
    # the second step used the scheduled lr 0.05
    s1 = up.square().mean(1)
    w1 = (
        DenseTable(6, 2, seed=0, std=1.0).weight.detach()[ids]
        - 0.5 * up / (s1.sqrt() + 1e-8)[:, None]
    )
    expected = w1 - 0.05 * up / ((2 * s1).sqrt() + 1e-8)[:, None]
    torch.testing.assert_close(a.weight.detach()[ids], expected)


def test_rejects_non_table_params():
    with pytest.raises(ValueError, match="2-D"):
        RowWiseAdagrad([torch.nn.Parameter(torch.zeros(3))])
