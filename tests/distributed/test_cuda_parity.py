"""CUDA parity: the partitioned table, its row-wise optimizer and the item-parallel head on the GPU
== the dense single-process references on the CPU.

One rank under a one-rank NCCL process group (what the trainer has once DeepSpeed started): the
GPU check machine has one GPU, and NCCL refuses two ranks on one device, so the 2-rank paths stay
covered by the gloo tests beside this file. Skipped without CUDA; ``CLLM4REC_PARITY_DEVICE=cpu``
runs the same checks on the CPU under gloo (the GPU check's dry run, bench/gpu/gpu_check.py).
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
from helpers import csr

from cllm4rec_dist.distributed import ItemParallelScorer, PartitionedTable, RowWiseAdagrad
from cllm4rec_dist.model.tables import DenseTable
from cllm4rec_dist.ops.reference import (
    cross_entropy_reference,
    masked_topk_reference,
    multinomial_nll_reference,
)
from cllm4rec_dist.ops.topk import masked_topk

DEVICE = os.environ.get("CLLM4REC_PARITY_DEVICE", "cuda")
# GPU sizes reach the tiling of the top-K kernel; the CPU smoke run keeps the reference cheap.
BIG = DEVICE == "cuda"

pytestmark = pytest.mark.skipif(
    DEVICE == "cuda" and not torch.cuda.is_available(),
    reason="needs CUDA (bench/gpu/gpu_check.py runs it on the GPU machine)",
)


@pytest.fixture(scope="module", autouse=True)
def one_rank_group():
    """A one-rank process group on the device's backend, torn down after the module."""
    if dist.is_initialized():
        yield
        return
    backend = "nccl" if DEVICE == "cuda" else "gloo"
    if DEVICE == "cuda":
        torch.cuda.set_device(0)
    dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize(
    ("num_rows", "dim", "ids"),
    [(7, 3, [[0, 6, 6], [3, 3, 0]]), (10_000, 64, None), (1, 4, [0, 0])],
)
def test_partitioned_table_matches_dense(num_rows, dim, ids):
    ids = (
        torch.randint(0, num_rows, (512, 20), generator=_gen(1))
        if ids is None
        else torch.tensor(ids)
    )
    table = PartitionedTable(num_rows, dim, seed=3, std=1.0).to(DEVICE)
    dense = DenseTable(num_rows, dim, seed=3, std=1.0)
    up = torch.randn(*ids.shape, dim, generator=_gen(2))
    rows = table(ids.to(DEVICE))
    torch.testing.assert_close(rows.cpu(), dense(ids), rtol=0, atol=0)
    (rows * up.to(DEVICE)).sum().backward()
    (dense(ids) * up).sum().backward()
    grad = table.weight.grad
    assert grad.is_sparse and grad.device.type == torch.device(DEVICE).type
    assert grad._nnz() == ids.unique().numel()
    torch.testing.assert_close(grad.to_dense().cpu(), dense.weight.grad)

    ours = RowWiseAdagrad([table.weight], lr=0.1)
    ref = RowWiseAdagrad([dense.weight], lr=0.1)
    ours.step()
    ref.step()
    torch.testing.assert_close(table.weight.detach().cpu(), dense.weight.detach())


def _scorer_data(num_items: int, dim: int, users: int, seed: int) -> dict:
    gen = _gen(seed)
    targets = [
        torch.randint(0, num_items, (int(c),), generator=gen).tolist()
        for c in torch.randint(0, 30, (users,), generator=gen)
    ]
    return dict(
        hidden=torch.randn(users, dim, generator=gen),
        targets=torch.randint(0, num_items, (users,), generator=gen),
        multi=csr(targets),
        coef=torch.randn(users, generator=gen),
    )


def _close(got: torch.Tensor, want: torch.Tensor, what: str, rtol: float = 1e-4) -> None:
    """fp32 on the device against the fp64 reference: relative to the largest entry, because the
    summation order (chunks, CUDA reductions) differs."""
    scale = float(want.abs().max()) if want.numel() else 1.0
    torch.testing.assert_close(
        got.double().cpu(),
        want,
        rtol=rtol,
        atol=rtol * scale / 10,
        msg=lambda m: f"{what}: {m}",
    )


@pytest.mark.parametrize("hidden_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    ("num_items", "chunk"), [(5_000 if BIG else 2_000, 1_024), (20_011 if BIG else 3_001, 16_384)]
)
def test_item_parallel_losses_match_dense(num_items, chunk, hidden_dtype):
    dim, users = 64, 96
    d = _scorer_data(num_items, dim, users, seed=num_items)
    table = PartitionedTable(num_items, dim, seed=5, std=0.5).to(DEVICE)
    scorer = ItemParallelScorer(table, chunk_items=chunk)
    items = DenseTable(num_items, dim, seed=5, std=0.5).weight.detach().double().requires_grad_()
    # The head scores in fp32 whatever the backbone's dtype: the reference sees the same
    # (rounded) hidden rows, in fp64.
    hidden_in = d["hidden"].to(hidden_dtype)
    coef = d["coef"].double()
    for name in ("ce", "nll"):
        hidden = hidden_in.to(DEVICE, copy=True).requires_grad_()
        ref_hidden = hidden_in.double().requires_grad_()
        if name == "ce":
            loss = scorer.cross_entropy(hidden, d["targets"].to(DEVICE))
            ref = cross_entropy_reference(ref_hidden, items, d["targets"])
        else:
            offsets, flat = d["multi"]
            loss = scorer.multinomial_nll(hidden, offsets.to(DEVICE), flat.to(DEVICE))
            ref = multinomial_nll_reference(ref_hidden, items, offsets, flat)
        (loss * coef.to(DEVICE, loss.dtype)).sum().backward()
        (ref * coef).sum().backward()
        assert hidden.grad.dtype == hidden_dtype
        _close(loss.detach(), ref.detach(), f"{name} loss")
        # A bf16 input gets a bf16 gradient: rounded to 8 mantissa bits.
        rtol = 1e-4 if hidden_dtype == torch.float32 else 8e-3
        _close(hidden.grad.float(), ref_hidden.grad, f"{name} d hidden", rtol)
        _close(table.weight.grad, items.grad, f"{name} d items")
        table.weight.grad, items.grad = None, None


def _exclusions(users: int, num_items: int, per_user: int, seed: int):
    gen = _gen(seed)
    lists = [
        torch.randperm(num_items, generator=gen)[: int(c)].tolist()
        for c in torch.randint(0, per_user + 1, (users,), generator=gen)
    ]
    return csr(lists)


@pytest.mark.parametrize(
    ("num_items", "k"), [(9, 12), (50_000 if BIG else 5_000, 20), (200_003 if BIG else 8_009, 100)]
)
def test_topk_matches_reference_ties_included(num_items, k):
    """Integer-valued vectors: scores are exact in fp32 and ties are frequent, so the indices
    must equal the reference's exactly (ties: lower item first)."""
    users, dim = 300, 8
    gen = _gen(num_items)
    q = torch.randint(-2, 3, (users, dim), generator=gen).float()
    items = torch.randint(-2, 3, (num_items, dim), generator=gen).float()
    offsets, excl = _exclusions(users, num_items, 50, seed=k)
    want = masked_topk_reference(q, items, k, offsets, excl)

    got = masked_topk(q.to(DEVICE), items.to(DEVICE), k, offsets.to(DEVICE), excl.to(DEVICE))
    assert torch.equal(got[0].cpu(), want[0]) and torch.equal(got[1].cpu(), want[1])

    table = PartitionedTable(num_items, dim, std=0.0).to(DEVICE)
    with torch.no_grad():
        table.weight.copy_(items.to(DEVICE))
    got = ItemParallelScorer(table).topk(q.to(DEVICE), k, offsets.to(DEVICE), excl.to(DEVICE))
    assert torch.equal(got[0].cpu(), want[0]) and torch.equal(got[1].cpu(), want[1])


def test_one_rank_collectives_on_device_backend():
    """The collectives the distributed code calls, on this backend at world size 1."""
    x = torch.arange(12, dtype=torch.float32, device=DEVICE).view(6, 2)
    out = torch.empty_like(x)
    dist.all_to_all_single(out, x, [6], [6])
    assert torch.equal(out, x)
    gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
    gather(out, x)
    assert torch.equal(out, x)
    y = x.clone()
    dist.all_reduce(y)
    assert torch.equal(y, x)
