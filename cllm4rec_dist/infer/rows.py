"""Fit a few rows of one ID table by gradient steps on a loss, everything else frozen.

The one mechanism behind cold-start items (content LM on their text, ``cold_items.py``) and
fold-in users (recommendation loss on their history, ``fold_in.py``). Only the named rows move:
the backbone, the other tables and the table's other rows keep their values exactly (tested).
Adam on the rows, because the steps are few and the loss scales differ between the two uses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn


@contextmanager
def frozen_except(model: nn.Module, table: nn.Module) -> Iterator[None]:
    """Inside: no parameter of ``model`` requires grad but ``table.weight``, and the mutual
    regularization is off (``lambda_v = 0``: it would pull the fitted rows towards the other
    copy's rows of the same ids, which are as untrained as these). Restores both on exit."""
    saved = {p: p.requires_grad for p in model.parameters()}
    lambda_v = model.lambda_v
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        table.weight.requires_grad_(True)
        model.lambda_v = 0.0
        yield
    finally:
        for p, flag in saved.items():
            p.requires_grad_(flag)
        model.lambda_v = lambda_v


@torch.no_grad()
def start_at_mean(table: nn.Module, rows: Tensor) -> None:
    """Set ``table.weight[rows]`` to the mean of the table's other rows: the start of a new
    row, inside the trained ones' cloud rather than at a random point of its init."""
    weight = table.weight
    others = torch.ones(weight.shape[0], dtype=torch.bool)
    others[rows] = False
    weight[rows] = weight[others].mean(0)


def fit_rows(
    model: nn.Module,
    table: nn.Module,
    rows: Tensor,
    loss_of: Callable[[int], Tensor],
    *,
    steps: int,
    lr: float,
    on_step: Callable[[int], None] | None = None,
) -> list[float]:
    """Update ``table.weight[rows]`` (unique row ids) by ``steps`` Adam steps on ``loss_of(step)``,
    a closure that builds a batch touching those rows and returns the model's loss on it.
    ``on_step(n)`` runs after step n (1-based) with the rows written, e.g. to evaluate them.

    Returns the loss of each step. Rows outside ``rows`` and every other parameter are left as
    they were.
    """
    if rows.numel() != torch.unique(rows).numel():
        raise ValueError("fit_rows: rows must be unique")
    weight = table.weight
    fitted = nn.Parameter(weight.detach()[rows].clone())
    optim = torch.optim.Adam([fitted], lr=lr)
    losses = []
    with frozen_except(model, table):
        for step in range(steps):
            weight.grad = None
            loss = loss_of(step)
            loss.backward()
            grad = weight.grad
            # A dense table's gradient is dense, a partitioned one's a sparse COO of its shard.
            grad = grad.to_dense() if grad.is_sparse else grad
            fitted.grad = grad[rows]
            optim.step()
            with torch.no_grad():
                weight[rows] = fitted
            losses.append(float(loss.detach()))
            if on_step is not None:
                on_step(step + 1)
        weight.grad = None
    return losses


__all__ = ["fit_rows", "frozen_except", "start_at_mean"]
