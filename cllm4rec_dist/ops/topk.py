"""The one exact masked top-K, with CSR exclusions, tiled over users and items: of
``queries @ items.T`` (``masked_topk``: the model's scorers, dense and item-parallel) or of score
rows computed elsewhere (``masked_topk_scores``: the baselines' ``X_u B`` and decoder logits).
``masked_topk_prefiltered`` runs it over a bf16 copy of the items for candidates, then ranks
those by their fp32 scores (the served top-K: exact by a rounding bound, below). Its plain
reference is ``ops/reference.py``; ``tests/ops/test_topk.py`` holds them equal.

The kernel never builds the full [B, n] score matrix of ``masked_topk``. For each (user chunk,
item tile) it fills one reused buffer (a matmul, or a copy of the given scores), writes -inf at
the excluded (user, item) pairs, and then keeps the running top-K with a threshold filter instead
of a ``torch.topk`` per tile:

- ``tau[b]`` is user b's current K-th best score; one cheap ``amax`` pass gives the maximum of
  every block of 64 items per user, and only blocks reaching ``tau`` are looked at (after the
  first tiles, about one block for a few users per tile);
- scores ``>= tau`` in those blocks are candidates, merged with the current top-K by a stable
  descending sort (current entries first, then candidates by item), which breaks ties by lower
  item index because tiles are visited in increasing item order;
- if the blocks reaching ``tau`` cover much of the tile (the first tile, or adversarial
  orderings), ``tau`` is first raised to the K-th largest block maximum (or the tile's own K-th
  score), still a lower bound of the final K-th score.

Everything below ``tau`` can never enter the top-K, so the result is exact, ties included.

The filter tightens ``tau`` from block maxima only when a tile has at least K blocks; with
fewer (K = 100, the evaluation's cut-off, against 4096 / 64 = 64 blocks) every early tile falls
back to a ``torch.topk`` across the tile's strided item axis. In that case, when a user chunk's
scores against every item fit in ``dense_elements`` values for at least ``DENSE_MIN_ROWS`` users
at a time (an item shard of up to about 130k items), they are filled whole instead, a piece of
that many values at a time in one reused [users, items] buffer: ``torch.topk`` along the
contiguous item axis gives each user's K-th score, and every score reaching it (ties at the
boundary included) goes through the same merge. Against a 50,000-item shard at K = 100 that
took 0.4x the tiled kernel's time (docs/benchmarks.md).

On CPU, user chunks run on threads. With fewer than ``ITEM_SPLIT_USERS`` users per thread (an
online server's batch) the threads split the items instead: each runs every user over its
contiguous range of items, and the ranges' top-k lists merge by the same stable sort, in item
order, so ties still go to the lower item.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import Tensor

NEG_INF = float("-inf")
# Tighten tau with torch.topk when blocks reaching it cover more than 1/this of the tile.
_TIGHTEN_FRACTION = 4
# fill(u0, u1, c0, c1, out): write the scores of users [u0, u1) x items [c0, c1) into ``out``,
# an [items, users] tile.
Fill = Callable[[int, int, int, int, Tensor], None]
# fill_rows(u0, u1, out): write the scores of users [u0, u1) x every item into ``out``, a
# [users, items] piece (the dense path).
RowFill = Callable[[int, int, Tensor], None]
# Scores per piece of the dense path (8 Mi fp32 = 32 MiB, glibc's largest dynamic mmap
# threshold: a freed piece is reused, not mapped afresh), and the fewest users per piece for
# which it is taken.
DENSE_ELEMENTS = 2**23
DENSE_MIN_ROWS = 64
# With fewer users than this per thread (online serving's small batches) the CPU threads split
# the items instead of the users: each thread then reads its share of the item rows once for
# every user, where a split of the users made each thread read all of them for a few users.
ITEM_SPLIT_USERS = 64


def _check_csr(offsets: Tensor, values: Tensor, rows: int, num_items: int, what: str) -> None:
    if offsets.shape != (rows + 1,):
        raise ValueError(f"{what}_offsets must have shape [{rows + 1}], got {tuple(offsets.shape)}")
    if int(offsets[0]) != 0 or int(offsets[-1]) != values.numel():
        raise ValueError(f"{what}_offsets must start at 0 and end at len({what}_items)")
    if values.numel() and (int(values.min()) < 0 or int(values.max()) >= num_items):
        raise IndexError(
            f"{what} items out of range [0, {num_items}): "
            f"min={int(values.min())}, max={int(values.max())}"
        )


def csr_rows(offsets: Tensor) -> Tensor:
    """offsets [B+1] -> row index [nnz] of every CSR entry."""
    counts = offsets[1:] - offsets[:-1]
    return torch.repeat_interleave(torch.arange(counts.numel(), device=offsets.device), counts)


def sorted_topk(scores: Tensor, items: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Top-k per row of candidate ``scores`` [B, c] and their ``items`` [B, c] by a stable
    descending sort, so equal scores keep their column order -> ([B, min(k, c)], same)."""
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
    return scores.gather(1, order), items.gather(1, order)


def masked_topk(
    queries: Tensor,
    items: Tensor,
    k: int,
    exclude_offsets: Tensor,
    exclude_items: Tensor,
    index_offset: int = 0,
    *,
    user_chunk: int = 256,
    item_chunk: int = 4096,
    block: int = 64,
    threads: int | None = None,
    dense_elements: int = DENSE_ELEMENTS,
) -> tuple[Tensor, Tensor]:
    """Exact top-k of ``queries @ items.T`` per row with CSR exclusions, tiled: memory is one
    [item_chunk, user_chunk] fp32 score block per thread plus the running top-k.

    queries [B, H], items [n, H], exclusions CSR over rows of ``items`` -> (scores [B, k] fp32
    descending, indices [B, k] int64 = item row + ``index_offset``; (-inf, -1) where fewer than k
    items are allowed). Ties: lower index first (``ops/reference.py`` is the plain version it is
    tested against).

    ``block`` consecutive items share one maximum in the filtering pass (a tile whose length it
    does not divide is one block): smaller blocks open fewer scores per hit, larger ones make a
    smaller hit mask. On CPU, user chunks run on ``threads`` Python threads (default: torch's
    intra-op thread count) with one intra-op thread each, restored afterwards: one independent
    stream of work per core instead of two fork/join regions per tile, which stalls whenever
    the cores are shared (see docs/distributed.md). Do not run torch in other Python threads
    meanwhile: the intra-op thread count is process-wide. ``dense_elements``: the dense path's
    piece (module docstring; 0 = always tiled).
    """
    fill, fill_rows = _products(queries.float(), items.float())
    return _tiled_topk(
        fill, fill_rows, queries.shape[0], items.shape[0], torch.float32, queries.device, k,
        exclude_offsets, exclude_items, index_offset, user_chunk, item_chunk, block, threads,
        dense_elements,
    )  # fmt: skip


def _products(queries: Tensor, items: Tensor) -> tuple[Fill, RowFill]:
    """The kernel's fills of ``queries @ items.T`` in the inputs' dtype (fp32, or bf16 for the
    prefilter)."""

    def fill(u0: int, u1: int, c0: int, c1: int, out: Tensor) -> None:
        # The tile is [items, users]: items @ q.T ran 1.4-2.3x faster than q @ items.T
        # (MKL sgemm, AVX2) for these shapes, and the block maxima below become a vertical max
        # over contiguous user rows.
        torch.mm(items[c0:c1], queries[u0:u1].T, out=out)

    def fill_rows(u0: int, u1: int, out: Tensor) -> None:
        # [users, items]: torch.topk then runs along the contiguous item axis.
        torch.mm(queries[u0:u1], items.T, out=out)

    return fill, fill_rows


# Unit roundoff of bf16 (8 significant bits, round to nearest).
BF16_UNIT = 2.0**-8
# The prefilter's bound on |fp32 score - bf16 score| as a multiple of ||q|| max ||v||: rounding q
# and v (2u + u^2), the product rounded to bf16 (u (1 + u)^2), and both fp32 accumulations over
# d terms (under 0.13 u together for d <= 4096) stay under 3.2 u; 4 u leaves room. It assumes
# fp32 accumulation of the bf16 products, which oneDNN's and ATen's CPU kernels both do.
PREFILTER_BOUND = 4 * BF16_UNIT
# Candidates the bf16 pass keeps beyond k. Items within 2 bounds below the k-th score must fit
# in them for a user to be certified: with 1 M Gaussian rows and k = 20 that band holds about 70
# (32 extra certified none of 16 users, 128 all of them; docs/benchmarks.md).
PREFILTER_EXTRA = 128


def prefilter_supported() -> bool:
    """Whether a bf16 product runs in hardware here (AVX512-BF16): elsewhere it is emulated and
    slower than the fp32 kernel it would filter for."""
    return bool(torch.cpu._is_avx512_bf16_supported())


def masked_topk_prefiltered(
    queries: Tensor,
    items: Tensor,
    items_bf16: Tensor,
    k: int,
    exclude_offsets: Tensor,
    exclude_items: Tensor,
    *,
    item_norm_max: float | None = None,
    extra: int = PREFILTER_EXTRA,
    item_chunk: int = 4096,
    threads: int | None = None,
) -> tuple[Tensor, Tensor]:
    """``masked_topk`` by two passes, for small batches over large catalogs, where reading the
    item rows bounds the kernel: the same tiled kernel over ``items_bf16`` (half the bytes)
    keeps k + ``extra`` candidates per user, whose exact fp32 scores are then computed and
    ranked (ties: lower item first).

    Exact: with e = ``PREFILTER_BOUND`` ||q|| max ||v|| bounding |fp32 - bf16| for every item
    and t the k-th bf16 score, every item of the exact top-k has a bf16 score >= t - 2e; a user
    whose last kept candidate falls below that (or whose list holds every allowed item) is
    answered from the candidates, any other by ``masked_topk``. The exact scores are fp32 dot
    products of each candidate, whose last bit can differ from the tile product's.
    """
    num_q, n = queries.shape[0], items.shape[0]
    if num_q == 0 or k == 0 or n == 0:
        return masked_topk(queries, items, k, exclude_offsets, exclude_items, threads=threads)
    q = queries.float()
    wide = min(n, k + max(0, int(extra)))
    fill, fill_rows = _products(q.to(torch.bfloat16), items_bf16)
    approx, cand = _tiled_topk(
        fill, fill_rows, num_q, n, torch.bfloat16, queries.device, wide, exclude_offsets,
        exclude_items, 0, 256, item_chunk, 64, threads, DENSE_ELEMENTS,
    )  # fmt: skip
    if item_norm_max is None:
        item_norm_max = float(items.norm(dim=1).max())
    bound = PREFILTER_BOUND * q.norm(dim=1) * item_norm_max
    approx = approx.float()
    kth = approx[:, min(k, wide) - 1]
    # Certified: the list holds every allowed item, or its last falls below t - 2e.
    certified = (cand[:, -1] < 0) | (approx[:, -1] < kth - 2 * bound) | (wide >= n)
    # Exact fp32 scores of the candidates, ranked by score then item (-1 padding last).
    valid = cand >= 0
    exact = torch.einsum("bcd,bd->bc", items[cand.clamp(min=0)].float(), q)
    exact = torch.where(valid, exact, NEG_INF)
    by_item = torch.argsort(torch.where(valid, cand, n), dim=1)
    scores, index = sorted_topk(exact.gather(1, by_item), cand.gather(1, by_item), k)
    if scores.shape[1] < k:  # fewer than k items at all
        pad = k - scores.shape[1]
        scores = torch.cat([scores, scores.new_full((num_q, pad), NEG_INF)], dim=1)
        index = torch.cat([index, index.new_full((num_q, pad), -1)], dim=1)
    index = torch.where(scores == NEG_INF, -1, index)
    redo = (~certified).nonzero().flatten()
    if redo.numel():
        # The redone users' exclusions, as a CSR of their own.
        counts = (exclude_offsets[1:] - exclude_offsets[:-1])[redo]
        sub_offsets = torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])
        sub_items = exclude_items[(~certified)[csr_rows(exclude_offsets)]]
        s, i = masked_topk(q[redo], items, k, sub_offsets, sub_items,
                           item_chunk=item_chunk, threads=threads)  # fmt: skip
        scores[redo], index[redo] = s, i
    return scores, index


def masked_topk_scores(
    scores: Tensor,
    k: int,
    exclude_offsets: Tensor,
    exclude_items: Tensor,
    *,
    user_chunk: int = 256,
    item_chunk: int = 4096,
    block: int = 64,
    threads: int | None = None,
    dense_elements: int = DENSE_ELEMENTS,
) -> tuple[Tensor, Tensor]:
    """``masked_topk``'s contract over score rows given whole: ``scores`` [B, n] (fp32 or fp64,
    ranked in that precision; not modified) -> (scores [B, k] in that dtype, item indices [B, k]
    int64), the same tiles, dense path, ties and padding."""
    scores = scores.detach()

    def fill(u0: int, u1: int, c0: int, c1: int, out: Tensor) -> None:
        out.copy_(scores[u0:u1, c0:c1].T)

    def fill_rows(u0: int, u1: int, out: Tensor) -> None:
        out.copy_(scores[u0:u1])

    return _tiled_topk(
        fill, fill_rows, scores.shape[0], scores.shape[1], scores.dtype, scores.device, k,
        exclude_offsets, exclude_items, 0, user_chunk, item_chunk, block, threads,
        dense_elements,
    )  # fmt: skip


def _tiled_topk(
    fill: Fill,
    fill_rows: RowFill,
    num_q: int,
    n: int,
    dtype: torch.dtype,
    device: torch.device,
    k: int,
    exclude_offsets: Tensor,
    exclude_items: Tensor,
    index_offset: int,
    user_chunk: int,
    item_chunk: int,
    block: int,
    threads: int | None,
    dense_elements: int,
) -> tuple[Tensor, Tensor]:
    """The kernel behind both entries: user chunks (on threads, on CPU), each over item tiles
    that ``fill`` writes, or, on the dense path, over pieces of whole rows that ``fill_rows``
    writes."""
    _check_csr(exclude_offsets, exclude_items, num_q, n, "exclude")
    scores = torch.full((num_q, k), NEG_INF, dtype=dtype, device=device)
    index = torch.full((num_q, k), -1, dtype=torch.int64, device=device)
    if k == 0 or n == 0 or num_q == 0:
        return scores, index
    offsets = exclude_offsets.tolist()
    rows_all = csr_rows(exclude_offsets)
    threads = torch.get_num_threads() if threads is None else threads
    if device.type != "cpu":
        threads = 1
    # At least one chunk per thread.
    user_chunk = max(1, min(user_chunk, -(-num_q // threads)))
    piece = dense_elements // n
    dense = k > max(1, item_chunk // block) and piece >= min(DENSE_MIN_ROWS, user_chunk)

    def run(u0: int) -> None:
        u1 = min(num_q, u0 + user_chunk)
        a, b = offsets[u0], offsets[u1]
        # This chunk's exclusions sorted by item, so every tile masks one contiguous slice.
        ex_items, order = torch.sort(exclude_items[a:b])
        ex_rows = rows_all[a:b][order] - u0
        if dense:
            rows_fill = lambda r0, r1, out: fill_rows(u0 + r0, u0 + r1, out)  # noqa: E731
            s, i = _dense_topk(rows_fill, u1 - u0, n, dtype, device, k, ex_rows, ex_items, piece)
        else:
            chunk_fill = lambda c0, c1, out: fill(u0, u1, c0, c1, out)  # noqa: E731
            s, i = _chunk_topk(
                chunk_fill, u1 - u0, n, dtype, device, k, ex_rows, ex_items, item_chunk, block
            )
        scores[u0:u1], index[u0:u1] = s, i

    starts = range(0, num_q, user_chunk)
    if not dense and threads > 1 and num_q < ITEM_SPLIT_USERS * threads and n >= threads:
        scores, index = _item_split_topk(
            fill, num_q, n, dtype, device, k, exclude_items, rows_all, item_chunk, block, threads
        )
    elif threads == 1 or len(starts) == 1:
        for u0 in starts:
            run(u0)
    else:
        _map_on_threads(run, starts, threads)
    index = torch.where(scores == NEG_INF, -1, index + index_offset)
    return scores, index


def _map_on_threads(fn: Callable, args: Sequence, threads: int) -> list:
    """``fn`` over ``args`` on ``threads`` Python threads, torch kept to one thread inside each
    (the threads are the parallelism; torch's own pool would oversubscribe the cores)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(fn, args))
    finally:
        torch.set_num_threads(previous)


def _item_split_topk(
    fill: Fill,
    num_q: int,
    n: int,
    dtype: torch.dtype,
    device: torch.device,
    k: int,
    exclude_items: Tensor,
    exclude_rows: Tensor,
    item_chunk: int,
    block: int,
    threads: int,
) -> tuple[Tensor, Tensor]:
    """Every user against one contiguous range of items per thread, each range's running top-k
    merged at the end by a stable sort over the ranges in item order (ties: lower item first)
    -> (scores [num_q, k], item rows [num_q, k]; -1 where fewer than k)."""
    bounds = [n * t // threads for t in range(threads + 1)]

    def run(t: int) -> tuple[Tensor, Tensor]:
        lo, hi = bounds[t], bounds[t + 1]
        mine = (exclude_items >= lo) & (exclude_items < hi)
        ex_items, order = torch.sort(exclude_items[mine] - lo)
        ex_rows = exclude_rows[mine][order]
        part_fill = lambda c0, c1, out: fill(0, num_q, lo + c0, lo + c1, out)  # noqa: E731
        s, i = _chunk_topk(part_fill, num_q, hi - lo, dtype, device, k, ex_rows, ex_items,
                           item_chunk, block)  # fmt: skip
        return s, torch.where(i >= 0, i + lo, i)

    parts = _map_on_threads(run, range(threads), threads)
    scores = torch.cat([s for s, _ in parts], dim=1)
    index = torch.cat([i for _, i in parts], dim=1)
    return sorted_topk(scores, index, k)


def _chunk_topk(
    fill: Callable[[int, int, Tensor], None],
    b: int,
    n: int,
    dtype: torch.dtype,
    device: torch.device,
    k: int,
    ex_rows: Tensor,
    ex_items: Tensor,
    item_chunk: int,
    block: int,
) -> tuple[Tensor, Tensor]:
    """``b`` users against all ``n`` items, tile by tile (``fill(c0, c1, tile)``) -> running
    top-k (scores [b, k], item rows [b, k])."""
    best_s = torch.full((b, k), NEG_INF, dtype=dtype, device=device)
    best_i = torch.full((b, k), -1, dtype=torch.int64, device=device)
    tau = torch.full((b,), NEG_INF, dtype=dtype, device=device)
    starts = torch.arange(0, n + item_chunk, item_chunk, device=device).clamp_(max=n)
    ex_bounds = torch.searchsorted(ex_items, starts).tolist()
    buffer = torch.empty((min(item_chunk, n), b), dtype=dtype, device=device)
    for t, c0 in enumerate(range(0, n, item_chunk)):
        c1 = min(n, c0 + item_chunk)
        # Reuse one buffer: a fresh multi-MB tile per step costs page faults comparable to the
        # post-processing itself.
        tile = buffer if c1 - c0 == buffer.shape[0] else buffer.new_empty((c1 - c0, b))
        fill(c0, c1, tile)
        ea, eb = ex_bounds[t], ex_bounds[t + 1]
        if eb > ea:
            tile.index_put_((ex_items[ea:eb] - c0, ex_rows[ea:eb]), tile.new_tensor(NEG_INF))
        cand = _candidates(tile, k, tau, block)
        if cand is not None:
            _merge(k, *cand, c0, best_s, best_i, tau)
    return best_s, best_i


def _dense_topk(
    fill_rows: Callable[[int, int, Tensor], None],
    b: int,
    n: int,
    dtype: torch.dtype,
    device: torch.device,
    k: int,
    ex_rows: Tensor,
    ex_items: Tensor,
    piece: int,
) -> tuple[Tensor, Tensor]:
    """``b`` users against all ``n`` items, ``piece`` users at a time, every score at once
    (``fill_rows(r0, r1, out)``) -> (scores [b, k], item rows [b, k]). Candidates are the
    scores reaching the user's K-th (torch.topk) in item order, so the merge's stable sort keeps
    ties by lower item."""
    best_s = torch.full((b, k), NEG_INF, dtype=dtype, device=device)
    best_i = torch.full((b, k), -1, dtype=torch.int64, device=device)
    tau = torch.full((b,), NEG_INF, dtype=dtype, device=device)  # written by the merge only
    # One buffer for every piece: a fresh one per piece doubled the product's time (faults).
    buffer = torch.empty((min(piece, b), n), dtype=dtype, device=device)
    lowest = torch.finfo(dtype).min  # a K-th score of -inf (too few allowed) selects none
    for r0 in range(0, b, piece):
        r1 = min(b, r0 + piece)
        scores = buffer[: r1 - r0]
        fill_rows(r0, r1, scores)
        mine = (ex_rows >= r0) & (ex_rows < r1)
        scores[ex_rows[mine] - r0, ex_items[mine]] = NEG_INF
        kth = torch.topk(scores, min(k, n), dim=1, sorted=False).values.amin(dim=1)
        reach = scores >= kth.clamp(min=lowest).unsqueeze(1)
        rows, cols = reach.nonzero().unbind(1)
        if rows.numel():
            _merge(k, rows, cols, scores[rows, cols], 0, best_s[r0:r1], best_i[r0:r1], tau[r0:r1])
    return best_s, best_i


def _candidates(
    tile: Tensor, k: int, tau: Tensor, block: int
) -> tuple[Tensor, Tensor, Tensor] | None:
    """Scores of ``tile`` [c items, b users] that reach their user's ``tau``: (users, items,
    values), sorted by (user, item); None if there are none."""
    c, b = tile.shape
    block = block if c % block == 0 else c
    blocks = tile.view(c // block, block, b)
    # One cheap pass: the max of every block of items per user ([b, nb] view); a block below
    # tau holds no candidate.
    block_max = block_maxima(blocks).T
    thr = tau.unsqueeze(1)
    hit = block_max >= thr
    hits = int(hit.sum())
    if hits == 0:
        return None
    if hits * block * _TIGHTEN_FRACTION > b * c and c >= k:
        # Most of the tile could enter (first tile, or items in increasing score order). Any k
        # distinct scores of the tile bound the final k-th score from below, so raise tau to
        # the k-th block maximum (cheap: [b, nb]) or, with fewer than k blocks, to the tile's
        # own k-th score.
        if block_max.shape[1] >= k:
            kth = torch.topk(block_max, k, dim=1, sorted=False).values.amin(dim=1)
        else:
            kth = torch.topk(tile, k, dim=0, sorted=False).values.amin(dim=0)
        thr = torch.maximum(thr, kth.unsqueeze(1))
        hit = block_max >= thr
    hit_rows, hit_blocks = hit.nonzero().unbind(1)
    values = blocks[hit_blocks, :, hit_rows]
    where, offset = (values >= thr.squeeze(1)[hit_rows].unsqueeze(1)).nonzero().unbind(1)
    rows = hit_rows[where]
    return rows, hit_blocks[where] * block + offset, values[where, offset]


def block_maxima(blocks: Tensor) -> Tensor:
    """``blocks.amax(dim=1)`` of [nb, block, b] -> [nb, b], by pairwise halving when ``block``
    is a power of two: torch's reduction over a middle dimension ran 11x slower (2.2 against
    0.19 ms for a [1024, 64, 16] tile, one thread), and it was half of a served request's time
    over 1 M items. Maxima are exact, so the two agree bit for bit."""
    size = blocks.shape[1]
    if size < 2 or size & (size - 1):
        return blocks.amax(dim=1)
    while size > 1:
        size //= 2
        blocks = torch.maximum(blocks[:, :size], blocks[:, size:])
    return blocks.squeeze(1)


def _merge(
    k: int,
    rows: Tensor,
    cols: Tensor,
    vals: Tensor,
    c0: int,
    best_s: Tensor,
    best_i: Tensor,
    tau: Tensor,
) -> None:
    """Merge candidates (sorted by row, then column) into best_s / best_i and update tau."""
    touched, count = torch.unique_consecutive(rows, return_counts=True)
    m = touched.numel()
    width = k + int(count.max())
    slot = torch.arange(rows.numel(), device=rows.device) - torch.repeat_interleave(
        torch.cumsum(count, 0) - count, count
    )
    local = torch.repeat_interleave(torch.arange(m, device=rows.device), count)
    pool_s = vals.new_full((m, width), NEG_INF)
    pool_i = torch.full((m, width), -1, dtype=torch.int64, device=vals.device)
    pool_s[:, :k] = best_s.index_select(0, touched)
    pool_i[:, :k] = best_i.index_select(0, touched)
    pool_s[local, k + slot] = vals
    pool_i[local, k + slot] = cols + c0
    # Current entries come first and candidates follow in item order, so a stable sort breaks
    # ties by lower item index.
    top, order = torch.sort(pool_s, dim=1, descending=True, stable=True)
    best_s[touched] = top[:, :k]
    best_i[touched] = pool_i.gather(1, order[:, :k])
    tau[touched] = top[:, k - 1]


__all__ = [
    "DENSE_ELEMENTS",
    "block_maxima",
    "NEG_INF",
    "csr_rows",
    "masked_topk",
    "masked_topk_prefiltered",
    "masked_topk_scores",
    "prefilter_supported",
    "sorted_topk",
]
