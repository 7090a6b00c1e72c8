"""Exact top-K with seen-item masking over a large catalog: ours vs FAISS vs naive torch.

Measures users/s of
  (a) ours: ``cllm4rec_dist.ops.topk.masked_topk`` in one process (and, with
      ``--ranks 2``, ``ItemParallelScorer.topk`` on 2 gloo ranks x 1 thread, users split between
      the ranks, items sharded);
  (b) FAISS ``IndexFlatIP.search`` (no masking, same vectors, same thread count);
  (c) naive torch (``bench/peers.torch_topk``): full [users, items] matmul per block of users,
      -inf at the seen items, topk;
and the machine's matmul FLOP/s for these shapes (``torch.mm`` over the same product: best of our
tile shape and a wide [users, 65536] block with intra-op threads, and our tiles on one Python
thread per core), printing the fraction of it that ours achieves.
Timings interleave the methods round by round and keep each one's best (bench/harness.py).
Last line ``ratio X.XX``: FAISS / ours time at the worst batch size.

Full size (default): ``python -m bench.bench_topk``; CI size:
``python -m bench.bench_topk --items 20000 --users 64``. The evaluation's shape (one rank's
shard at 1 M users x 100k items, K = 100), dense path against the tiled one:
``python -m bench.bench_topk --items 50000 --dim 64 --users 512 --k 100 --threads 1 --clock cpu``
with and without ``--dense-elements 0``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import faiss
import numpy as np
import torch

from bench.harness import CLOCKS, best, cpu_model, final_line, interleaved, load_average
from bench.peers import torch_topk
from cllm4rec_dist.ops.topk import DENSE_ELEMENTS, masked_topk


def best_times(
    fns: dict[str, Callable[[], object]], rounds: int, clock: Callable[[], float]
) -> dict[str, float]:
    """Best time of each function over ``rounds`` interleaved rounds after one warm-up round.
    ``clock``: wall time, or (``--clock cpu``) this process's CPU time (all its threads:
    meaningful with ``--threads 1`` on a loaded machine)."""
    return best(interleaved(fns, rounds, clock=clock))


def blocked_mm(q: torch.Tensor, items: torch.Tensor, user_tile: int, item_tile: int) -> None:
    """q @ items.T block by block into a reused output (the same FLOPs as the top-K)."""
    out = q.new_empty(min(user_tile, q.shape[0]), min(item_tile, items.shape[0]))
    for u0 in range(0, q.shape[0], user_tile):
        qs = q[u0 : u0 + user_tile]
        for c0 in range(0, items.shape[0], item_tile):
            it = items[c0 : c0 + item_tile]
            if (qs.shape[0], it.shape[0]) == out.shape:
                torch.mm(qs, it.T, out=out)
            else:
                torch.mm(qs, it.T)


def threaded_mm(q: torch.Tensor, items: torch.Tensor, item_tile: int, threads: int) -> None:
    """blocked_mm with the users split over ``threads`` Python threads, 1 intra-op thread each
    (how ``masked_topk`` runs on CPU)."""
    part = -(-q.shape[0] // threads)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(threads) as pool:
            list(
                pool.map(
                    lambda u0: blocked_mm(q[u0 : u0 + part], items, part, item_tile),
                    range(0, q.shape[0], part),
                )
            )
    finally:
        torch.set_num_threads(previous)


def two_rank_topk(items, q, k, offsets, seen, repeats: int, clock) -> float:
    """Seconds for ItemParallelScorer.topk on 2 ranks (1 thread each), users split by rank."""
    import torch.distributed as dist

    from cllm4rec_dist.distributed.item_parallel import ItemParallelScorer
    from cllm4rec_dist.distributed.partitioned_table import PartitionedTable
    from cllm4rec_dist.distributed.spawn import run_ranks

    def rank_fn(rank: int, world_size: int) -> float:
        torch.set_num_threads(1)
        table = PartitionedTable(items.shape[0], items.shape[1], std=0.0)
        with torch.no_grad():
            table.weight.copy_(items[slice(*table.row_range)])
        scorer = ItemParallelScorer(table)
        u0, u1 = rank * q.shape[0] // world_size, (rank + 1) * q.shape[0] // world_size
        mine = offsets[u0 : u1 + 1] - offsets[u0]
        excl = seen[int(offsets[u0]) : int(offsets[u1])]

        def run():
            dist.barrier()
            return scorer.topk(q[u0:u1], k, mine, excl)

        return best_times({"topk": run}, repeats, clock)["topk"]

    return max(run_ranks(rank_fn, 2, timeout=3600))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--users", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--seen", type=int, default=50, help="seen (masked) items per user")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--ranks", type=int, choices=[0, 2], default=0, help="2: also 2 ranks")
    parser.add_argument("--user-chunk", type=int, default=256)
    parser.add_argument("--item-chunk", type=int, default=4096)
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall")
    parser.add_argument(
        "--dense-elements", type=int, default=DENSE_ELEMENTS, help="0: the tiled path only"
    )
    args = parser.parse_args()
    clock = CLOCKS[args.clock]

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    # faiss 1.15 searches 256 queries with its per-pair SIMD loop under the default threshold
    # (10x slower than its BLAS path here); 20 queries is the classic threshold: BLAS for all.
    faiss.cvar.distance_compute_blas_threshold = 20
    gen = torch.Generator().manual_seed(0)
    items = torch.randn(args.items, args.dim, generator=gen)
    index = faiss.IndexFlatIP(args.dim)
    index.add(items.numpy())
    print(machine_line())
    print(
        f"items={args.items} dim={args.dim} k={args.k} seen/user={args.seen} "
        f"threads={args.threads} clock={args.clock} torch={torch.__version__} "
        f"faiss={faiss.__version__}"
    )
    header = (
        f"{'users':>6} {'ours u/s':>9} {'faiss u/s':>9} {'naive u/s':>9} {'2-rank u/s':>10} "
        f"{'ours/faiss':>10} {'mm GFLOP/s':>10} {'ours GFLOP/s':>12} {'% of mm':>7} {'exact':>5}"
    )
    print(header)
    chunks = dict(
        user_chunk=args.user_chunk, item_chunk=args.item_chunk, dense_elements=args.dense_elements
    )
    ratios = []
    for users in args.users:
        q = torch.randn(users, args.dim, generator=gen)
        seen = torch.randint(0, args.items, (users * args.seen,), generator=gen)
        offsets = torch.arange(users + 1) * args.seen
        ours = masked_topk(q, items, args.k, offsets, seen, **chunks)
        naive = torch_topk(q, items, args.k, offsets, seen)
        times = best_times(
            {
                "ours": lambda q=q, s=seen, o=offsets: masked_topk(
                    q, items, args.k, o, s, **chunks
                ),
                "faiss": lambda q=q: index.search(q.numpy(), args.k),
                "mm_tile": lambda q=q: blocked_mm(q, items, args.user_chunk, args.item_chunk),
                "mm_wide": lambda q=q: blocked_mm(q, items, q.shape[0], 65536),
                "mm_threads": lambda q=q: threaded_mm(q, items, args.item_chunk, args.threads),
            },
            args.repeats,
            clock,
        )
        naive_fn = {"naive": lambda q=q, s=seen, o=offsets: torch_topk(q, items, args.k, o, s)}
        times.update(best_times(naive_fn, 1, clock))
        if args.ranks:
            times["ranks"] = two_rank_topk(items, q, args.k, offsets, seen, args.repeats, clock)
        flops = 2 * users * args.items * args.dim
        peak = flops / min(times["mm_tile"], times["mm_wide"], times["mm_threads"])
        # Scores agree to float rounding; with random vectors exact ties do not occur.
        exact = torch.allclose(ours[0], naive[0], atol=1e-4) and bool(
            (np.sort(ours[1].numpy(), 1) == np.sort(naive[1].numpy(), 1)).all()
        )
        ranks = f"{users / times['ranks']:10.0f}" if args.ranks else f"{'-':>10}"
        print(
            f"{users:6d} {users / times['ours']:9.0f} {users / times['faiss']:9.0f} "
            f"{users / times['naive']:9.0f} {ranks} {times['faiss'] / times['ours']:10.2f} "
            f"{peak / 1e9:10.1f} {flops / times['ours'] / 1e9:12.1f} "
            f"{100 * flops / times['ours'] / peak:6.1f}% {str(exact):>5}",
            flush=True,
        )
        ratios.append(times["faiss"] / times["ours"])
    # The figure is the worst batch size: ours must beat FAISS at every one.
    print(f"load average at the end {load_average()}")
    print(final_line(ratio=min(ratios)))


def machine_line() -> str:
    """CPU, load and the BLAS each side runs on: the ratio depends on all three."""
    config = torch.__config__.show()
    blas = next(
        (
            part.split("=")[1]
            for part in config.replace(",", " ").split()
            if part.startswith("BLAS_INFO=")
        ),
        "?",
    )
    faiss_opt = faiss.get_compile_options() if hasattr(faiss, "get_compile_options") else "?"
    return (
        f"cpu: {cpu_model()}, {os.cpu_count()} cores; load average {load_average()}; torch BLAS "
        f"{blas}; faiss compile options: {faiss_opt.strip()} (its bundled BLAS)"
    )


if __name__ == "__main__":
    main()
