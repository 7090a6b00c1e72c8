"""Collective helpers shared by the partitioned tables, the item-parallel scorer and the top-K merge.

Only collectives that both gloo and NCCL implement are used: ``all_to_all_single`` (uneven splits
given as Python lists), ``all_gather_single`` (equal sizes: callers pad to the maximum),
``reduce_scatter_single`` and ``all_reduce``. Split sizes and counts travel as int64 tensors on the
data's device (NCCL needs device tensors) and come back to the host with one ``tolist()``.

Without an initialised process group every helper degenerates to the local operation, so the same
code runs in a plain single-process job.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from cllm4rec_dist.distributed.env import Group, world


def all_to_all_rows(
    x: Tensor, send_counts: list[int], recv_counts: list[int], group: Group = None
) -> Tensor:
    """Send ``x[sum(send_counts[:r]) : ...]`` to rank r; receive ``recv_counts[r]`` rows from r.

    x: [sum(send_counts), *rest] -> [sum(recv_counts), *rest], rows grouped by source rank.
    """
    if len(send_counts) == 1:
        return x.clone()
    out = x.new_empty((sum(recv_counts), *x.shape[1:]))
    dist.all_to_all_single(out, x.contiguous(), recv_counts, send_counts, group=group)
    return out


def exchange_counts(send: Tensor, group: Group = None) -> Tensor:
    """send: int64 [W, *c] (what this rank sends to each rank) -> [W, *c] received from each rank."""
    if send.shape[0] == 1:
        return send.clone()
    out = torch.empty_like(send)
    dist.all_to_all_single(out, send.contiguous(), group=group)
    return out


def all_gather_rows(x: Tensor, group: Group = None) -> Tensor:
    """Equal-size gather. x: [n, *rest] on every rank -> [W * n, *rest], blocks ordered by rank."""
    _, ws = world(group)
    if ws == 1:
        return x.clone()
    out = x.new_empty((ws * x.shape[0], *x.shape[1:]))
    dist.all_gather_single(out, x.contiguous(), group=group)
    return out


def gather_sizes(sizes: list[int], device: torch.device, group: Group = None) -> Tensor:
    """Each rank's small list of sizes -> int64 [W, len(sizes)] (row r = rank r's sizes), on host."""
    local = torch.tensor([sizes], dtype=torch.int64, device=device)
    return all_gather_rows(local, group).cpu()


def pad_rows(x: Tensor, rows: int, value: float | int = 0) -> Tensor:
    """x: [n, *rest] -> [rows, *rest] (rows >= n), new rows filled with ``value``."""
    if x.shape[0] == rows:
        return x
    out = x.new_full((rows, *x.shape[1:]), value)
    out[: x.shape[0]] = x
    return out


def all_gather_padded(x: Tensor, max_rows: int, value: float | int, group: Group = None) -> Tensor:
    """Uneven gather by padding. x: [n <= max_rows, *rest] -> [W * max_rows, *rest].

    ``max_rows`` must be the same on every rank (take it from :func:`gather_sizes`); rank r's rows
    sit at ``[r * max_rows, r * max_rows + n_r)``, the rest is ``value``.
    """
    return all_gather_rows(pad_rows(x, max_rows, value), group)


def all_reduce(x: Tensor, op: dist.ReduceOp.RedOpType, group: Group = None) -> Tensor:
    """In-place all_reduce of ``x`` (a no-op on one rank); returns ``x``."""
    if world(group)[1] > 1:
        dist.all_reduce(x, op=op, group=group)
    return x


def reduce_scatter_rows(x: Tensor, group: Group = None) -> Tensor:
    """Sum over ranks, then split by rank. x: [W * m, *rest] -> this rank's [m, *rest] block."""
    _, ws = world(group)
    if ws == 1:
        return x
    out = x.new_empty((x.shape[0] // ws, *x.shape[1:]))
    dist.reduce_scatter_single(out, x.contiguous(), op=dist.ReduceOp.SUM, group=group)
    return out
