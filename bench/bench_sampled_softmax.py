"""Sampled vs full softmax on the item-parallel head: step time and memory at 10 M items, 2 ranks.

Each mode runs in its own pair of gloo ranks (so peak RSS is that mode's), one torch thread per
rank, on a row-partitioned item table of ``--items`` x ``--dim`` with row-wise Adagrad. A step is
the recommendation loss of ``--batch`` users per rank with ``--targets`` items each (drawn by a
power-law popularity, the same for every mode), from hidden states standing in for the
backbone's: forward, backward into the table and the hidden rows, optimizer step. Modes:

- full: ``ItemParallelScorer.multinomial_nll`` (exact; dense item gradient over the shard);
- popularity: ``--samples`` shared negatives per step from q ∝ (count + 1)^0.75, logQ-corrected;
- in_batch: the step's targets of both ranks as the negatives.

Prints the CPU, load, and per mode the median step time (first step dropped) and peak RSS per
rank; last line ``ratio X.XX`` (full / popularity median step time).
Small run: ``python -m bench.bench_sampled_softmax --items 200000 --steps 3``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from bench.harness import cpu_model, final_line, load_average, peak_rss_bytes
from cllm4rec_dist.distributed.item_parallel import ItemParallelScorer
from cllm4rec_dist.distributed.partitioned_table import PartitionedTable
from cllm4rec_dist.distributed.rowwise_optim import RowWiseAdagrad
from cllm4rec_dist.distributed.spawn import run_ranks
from cllm4rec_dist.model.sampling import ItemSampler, SampledSoftmaxScorer, SoftmaxKind

GIB = 2**30
MODES = (SoftmaxKind.full, SoftmaxKind.popularity, SoftmaxKind.in_batch)


def popularity_counts(items: int, seed: int = 0) -> torch.Tensor:
    """Training counts with a power-law popularity (rank^-0.8), shuffled over the ids."""
    gen = torch.Generator().manual_seed(seed)
    ranks = torch.arange(1, items + 1, dtype=torch.float64)
    counts = (1e6 * ranks.pow(-0.8)).floor().to(torch.int64)
    return counts[torch.randperm(items, generator=gen)]


def rank_main(rank: int, world_size: int, args: argparse.Namespace, mode: SoftmaxKind) -> dict:
    torch.set_num_threads(1)
    counts = popularity_counts(args.items)
    table = PartitionedTable(args.items, args.dim, seed=0, what="item")
    optimizer = RowWiseAdagrad([table.weight], lr=0.05)
    scorer = ItemParallelScorer(table)
    if mode != SoftmaxKind.full:
        scorer = SampledSoftmaxScorer(
            scorer, ItemSampler(counts, mode, num_samples=args.samples, seed=0)
        )
    cdf = torch.cumsum(counts.double(), 0)
    gen = torch.Generator().manual_seed(100 + rank)
    times = []
    for _ in range(args.steps):
        hidden = torch.randn(args.batch, args.dim, generator=gen).mul_(0.1).requires_grad_()
        u = torch.rand(args.batch * args.targets, generator=gen, dtype=torch.float64)
        items = torch.searchsorted(cdf, u * cdf[-1]).clamp_(max=args.items - 1)
        offsets = torch.arange(0, args.batch * args.targets + 1, args.targets)
        start = time.perf_counter()
        loss = scorer.multinomial_nll(hidden, offsets, items).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return {"times": times, "peak": peak_rss_bytes(), "loss": float(loss.detach())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=10_000_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--batch", type=int, default=256, help="users per rank and step")
    ap.add_argument("--targets", type=int, default=8, help="target items per user")
    ap.add_argument("--samples", type=int, default=8192, help="popularity negatives per step")
    ap.add_argument("--steps", type=int, default=4)
    args = ap.parse_args()
    print(f"cpu: {cpu_model()}; 2 gloo ranks, 1 torch thread each; load before: {load_average()}")
    print(
        f"items {args.items:,} x dim {args.dim} (fp32 shard {args.items * args.dim * 4 / 2 / GIB:.2f}"
        f" GiB per rank), {args.batch} users per rank x {args.targets} targets, "
        f"{args.samples} popularity negatives",
        flush=True,
    )
    medians = {}
    for mode in MODES:
        out = run_ranks(rank_main, 2, args, mode, timeout=3600)
        steps = [t for r in out for t in r["times"][1:]] or [t for r in out for t in r["times"]]
        medians[mode] = statistics.median(steps)
        peaks = " / ".join(f"{r['peak'] / GIB:.2f}" for r in out)
        print(
            f"{mode:<11} step median {medians[mode]:8.3f} s (min {min(steps):.3f}, max "
            f"{max(steps):.3f}), peak rss per rank {peaks} GiB, last loss {out[0]['loss']:.3f}",
            flush=True,
        )
    print(f"load after: {load_average()}")
    full = medians[SoftmaxKind.full]
    for mode in MODES[1:]:
        print(f"{mode}: {full / medians[mode]:.1f}x faster per step than full")
    print(final_line(ratio=full / medians[SoftmaxKind.popularity]))


if __name__ == "__main__":
    main()
