"""Does a fixed map between the input rows and the tied item head cost quality? (docs/results.md,
"the tiny backbone's init").

A bag-of-items model with CLLM4Rec's tied head and no transformer: a user's state is
``rms_norm((u + sum of its input item rows / sqrt(n)) @ M)``, scored against the same item rows
with the multinomial likelihood of all its train items (a share ``--mask`` dropped from the
input). ``--mix none`` (M = I), ``orth`` (a fixed random orthogonal M) or ``gauss`` (a fixed
random Gaussian M, the kind of map a random frozen attention layer applies). Validation metrics
use the shared split rule and evaluation (``baselines/ranking.py``).

    python experiments/mixing_probe.py --data /tmp/data/scientific --mix orth
"""

from __future__ import annotations

import argparse
import math

import torch

from cllm4rec_dist.baselines.ranking import RowScorer, evaluate_rows, train_matrix
from cllm4rec_dist.data.manifest import load_manifest
from cllm4rec_dist.ops.topk import csr_rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="a prepared dataset directory")
    ap.add_argument("--mix", choices=["none", "orth", "gauss"], default="none")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.01, help="Adagrad lr of the rows")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--mask", type=float, default=0.2)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    man = load_manifest(args.data)
    x = train_matrix(args.data, man.num_users, man.num_items)
    d, g = args.dim, torch.Generator().manual_seed(args.seed)
    users = torch.nn.Parameter(torch.randn(man.num_users, d, generator=g) * 0.02)
    items = torch.nn.Parameter(torch.randn(man.num_items, d, generator=g) * 0.02)
    mix = {
        "none": torch.eye(d),
        "orth": torch.linalg.qr(torch.randn(d, d, generator=g))[0],
        "gauss": torch.randn(d, d, generator=g) / math.sqrt(d),
    }[args.mix]
    opt = torch.optim.Adagrad([users, items], lr=args.lr)

    def state(batch: torch.Tensor, drop: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        sub = x[batch.numpy()]  # the batch's CSR rows
        rows = csr_rows(torch.from_numpy(sub.indptr).long())
        cols = torch.from_numpy(sub.indices).long()
        keep = torch.rand(len(cols), generator=g) >= drop
        bag = torch.zeros(len(batch), d).index_add(0, rows[keep], items[cols[keep]])
        n = torch.bincount(rows[keep], minlength=len(batch)).clamp(min=1)
        h = (users[batch] + bag / n.sqrt()[:, None]) @ mix
        return h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6), rows, cols

    with_items = torch.from_numpy(x.getnnz(axis=1) > 0).nonzero().flatten()
    best = None
    for epoch in range(args.epochs):
        order = with_items[torch.randperm(len(with_items), generator=g)]
        for s in range(0, len(order), args.batch):
            batch = order[s : s + args.batch]
            h, rows, cols = state(batch, args.mask)
            loss = -torch.log_softmax(h @ items.T, -1)[rows, cols].sum() / len(batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            scorer = RowScorer(lambda b: state(b, 0.0)[0] @ items.T)
            val = evaluate_rows(args.data, man, "val", [20, 100], 512, scorer)
        print(f"epoch {epoch} val recall@20 {val['recall@20']:.4f} ndcg@100 {val['ndcg@100']:.4f}")
        if best is None or val["ndcg@100"] > best[1]["ndcg@100"]:
            best = (epoch, val)
    print(
        f"best mix={args.mix} dim={d} lr={args.lr}: epoch {best[0]} "
        f"val recall@20 {best[1]['recall@20']:.4f} ndcg@100 {best[1]['ndcg@100']:.4f}"
    )


if __name__ == "__main__":
    main()
