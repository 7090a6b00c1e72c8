"""Sparse row-wise Adagrad for the ID tables (kept out of DeepSpeed).

Per row i with gradient g_i in R^dim (FBGEMM / TorchRec ``EXACT_ROWWISE_ADAGRAD``)::

    g_i   <- g_i + weight_decay * w_i
    sum_i <- sum_i + mean(g_i ** 2)            one fp32 accumulator per row
    w_i   <- w_i - lr * g_i / (sqrt(sum_i) + eps)

Only rows that received a gradient are touched; every other row (weight and accumulator) stays
bit-identical. A row with no gradient would get a zero Adagrad update anyway, so this is exactly
dense row-wise Adagrad, not an approximation (unlike lazy Adam, whose dense form keeps moving rows
with momentum). Why this optimizer: docs/distributed.md.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

import torch
from torch import Tensor


def touched_rows(grad: Tensor) -> tuple[Tensor | None, Tensor]:
    """Split a table gradient into (rows, row_grads).

    grad: sparse COO [R, dim] with one sparse dim (what lookups produce; may be uncoalesced, as
    after summing two sparse grads) -> (rows [m] sorted distinct, values [m, dim]); or dense
    [R, dim] (tied item head, or dense + sparse) -> (None meaning all rows, grad).
    """
    if not grad.is_sparse:
        return None, grad
    if grad.sparse_dim() != 1:
        raise ValueError(f"row-wise optimizer needs sparse_dim == 1 grads, got {grad.sparse_dim()}")
    grad = grad.coalesce()
    return grad.indices()[0], grad.values()


@torch.no_grad()
def rowwise_adagrad_update(
    weight: Tensor,
    row_sum: Tensor,
    rows: Tensor | None,
    grad_rows: Tensor,
    *,
    lr: float,
    eps: float,
    weight_decay: float,
) -> None:
    """In place: weight [R, dim], row_sum [R]; update ``rows`` [m] (None = all) with grad [m, dim]."""
    # All rows: work on the tensors themselves (no copy of a possibly multi-GB shard).
    # Some rows: work on gathered copies and scatter them back.
    w = weight if rows is None else weight.index_select(0, rows)
    s = row_sum if rows is None else row_sum.index_select(0, rows)
    g = grad_rows.to(torch.float32)
    if weight_decay:
        g = g + weight_decay * w
    s.add_(g.square().mean(dim=1))
    w.addcdiv_(g, s.sqrt().add_(eps).unsqueeze(1), value=-lr)
    if rows is not None:
        weight.index_copy_(0, rows, w)
        row_sum.index_copy_(0, rows, s)


class TableOptimizer(StrEnum):
    """``tables.optimizer``: the ID tables' optimizer (only this one is implemented)."""

    rowwise_adagrad = "rowwise_adagrad"


class RowWiseAdagrad(torch.optim.Optimizer):
    """Row-wise Adagrad over 2-D fp32 table weights (local shards or whole dense tables).

    Accepts ``.grad`` sparse COO, dense, or their sum (autograd makes that dense). State per
    param: ``sum`` fp32 [rows], created eagerly so a checkpoint can be loaded before any step.
    A ``torch.optim.Optimizer``, so LR schedulers work on its param groups.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float = 0.01,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ):
        if lr < 0 or eps <= 0 or weight_decay < 0:
            raise ValueError(f"bad hyper-parameters lr={lr} eps={eps} weight_decay={weight_decay}")
        super().__init__(params, dict(lr=lr, eps=eps, weight_decay=weight_decay))
        for group in self.param_groups:
            for p in group["params"]:
                if p.dim() != 2:
                    raise ValueError(f"row-wise optimizer needs 2-D table weights, got {p.shape}")
                self.state[p]["sum"] = torch.zeros(p.shape[0], dtype=torch.float32, device=p.device)

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                rows, grad_rows = touched_rows(p.grad)
                rowwise_adagrad_update(
                    p,
                    self.state[p]["sum"],
                    rows,
                    grad_rows,
                    lr=group["lr"],
                    eps=group["eps"],
                    weight_decay=group["weight_decay"],
                )
        return loss


__all__ = ["RowWiseAdagrad", "rowwise_adagrad_update", "touched_rows"]
