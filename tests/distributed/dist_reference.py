"""Plain single-process references for the sharded ops (dense logits over all items)."""

from __future__ import annotations

import io

import torch
import torch.nn.functional as F
from torch import Tensor

from cllm4rec_dist.ops.topk import csr_rows
from cllm4rec_dist.testing.multiprocess import run_ranks


def dense_cross_entropy(hidden: Tensor, items: Tensor, targets: Tensor) -> Tensor:
    """hidden [N, H], items [I, H], targets [N] -> [N] = -log softmax(hidden @ items.T)[target]."""
    return F.cross_entropy(hidden @ items.T, targets, reduction="none")


def dense_multinomial_nll(
    hidden: Tensor, items: Tensor, offsets: Tensor, targets: Tensor
) -> Tensor:
    """hidden [B, H], items [I, H], CSR targets -> [B] = -sum_{j in targets(b)} log softmax_bj."""
    logp = torch.log_softmax(hidden @ items.T, dim=1)
    rows = csr_rows(offsets)
    return torch.zeros(hidden.shape[0], dtype=logp.dtype).index_add(0, rows, -logp[rows, targets])


def csr(lists: list[list[int]]) -> tuple[Tensor, Tensor]:
    """Python lists of item ids -> (offsets [len+1], items [nnz]) int64."""
    counts = torch.tensor([len(x) for x in lists], dtype=torch.int64)
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(counts, 0)])
    items = torch.tensor([i for x in lists for i in x], dtype=torch.int64)
    return offsets, items


def run_ranks_serialized(fn, world_size: int = 2) -> list:
    """``run_ranks`` made safe for tests that also compute in the parent process.

    - Each rank first sets one intra-op thread: ranks are forked, and a child forked from a parent
      that already ran an OpenMP parallel region hangs in its first parallel region otherwise.
    - Results travel as ``torch.save`` bytes: tensors put on a multiprocessing queue are shared
      through file descriptors once ``torch.multiprocessing`` is imported, and the rank has
      exited by the time the parent unpickles them (FileNotFoundError).
    """

    def rank_fn(rank: int, ws: int) -> bytes:
        torch.set_num_threads(1)
        buf = io.BytesIO()
        torch.save(fn(rank, ws), buf)
        return buf.getvalue()

    return [torch.load(io.BytesIO(b), weights_only=False) for b in run_ranks(rank_fn, world_size)]


class DenseScorer:
    """Single-process item scorer over a whole item table (the reference for the sharded one)."""

    def __init__(self, table):
        self.table = table

    def cross_entropy(self, hidden: Tensor, targets: Tensor) -> Tensor:
        return dense_cross_entropy(hidden, self.table.weight, targets)

    def multinomial_nll(self, hidden: Tensor, offsets: Tensor, targets: Tensor) -> Tensor:
        return dense_multinomial_nll(hidden, self.table.weight, offsets, targets)
