"""The full-softmax item head's block width on CPU: the default rule against fixed widths.

``ItemParallelScorer.multinomial_nll`` (world size 1, one torch thread) of ``rows`` hidden rows
against ``--items`` x ``--dim`` items, 8 targets per row, forward and backward into the hidden
rows and the table. ``rule`` is the default scorer (``item_parallel.block_columns``: blocks of
about ``CPU_BLOCK_ELEMENTS`` logits on a CPU); the others hold the width fixed at each of
``--chunks``. The rule should be near the best fixed width at every row count. Prints the median
time per width and row count (widths interleaved, so the machine's load drifts over all of them
alike), and per row count the ratio of the fixed ``CHUNK_ITEMS`` width (the peer: what CPU runs
used before the rule) to the rule. Last line ``ratio X.XX``: the median of those ratios.

    .venv/bin/python -m bench.bench_item_head [--items 12101] [--rows 16 128 256 1024]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from functools import partial

import torch

from bench.harness import final_line, interleaved, load_average, median
from cllm4rec_dist.distributed import env
from cllm4rec_dist.distributed.item_parallel import CHUNK_ITEMS, ItemParallelScorer
from cllm4rec_dist.distributed.partitioned_table import PartitionedTable


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--items", type=int, default=12101, help="Amazon Beauty's catalog by default")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--rows", type=int, nargs="+", default=[16, 128, 256, 1024])
    p.add_argument("--chunks", type=int, nargs="+", default=[1024, 2048, 4096, CHUNK_ITEMS])
    p.add_argument("--repeats", type=int, default=30)
    return p.parse_args()


def step_seconds(table: PartitionedTable, rows: int, width: int, gen: torch.Generator) -> float:
    """One forward + backward; width 0 = the default rule, else that fixed block width."""
    scorer = ItemParallelScorer(table)
    if width:
        scorer.block_columns = lambda rows: width  # type: ignore[method-assign]
    hidden = torch.randn(rows, table.dim, generator=gen).requires_grad_()
    offsets = torch.arange(0, 8 * rows + 1, 8)
    items = torch.randint(0, table.num_rows, (8 * rows,), generator=gen)
    t = time.perf_counter()
    scorer.multinomial_nll(hidden, offsets, items).sum().backward()
    took = time.perf_counter() - t
    table.weight.grad = None
    return took


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    env.init_distributed()
    table = PartitionedTable(args.items, args.dim, what="item")
    with torch.no_grad():
        table.weight.normal_(0.0, 0.3)
    widths = [0, *sorted({*args.chunks, CHUNK_ITEMS})]
    print(f"items {args.items} x dim {args.dim}, 1 torch thread; load {load_average()}")
    print(f"median ms of forward + backward; rule = default scorer, peer = fixed {CHUNK_ITEMS}")
    gen = torch.Generator().manual_seed(0)
    ratios = []
    for rows in args.rows:
        # The first two rounds fault the pages in; a step times itself (not its inputs).
        fns = {w: partial(step_seconds, table, rows, w, gen) for w in widths}
        times = interleaved(fns, args.repeats, warmup=2, self_timed=True)
        med = {w: 1000 * m for w, m in median(times).items()}
        ratios.append(med[CHUNK_ITEMS] / med[0])
        rule = ItemParallelScorer(table).block_columns(rows)
        cells = "  ".join(f"{w:>6}: {m:7.2f}" for w, m in med.items() if w)
        print(
            f"rows {rows:5d}  rule ({rule:>5} wide): {med[0]:7.2f}  {cells}  "
            f"peer/rule {ratios[-1]:.2f}",
            flush=True,
        )
    print(final_line(ratio=statistics.median(ratios)))


if __name__ == "__main__":
    main()
