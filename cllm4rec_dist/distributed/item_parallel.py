"""Item-parallel scoring: softmax losses and exact top-K over an item table sharded by rows.

Data parallel + item sharding: every rank brings its own hidden rows (possibly none). The rows of
all ranks are gathered (padded to the largest batch), each rank scores them against its local item
shard only, and the softmax statistics are combined with two all_reduces::

    m_r   = max_s max_j l_rj                  (all_reduce MAX over shards s)
    lse_r = m_r + log sum_s sum_{j in s} exp(l_rj - m_r)   (all_reduce SUM)
    t_r   = sum_{j in targets(r)} l_rj         (all_reduce SUM; each shard adds its own targets)
    loss_r = |targets(r)| * lse_r - t_r

No rank ever holds logits over all items; a rank holds one [rows, chunk_items] block at a time.
Backward recomputes the blocks from the saved lse (see docs/distributed.md for the gradients).

``sampled_nll`` is the same reduction over a candidate set instead of all items (sampled softmax,
model/sampling.py): every rank derives the same global candidates from the gathered targets,
scores those in its shard, and its item gradient is sparse (candidate and target rows only).
Its [rows, local candidates] exponentials are small enough to keep from forward to backward
(132 MB per rank at 1 M users), so its backward neither recomputes the logits nor exponentiates
again: three products and six element-wise passes per logit instead of four and nine.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from cllm4rec_dist.distributed.comm import (
    all_gather_padded,
    all_reduce,
    all_to_all_rows,
    gather_sizes,
    reduce_scatter_rows,
)
from cllm4rec_dist.distributed.env import Group, world
from cllm4rec_dist.distributed.partitioned_table import PartitionedTable
from cllm4rec_dist.model.sampling import ItemSampler, Negatives, unique_pairs
from cllm4rec_dist.model.tables import check_ids
from cllm4rec_dist.ops.topk import NEG_INF, csr_rows, masked_topk, sorted_topk

# Item columns per logits block of the full softmax, at most (the memory planner models this
# bound). A GPU takes it whole: few kernel launches. A CPU takes cache-sized blocks of about
# CPU_BLOCK_ELEMENTS logits (1 MiB fp32), at least CPU_MIN_COLUMNS wide: at 128-1,024 rows x
# 12,101 items forward + backward run 1.3-1.5x faster than in 16,384-column blocks, and at 16
# rows the whole width stays best (bench/bench_item_head.py, docs/benchmarks.md).
CHUNK_ITEMS = 16384
CPU_BLOCK_ELEMENTS = 2**18
CPU_MIN_COLUMNS = 1024
# Logits per block of the sampled head's rows (4 Mi fp32 = 16 MiB: one cache-friendly product
# and its passes at a time).
BLOCK_ELEMENTS = 4 * 2**20


class _KeptBuffer:
    """The one fp32 buffer a scorer's sampled head keeps a step's exponentials in, from forward
    to backward, reused step after step: a fresh tensor of that size (over glibc's largest
    dynamic mmap threshold, 32 MiB) would be mapped and zero-faulted anew every step. A second
    loss taken before the first's backward gets a tensor of its own."""

    def __init__(self) -> None:
        self.data: Tensor | None = None
        self.busy = False

    def take(self, rows: int, cols: int, like: Tensor) -> Tensor:
        need = rows * cols
        if self.busy:
            return like.new_empty((rows, cols), dtype=torch.float32)
        if self.data is None or self.data.numel() < need or self.data.device != like.device:
            self.data = like.new_empty(max(need, 1), dtype=torch.float32)
        self.busy = True
        return self.data[:need].view(rows, cols)

    def give_back(self, kept: Tensor) -> None:
        if self.data is not None and kept.data_ptr() == self.data.data_ptr():
            self.busy = False


@dataclass
class _Gathered:
    """All ranks' rows, as seen by every rank.

    hidden [R = W * max_rows, H] fp32, rank r's rows at [r * max_rows, r * max_rows + n_r);
    pair_rows/pair_items [T]: (row in ``hidden``, global item) pairs of all ranks, padding removed;
    real [sum n_r]: the rows of ``hidden`` that are not padding, in order.
    """

    hidden: Tensor
    pair_rows: Tensor
    pair_items: Tensor
    max_rows: int
    own: slice
    real: Tensor


class ItemParallelScorer:
    """``ItemScorer`` over a row-partitioned item table (logits = hidden @ items.T, fp32).

    Every method is collective over the table's group: all ranks call it, in the same order,
    possibly with zero rows, and (for the losses) backpropagate through the result.
    ``chunk_items`` bounds the logits block per rank to [W * max rows, chunk_items]; on a CPU
    the block is narrower when there are many rows (:func:`block_columns`).
    """

    def __init__(
        self,
        table: PartitionedTable,
        group: Group = None,
        chunk_items: int = CHUNK_ITEMS,
        topk_user_chunk: int = 256,
        topk_item_chunk: int = 4096,
    ):
        self.table = table
        self.group = table.group if group is None else group
        self.rank, self.world_size = world(self.group)
        if self.world_size != table.world_size:
            raise ValueError("scorer group and table group differ in size")
        self.chunk_items = chunk_items
        self.topk_user_chunk, self.topk_item_chunk = topk_user_chunk, topk_item_chunk
        self.kept = _KeptBuffer()

    @property
    def num_items(self) -> int:
        return self.table.num_rows

    def block_columns(self, rows: int) -> int:
        return block_columns(rows, self.chunk_items, self.table.weight.device.type)

    def _gather(self, hidden: Tensor, pair_rows: Tensor, pair_items: Tensor) -> _Gathered:
        """Gather hidden [N, H] and (row, item) pairs [T] of every rank (see :class:`_Gathered`)."""
        n = hidden.shape[0]
        sizes = gather_sizes([n, pair_rows.numel()], hidden.device, self.group)
        max_rows, max_pairs = int(sizes[:, 0].max()), int(sizes[:, 1].max())
        own = slice(self.rank * max_rows, self.rank * max_rows + n)
        gathered = (
            all_gather_padded(hidden.detach().float(), max_rows, 0.0, self.group)
            if max_rows
            else hidden.new_zeros((0, hidden.shape[1]), dtype=torch.float32)
        )
        pairs = torch.stack([pair_rows + own.start, pair_items], dim=1).to(torch.int64)
        if max_pairs:
            pairs = all_gather_padded(pairs, max_pairs, -1, self.group)
            pairs = pairs[pairs[:, 0] >= 0]
        # Every rank checks the gathered items, so a bad id raises on all ranks at once.
        check_ids(pairs[:, 1], self.num_items, "item")
        real = torch.cat(
            [
                torch.arange(r * max_rows, r * max_rows + int(n_r))
                for r, n_r in enumerate(sizes[:, 0])
            ]
        ).to(gathered.device)
        return _Gathered(gathered, pairs[:, 0], pairs[:, 1], max_rows, own, real)

    def cross_entropy(self, hidden: Tensor, targets: Tensor) -> Tensor:
        """hidden [N, H], targets [N] global item ids -> loss [N] = lse - logit[target]."""
        rows = torch.arange(targets.numel(), device=hidden.device)
        return _ShardedNLL.apply(hidden, self.table.weight, self, rows, targets.reshape(-1))

    def multinomial_nll(
        self, hidden: Tensor, target_offsets: Tensor, target_items: Tensor
    ) -> Tensor:
        """hidden [B, H], targets CSR (offsets [B+1], items [nnz]) -> loss [B] =
        sum_{j in targets(b)} (lse_b - logit_bj). Repeated items count as often as listed."""
        if target_offsets.numel() != hidden.shape[0] + 1:
            raise ValueError(f"target_offsets must have {hidden.shape[0] + 1} entries")
        rows = csr_rows(target_offsets.to(hidden.device))
        return _ShardedNLL.apply(hidden, self.table.weight, self, rows, target_items)

    def sampled_nll(
        self, hidden: Tensor, pair_rows: Tensor, pair_items: Tensor, sampler: ItemSampler
    ) -> Tensor:
        """Sampled-softmax loss [N] of this rank's rows, targets as (row, item) pairs; the
        sampler sees the targets of every rank, so all ranks draw the same negatives."""
        return _ShardedSampledNLL.apply(
            hidden, self.table.weight, self, pair_rows.to(hidden.device), pair_items, sampler,
            torch.is_grad_enabled(),
        )  # fmt: skip

    @torch.no_grad()
    def topk(
        self, hidden: Tensor, k: int, exclude_offsets: Tensor, exclude_items: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Exact global top-k for this rank's rows: (scores [B, k], global items [B, k]).

        Each shard returns its local top-k (ties: lower item first, padded with (-inf, -1)) for
        every rank's rows; each rank then merges the W candidate lists of its own rows with a
        stable sort, which keeps ties in shard order, i.e. by item index.
        """
        n = hidden.shape[0]
        if exclude_offsets.numel() != n + 1:
            raise ValueError(f"exclude_offsets must have {n + 1} entries")
        g = self._gather(hidden, csr_rows(exclude_offsets.to(hidden.device)), exclude_items)
        lo, hi = self.table.row_range
        mine = (g.pair_items >= lo) & (g.pair_items < hi)
        # Only the real rows are ranked: a padding row is zero, every item ties at its K-th
        # score, and all of them became candidates (the last batch of an evaluation took 220 MB
        # more per rank at 200k users for that alone).
        position = torch.full((g.hidden.shape[0],), -1, dtype=torch.int64, device=g.real.device)
        position[g.real] = torch.arange(g.real.numel(), device=g.real.device)
        ex_rows, ex_items = position[g.pair_rows[mine]], g.pair_items[mine] - lo
        order = torch.argsort(ex_rows, stable=True)
        ex_rows, ex_items = ex_rows[order], ex_items[order]
        counts = torch.bincount(ex_rows, minlength=g.real.numel())
        ex_offsets = torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])
        real_scores, real_items = masked_topk(
            g.hidden[g.real],
            self.table.weight.detach(),
            k,
            ex_offsets,
            ex_items,
            index_offset=lo,
            user_chunk=self.topk_user_chunk,
            item_chunk=self.topk_item_chunk,
        )
        scores = real_scores.new_full((g.hidden.shape[0], k), NEG_INF)
        items = real_items.new_full((g.hidden.shape[0], k), -1)
        scores[g.real], items[g.real] = real_scores, real_items
        # Block r of the gathered rows belongs to rank r: send it there (equal splits).
        split = [g.max_rows] * self.world_size
        scores = all_to_all_rows(scores, split, split, self.group)
        items = all_to_all_rows(items, split, split, self.group)

        def own_candidates(x: Tensor) -> Tensor:  # [W * max_rows, k] -> [n, W * k], shard order
            return (
                x.view(self.world_size, g.max_rows, k)[:, :n]
                .permute(1, 0, 2)
                .reshape(n, self.world_size * k)
            )

        cand_s, cand_i = own_candidates(scores), own_candidates(items)
        top, top_i = sorted_topk(cand_s, cand_i, k)
        return top, torch.where(top == NEG_INF, -1, top_i)


def block_columns(rows: int, chunk_items: int, device: str) -> int:
    """Item columns of the full softmax's logits block for ``rows`` gathered rows on ``device``
    (a torch device type), at most ``chunk_items``."""
    if device != "cpu":
        return chunk_items
    return min(chunk_items, max(CPU_MIN_COLUMNS, CPU_BLOCK_ELEMENTS // max(rows, 1)))


def _local_stats(scorer: ItemParallelScorer, g: _Gathered, weight: Tensor) -> tuple[Tensor, Tensor]:
    """Online softmax over the local shard, chunked: (max [R], sum exp(l - max) [R])."""
    rows_all = g.hidden.shape[0]
    m = g.hidden.new_full((rows_all,), NEG_INF)
    s = g.hidden.new_zeros(rows_all)
    cols = scorer.block_columns(rows_all)
    for c0 in range(0, weight.shape[0], cols):
        block = g.hidden @ weight[c0 : c0 + cols].float().T
        m_new = torch.maximum(m, block.amax(dim=1))
        # In place: a fresh logits-sized tensor per pass costs its page faults (3x slower).
        s = s * torch.exp(m - m_new) + block.sub_(m_new.unsqueeze(1)).exp_().sum(dim=1)
        m = m_new
    return m, s


def _local_targets(scorer: ItemParallelScorer, g: _Gathered) -> tuple[Tensor, Tensor]:
    """The gathered (row, item) target pairs whose item lives on this shard: (rows, local items)."""
    lo, hi = scorer.table.row_range
    mine = (g.pair_items >= lo) & (g.pair_items < hi)
    return g.pair_rows[mine], g.pair_items[mine] - lo


class _ShardedNLL(torch.autograd.Function):
    """hidden [N, H], local item shard [n, H], target pairs -> per-row fp32 loss [N] (module doc).

    Saves only the gathered hidden rows, the global lse [R] and the target counts [R]; backward
    recomputes the logits block by block.
    """

    @staticmethod
    def forward(ctx, hidden, weight, scorer, pair_rows, pair_items):  # type: ignore[override]
        g = scorer._gather(hidden, pair_rows, pair_items)
        rows_all = g.hidden.shape[0]
        m_local, s_local = _local_stats(scorer, g, weight)
        t_rows, t_items = _local_targets(scorer, g)
        target_logit = g.hidden.new_zeros(rows_all)
        target_logit.index_add_(0, t_rows, (g.hidden[t_rows] * weight[t_items].float()).sum(1))
        m = all_reduce(m_local.clone(), dist.ReduceOp.MAX, scorer.group)
        # An empty shard has m_local = -inf and s_local = 0: its rescaled sum is exactly 0.
        scaled = s_local * torch.exp(m_local - m)
        stats = all_reduce(torch.stack([scaled, target_logit]), dist.ReduceOp.SUM, scorer.group)
        lse = m + torch.log(stats[0])
        count = torch.bincount(g.pair_rows, minlength=rows_all).to(lse.dtype)
        loss = count * lse - stats[1]
        ctx.save_for_backward(weight)
        ctx.scorer, ctx.g, ctx.lse, ctx.count = scorer, g, lse, count
        ctx.hidden_shape, ctx.hidden_dtype = hidden.shape, hidden.dtype
        return loss[g.own]

    @staticmethod
    def backward(ctx, grad_loss):  # type: ignore[override]
        (weight,) = ctx.saved_tensors
        scorer, g = ctx.scorer, ctx.g
        rows_all, dim = g.hidden.shape
        # dloss_r/dl_rj = count_r * softmax_rj - [j in targets(r)].
        grad_all = _gather_upstream(grad_loss, g, scorer.group)
        coef = (grad_all * ctx.count).unsqueeze(1)
        grad_hidden = g.hidden.new_zeros(rows_all, dim)
        # Every row is written by exactly one chunk below: no zero fill (pages of a big shard).
        grad_weight = torch.empty_like(weight, dtype=torch.float32)
        cols = scorer.block_columns(rows_all)
        for c0 in range(0, weight.shape[0], cols):
            w = weight[c0 : c0 + cols].float()
            p = (g.hidden @ w.T).sub_(ctx.lse.unsqueeze(1)).exp_().mul_(coef)
            grad_hidden.addmm_(p, w)
            torch.mm(p.T, g.hidden, out=grad_weight[c0 : c0 + w.shape[0]])
        t_rows, t_items = _local_targets(scorer, g)
        t_grad = grad_all[t_rows].unsqueeze(1)
        grad_hidden.index_add_(0, t_rows, -t_grad * weight[t_items].float())
        grad_weight.index_add_(0, t_items, -t_grad * g.hidden[t_rows])
        # The item rows' gradient is averaged over ranks, the table convention; the hidden rows'
        # is summed over shards and sent to their owners (_input_grads).
        grad_weight = grad_weight.div_(scorer.world_size).to(weight.dtype)
        return (*_input_grads(ctx, grad_hidden, grad_weight), None, None, None)


def _gather_upstream(grad_loss: Tensor, g: _Gathered, group: Group) -> Tensor:
    """Each rank needs the upstream gradient of every gathered row: gather it like the rows."""
    if g.max_rows:
        return all_gather_padded(grad_loss.float(), g.max_rows, 0.0, group)
    return g.hidden.new_zeros(0)


def _input_grads(ctx, grad_hidden: Tensor, grad_weight: Tensor) -> tuple:
    """(hidden, weight) gradients of a sharded loss's backward. Row r's hidden gradient is the
    sum of every shard's part, delivered to the rank owning row r (not averaged: the caller's
    data parallelism averages backbone gradients). The collective runs whatever
    needs_input_grad says, so all ranks issue the same ones."""
    if ctx.g.max_rows:
        grad_hidden = reduce_scatter_rows(grad_hidden, ctx.scorer.group)[: ctx.hidden_shape[0]]
    grad_hidden = grad_hidden.reshape(ctx.hidden_shape).to(ctx.hidden_dtype)
    return (
        grad_hidden if ctx.needs_input_grad[0] else None,
        grad_weight if ctx.needs_input_grad[1] else None,
    )


class _ShardedSampledNLL(torch.autograd.Function):
    """hidden [N, H], local shard [n, H], target pairs, sampler -> per-row loss [N]: the
    ``sampled_nll_reference`` loss with the candidates and targets split by owning shard.

    Per gathered row r, with this shard's candidates c (logits L_rc - log(S q_c), accidental
    hits masked) and distinct targets t: local max and sum of exp over both, then the
    all_reduces of ``_ShardedNLL``. Backward: dloss/dL_rc = coef_r p_rc and dloss/dl_rt =
    coef_r p_rt - g_r (once per listed target), with coef_r = g_r |T(r)| and
    p = exp(logit - lse_r); the shard's item gradient is sparse COO over the rows it scored.
    """

    @staticmethod
    def forward(ctx, hidden, weight, scorer, pair_rows, pair_items, sampler, keep):  # type: ignore[override]
        g = scorer._gather(hidden, pair_rows, pair_items)
        negatives: Negatives = sampler.negatives(g.pair_items)
        lo, hi = scorer.table.row_range
        items = negatives.items.to(weight.device)
        mine = (items >= lo) & (items < hi)
        # Sorted, so the candidates equal to a target are one searchsorted range.
        cand, order = torch.sort(items[mine] - lo)
        correction = negatives.log_correction.to(weight.device)[mine][order]
        rows_all = g.hidden.shape[0]
        t_rows, t_items = _local_targets(scorer, g)
        u_rows, u_items = unique_pairs(t_rows, t_items, weight.shape[0])
        first = torch.searchsorted(cand, u_items)
        width = torch.searchsorted(cand, u_items, right=True) - first
        hit_rows = torch.repeat_interleave(u_rows, width)
        starts = torch.repeat_interleave(first - (torch.cumsum(width, 0) - width), width)
        hit_cols = starts + torch.arange(hit_rows.numel(), device=starts.device)
        # Per block of rows: the candidates' max and exp(logit - max), kept for backward (when
        # it will run) in the scorer's buffer, and their row sums.
        w_cand = weight[cand].float()
        kept = (
            scorer.kept.take(rows_all, cand.numel(), g.hidden)
            if keep
            else g.hidden.new_empty((min(rows_all, _block_rows(cand.numel())), cand.numel()))
        )
        m_cand = g.hidden.new_full((rows_all,), NEG_INF)
        s_cand = g.hidden.new_zeros(rows_all)
        for r0, r1, block in _candidate_blocks(
            g.hidden, w_cand, correction, hit_rows, hit_cols, kept, keep
        ):
            m_block = block.amax(dim=1)
            safe = torch.where(torch.isfinite(m_block), m_block, torch.zeros_like(m_block))
            s_cand[r0:r1] = block.sub_(safe.unsqueeze(1)).exp_().sum(dim=1)
            m_cand[r0:r1] = m_block
        u_logits = (g.hidden[u_rows] * weight[u_items].float()).sum(1)
        m_local = m_cand.scatter_reduce(0, u_rows, u_logits, reduce="amax")
        m = all_reduce(m_local.clone(), dist.ReduceOp.MAX, scorer.group)
        # A row with nothing in its denominator on any rank keeps m = -inf: shift by 0 there
        # (its sum is 0 and its loss is masked below).
        shift = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
        # m_cand <= shift wherever it is finite; exp(-inf) = 0 where the row had no candidate.
        s_local = s_cand * torch.exp(m_cand - shift)
        s_local = s_local.index_add(0, u_rows, torch.exp(u_logits - shift[u_rows]))
        t_logits = (g.hidden[t_rows] * weight[t_items].float()).sum(1)
        t_sum = g.hidden.new_zeros(rows_all).index_add_(0, t_rows, t_logits)
        stats = all_reduce(torch.stack([s_local, t_sum]), dist.ReduceOp.SUM, scorer.group)
        count = torch.bincount(g.pair_rows, minlength=rows_all).to(stats.dtype)
        has = count > 0
        lse = torch.where(has, shift + torch.log(stats[0]), torch.zeros_like(shift))
        loss = torch.where(has, count * lse - stats[1], torch.zeros_like(lse))
        ctx.save_for_backward(weight)
        ctx.scorer, ctx.g, ctx.lse, ctx.count = scorer, g, lse, count
        # softmax = kept x exp(m_cand - lse) per row; 0 where the row had no candidate here.
        ctx.kept, ctx.to_softmax = (
            kept,
            torch.where(torch.isfinite(m_cand), torch.exp(m_cand - lse), torch.zeros_like(lse)),
        )
        ctx.cand = cand
        ctx.targets, ctx.distinct = (t_rows, t_items), (u_rows, u_items)
        ctx.hidden_shape, ctx.hidden_dtype = hidden.shape, hidden.dtype
        return loss[g.own]

    @staticmethod
    def backward(ctx, grad_loss):  # type: ignore[override]
        (weight,) = ctx.saved_tensors
        scorer, g = ctx.scorer, ctx.g
        grad_all = _gather_upstream(grad_loss, g, scorer.group)
        coef = grad_all * ctx.count
        w_cand = weight[ctx.cand].float()
        grad_hidden = g.hidden.new_zeros(g.hidden.shape)
        grad_cand = g.hidden.new_zeros(w_cand.shape)
        # dloss/dL_rc = coef_r p_rc with p = kept x exp(m - lse): one in-place pass per block.
        scale = (ctx.to_softmax * coef).unsqueeze(1)
        step = _block_rows(w_cand.shape[0])
        for r0 in range(0, ctx.kept.shape[0] if w_cand.shape[0] else 0, step):
            r1 = min(r0 + step, ctx.kept.shape[0])
            p = ctx.kept[r0:r1].mul_(scale[r0:r1])
            torch.mm(p, w_cand, out=grad_hidden[r0:r1])
            grad_cand.addmm_(p.T, g.hidden[r0:r1])
        scorer.kept.give_back(ctx.kept)
        ctx.kept = None
        (t_rows, t_items), (u_rows, u_items) = ctx.targets, ctx.distinct
        w_u, w_t = weight[u_items].float(), weight[t_items].float()
        p_u = torch.exp((g.hidden[u_rows] * w_u).sum(1) - ctx.lse[u_rows]) * coef[u_rows]
        g_t = -grad_all[t_rows]
        grad_hidden.index_add_(0, u_rows, p_u.unsqueeze(1) * w_u)
        grad_hidden.index_add_(0, t_rows, g_t.unsqueeze(1) * w_t)
        # Sparse item gradient: one value row per scored row (candidates, distinct targets,
        # listed targets); the optimizer's coalesce sums repeats. Averaged over ranks, the
        # table convention.
        values = torch.cat(
            [
                grad_cand,
                p_u.unsqueeze(1) * g.hidden[u_rows],
                g_t.unsqueeze(1) * g.hidden[t_rows],
            ]
        )
        values = values.div_(scorer.world_size).to(weight.dtype)
        index = torch.cat([ctx.cand, u_items, t_items]).unsqueeze(0)
        grad_weight = torch.sparse_coo_tensor(index, values, weight.shape, check_invariants=False)
        return (*_input_grads(ctx, grad_hidden, grad_weight), None, None, None, None, None)


def _block_rows(n_cand: int) -> int:
    """Rows per block of the sampled head: at most ``BLOCK_ELEMENTS`` logits."""
    return max(1, BLOCK_ELEMENTS // max(n_cand, 1))


def _candidate_blocks(
    hidden: Tensor,
    w_cand: Tensor,
    correction: Tensor,
    hit_rows: Tensor,
    hit_cols: Tensor,
    out: Tensor,
    whole: bool,
):
    """Yields (r0, r1, [r1 - r0, S_local] corrected candidate logits) over blocks of rows, -inf
    where a candidate is one of the row's own targets (an accidental hit: the target is already
    in the denominator, exactly). ``hit_rows`` is sorted. A block holds at most
    ``BLOCK_ELEMENTS`` logits; it is rows [r0, r1) of ``out`` when ``whole`` (``out`` holds every
    row), else the first rows of ``out`` (one block's room, reused)."""
    rows, n_cand = hidden.shape[0], w_cand.shape[0]
    if n_cand == 0:
        return
    step = _block_rows(n_cand)
    starts = torch.arange(0, rows + step, step, device=hit_rows.device)
    bounds = torch.searchsorted(hit_rows, starts).tolist()  # each block's slice of the hits
    for i, r0 in enumerate(range(0, rows, step)):
        r1 = min(r0 + step, rows)
        block = out[r0:r1] if whole else out[: r1 - r0]
        torch.mm(hidden[r0:r1], w_cand.T, out=block).sub_(correction)
        h0, h1 = bounds[i], bounds[i + 1]
        block[hit_rows[h0:h1] - r0, hit_cols[h0:h1]] = NEG_INF
        yield r0, r1, block


__all__ = ["ItemParallelScorer"]
