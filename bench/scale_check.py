"""Memory/scale check: CLLM4Rec-sized ID tables, partitioned over 2 CPU ranks.

Builds both copies of both tables (collaborative + content LM, users and items; default
10 M users x 1 M items at d = 64), the row-wise Adagrad state and the item-parallel scorer on
the collaborative item table, runs a few training steps of a stand-in model (lookups -> linear
-> scorer CE + multinomial NLL) and prints, per rank: table bytes, optimizer-state bytes, peak RSS
and step time. Small run: ``python bench/scale_check.py --users 100000 --items 10000``.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch
import torch.distributed as dist
from torch import nn

from cllm4rec_dist.distributed.item_parallel import ItemParallelScorer
from cllm4rec_dist.distributed.partitioned_table import PartitionedTable
from cllm4rec_dist.distributed.rowwise_optim import RowWiseAdagrad
from cllm4rec_dist.distributed.spawn import run_ranks

GIB = 2**30


def peak_rss_bytes() -> int:
    """This process's peak resident set size (Linux VmHWM; ru_maxrss elsewhere)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def rank_main(rank: int, world_size: int, args: argparse.Namespace) -> dict:
    torch.set_num_threads(1)
    start = time.perf_counter()
    tables = {
        f"{lm}_{kind}": PartitionedTable(rows, args.dim, seed=seed, what=f"{lm} {kind}")
        for seed, (lm, kind, rows) in enumerate(
            [
                (lm, kind, n)
                for lm in ("collab", "content")
                for kind, n in (("user", args.users), ("item", args.items))
            ]
        )
    }
    optimizer = RowWiseAdagrad([t.weight for t in tables.values()], lr=0.05)
    scorer = ItemParallelScorer(tables["collab_item"])
    backbone = nn.Linear(args.dim, args.dim)
    backbone_opt = torch.optim.SGD(backbone.parameters(), lr=0.05)
    build_s = time.perf_counter() - start
    gen = torch.Generator().manual_seed(rank)
    step_s, losses = [], []
    for _ in range(args.steps):
        users = torch.randint(0, args.users, (args.batch,), generator=gen)
        history = torch.randint(0, args.items, (args.batch, args.history), generator=gen)
        targets = torch.randint(0, args.items, (args.batch * args.targets,), generator=gen)
        offsets = torch.arange(args.batch + 1) * args.targets
        t0 = time.perf_counter()
        x = sum(
            tables[f"{lm}_user"](users) + tables[f"{lm}_item"](history).mean(dim=1)
            for lm in ("collab", "content")
        )
        hidden = backbone(x)
        loss = (
            scorer.cross_entropy(hidden, targets[: args.batch]).mean()
            + scorer.multinomial_nll(hidden, offsets, targets).mean()
        )
        loss.backward()
        for p in backbone.parameters():  # what DeepSpeed does to backbone gradients
            dist.all_reduce(p.grad)
            p.grad /= world_size
        optimizer.step()
        backbone_opt.step()
        optimizer.zero_grad()
        backbone_opt.zero_grad()
        step_s.append(time.perf_counter() - t0)
        losses.append(loss.item())
    return dict(
        rank=rank,
        rows={name: t.row_range for name, t in tables.items()},
        table_bytes=sum(t.weight.numel() * t.weight.element_size() for t in tables.values()),
        optim_bytes=sum(
            v.numel() * v.element_size() for s in optimizer.state.values() for v in s.values()
        ),
        peak_rss=peak_rss_bytes(),
        build_s=build_s,
        step_s=step_s,
        losses=losses,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=10_000_000)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64, help="users per rank per step")
    parser.add_argument("--history", type=int, default=20, help="history items per user")
    parser.add_argument("--targets", type=int, default=10, help="NLL targets per user")
    args = parser.parse_args()
    results = run_ranks(rank_main, args.ranks, args, timeout=3600)
    print(
        f"users={args.users} items={args.items} dim={args.dim} ranks={args.ranks} "
        f"tables=4 (collab/content x user/item) batch/rank={args.batch}"
    )
    for r in results:
        steps = ", ".join(f"{s:.2f}" for s in r["step_s"])
        print(
            f"rank {r['rank']}: tables {r['table_bytes'] / GIB:.3f} GiB, "
            f"row-wise optimizer state {r['optim_bytes'] / 2**20:.1f} MiB, "
            f"peak RSS {r['peak_rss'] / GIB:.2f} GiB, build {r['build_s']:.1f} s, "
            f"steps [{steps}] s, losses {[round(x, 3) for x in r['losses']]}"
        )
        print(f"        rows: {r['rows']}")


if __name__ == "__main__":
    main()
