"""EASE λ search: one explicit inverse and dense scoring per λ (the implementation before the
eigendecomposition one) vs one Cholesky factorisation and inverse per λ and sparse scoring
(``cllm4rec_dist/baselines/ease.py``).

A seeded synthetic catalog stands in for Amazon Beauty (default 22,363 users × 12,101 items):
item popularity follows a power law, every user has 1 + Poisson(mean − 1) training items (mean
6.5), one validation and one test item, all distinct and drawn by popularity. Both ways rank all
items for every user with the seen items masked and score top-100 lists with the project's
metrics.

- old: ``np.linalg.inv(G + λI)`` in float32, B, the DenseItemScorer over dense multi-hot rows,
  for ONE λ (validation users); the 7-λ search is extrapolated as 7 × that + one scoring pass
  for the test split (``--old full`` runs every λ instead, ``--old skip`` none);
- new: the whole search as ``evaluate_ease`` runs it: the Gram matrix, per λ B (``EaseSolver``:
  potrf + potri on a copy of G) and validation scoring, then the test split at the best λ.

The old and new top-100 lists of the λ both ran are compared. Prints CPU model, load average
and thread settings; last line ``ratio X.XX`` (old / new wall time of the 7-λ search).
Quick check: ``python -m bench.bench_ease --users 3000 --items 2000``.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import scipy.sparse as sp
import torch

from bench.harness import final_line, load_average, machine_line
from cllm4rec_dist.baselines.ease import DEFAULT_LAMBDAS, EaseSolver, gram
from cllm4rec_dist.baselines.ranking import sparse_row_scorer
from cllm4rec_dist.eval.metrics import MetricSums
from cllm4rec_dist.model.heads import DenseItemScorer
from cllm4rec_dist.model.tables import DenseTable

K = 100
KS = [20, 40, 100]


def synthetic(users: int, items: int, mean_train: float, alpha: float, seed: int):
    """(train csr [U, I] float32, val items [U], test items [U]) with power-law popularity."""
    rng = np.random.default_rng(seed)
    pop = rng.permutation(1.0 / np.arange(1, items + 1) ** alpha)
    pop /= pop.sum()
    n_train = 1 + rng.poisson(mean_train - 1, users)
    need = n_train + 2
    # Over-draw by popularity, keep each user's first distinct items (order of drawing).
    draws = rng.choice(items, size=int(need.sum() * 2 + 64 * users), p=pop)
    rows, cols, val, test = [], [], np.empty(users, np.int64), np.empty(users, np.int64)
    pos = 0
    for u in range(users):
        chosen: dict[int, None] = {}
        while len(chosen) < need[u]:
            chosen.setdefault(int(draws[pos % len(draws)]))
            pos += 1
        picked = np.fromiter(chosen, np.int64)
        rows.append(np.full(n_train[u], u))
        cols.append(picked[: n_train[u]])
        val[u], test[u] = picked[-2], picked[-1]
    r, c = np.concatenate(rows), np.concatenate(cols)
    x = sp.csr_matrix((np.ones(len(r), np.float32), (r, c)), shape=(users, items))
    return x, val, test


def exclusions(x: sp.csr_matrix, extra: np.ndarray | None):
    """Per-user CSR exclusions: the training row, plus ``extra`` [U] (validation item for test)."""
    if extra is None:
        return x.indptr.astype(np.int64), x.indices.astype(np.int64)
    y = x + sp.csr_matrix(
        (np.ones(len(extra), np.float32), (np.arange(len(extra)), extra)), x.shape
    )
    y.sort_indices()
    return y.indptr.astype(np.int64), y.indices.astype(np.int64)


def rank_all(topk, x, targets, extra, batch: int):
    """Top-K of every user through ``topk(users, lo, hi, ex_off, ex_items)`` -> (metrics, items)."""
    off, ex = exclusions(x, extra)
    sums, lists = MetricSums(KS), []
    for lo in range(0, x.shape[0], batch):
        hi = min(x.shape[0], lo + batch)
        ex_off = torch.from_numpy(off[lo : hi + 1] - off[lo])
        ex_items = torch.from_numpy(ex[off[lo] : off[hi]])
        _, items = topk(lo, hi, ex_off, ex_items)
        t_off = torch.arange(hi - lo + 1)
        sums.add(items, t_off, torch.from_numpy(targets[lo:hi]))
        lists.append(items)
    return MetricSums.means_from(KS, sums.as_tensor()), torch.cat(lists)


def old_way(x, val, test, lambdas, batch):
    """The previous implementation (float32 inverse per λ, dense scoring); times per phase."""
    g = gram(x, np.float32)
    times, results = {"inverse": [], "scoring": []}, {}
    for lam in lambdas:
        t0 = time.perf_counter()
        p = np.linalg.inv(g + np.float32(lam) * np.eye(g.shape[0], dtype=np.float32))
        b = -p / np.diag(p)[None, :]
        np.fill_diagonal(b, 0.0)
        del p
        table = DenseTable(b.shape[1], b.shape[0])
        with torch.no_grad():
            table.weight.copy_(torch.from_numpy(np.ascontiguousarray(b.T)))
        del b
        scorer = DenseItemScorer(table)
        t1 = time.perf_counter()

        def topk(lo, hi, ex_off, ex_items, scorer=scorer):
            dense = torch.from_numpy(x[lo:hi].toarray())
            return scorer.topk(dense, K, ex_off, ex_items)

        results[lam] = rank_all(topk, x, val, None, batch)
        times["inverse"].append(t1 - t0)
        times["scoring"].append(time.perf_counter() - t1)
        del table, scorer
    return times, results


def new_way(x, val, test, lambdas, batch, keep_lambda):
    """The full search as ``evaluate_ease`` runs it; times per phase and the kept λ's lists."""
    t0 = time.perf_counter()
    solver = EaseSolver(gram(x))
    times = {"gram": time.perf_counter() - t0, "weights": [], "scoring": []}
    best, spare, kept = None, None, None
    for lam in lambdas:
        t1 = time.perf_counter()
        b = solver.weights(lam, out=spare)
        t2 = time.perf_counter()
        scorer = sparse_row_scorer(x, b)

        def topk(lo, hi, ex_off, ex_items, scorer=scorer):
            return scorer.topk(torch.arange(lo, hi), K, ex_off, ex_items)

        metrics, lists = rank_all(topk, x, val, None, batch)
        times["weights"].append(t2 - t1)
        times["scoring"].append(time.perf_counter() - t2)
        if lam == keep_lambda:
            kept = (metrics, lists)
        if best is None or metrics["ndcg@100"] > best[2]["ndcg@100"]:
            spare, best = (None if best is None else best[1]), (lam, b, metrics)
        else:
            spare = b
    del spare, solver
    t3 = time.perf_counter()
    scorer = sparse_row_scorer(x, best[1])
    test_metrics, _ = rank_all(
        lambda lo, hi, o, e: scorer.topk(torch.arange(lo, hi), K, o, e), x, test, val, batch
    )
    times["test"] = time.perf_counter() - t3
    times["total"] = time.perf_counter() - t0
    return times, best[0], best[2], test_metrics, kept


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=22363)
    ap.add_argument("--items", type=int, default=12101)
    ap.add_argument("--mean-train", type=float, default=6.5)
    ap.add_argument("--alpha", type=float, default=0.8, help="popularity ∝ rank^-alpha")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--old", choices=("one", "full", "skip"), default="one")
    ap.add_argument("--old-lambda", type=float, default=DEFAULT_LAMBDAS[2])
    args = ap.parse_args()
    lambdas = list(DEFAULT_LAMBDAS)
    threads = {k: os.environ.get(k, "-") for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    print(f"{machine_line()}; {threads}", flush=True)
    x, val, test = synthetic(args.users, args.items, args.mean_train, args.alpha, args.seed)
    print(
        f"data: {x.shape[0]} users x {x.shape[1]} items, {x.nnz} training interactions "
        f"({x.nnz / x.shape[0]:.2f} per user), items with no training interaction: "
        f"{int((np.diff(x.tocsc().indptr) == 0).sum())}, seed {args.seed}",
        flush=True,
    )
    new_t, lam, val_m, test_m, kept = new_way(x, val, test, lambdas, args.batch, args.old_lambda)
    print(
        f"new: Gram matrix {new_t['gram']:.1f} s, per lambda B "
        f"{np.mean(new_t['weights']):.1f} s + validation scoring {np.mean(new_t['scoring']):.1f} s, "
        f"test {new_t['test']:.1f} s; 7-lambda search {new_t['total']:.1f} s "
        f"(best lambda {lam:g}: val ndcg@100 {val_m['ndcg@100']:.4f}, "
        f"test recall@20 {test_m['recall@20']:.4f})"
    )
    print(f"load after new: {load_average()}", flush=True)
    if args.old == "skip":
        return
    old_lambdas = lambdas if args.old == "full" else [args.old_lambda]
    old_t, old_res = old_way(x, val, test, old_lambdas, args.batch)
    inv, score = np.mean(old_t["inverse"]), np.mean(old_t["scoring"])
    if args.old == "full":
        old_total, how = sum(old_t["inverse"]) + sum(old_t["scoring"]) + score, "measured"
    else:
        old_total, how = 7 * (inv + score) + score, "extrapolated: 7 x (inverse + scoring) + test"
    print(
        f"old: per lambda inverse {inv:.1f} s + validation scoring {score:.1f} s; "
        f"7-lambda search {old_total:.1f} s ({how})"
    )
    if kept is not None and args.old_lambda in old_res:
        (m_old, l_old), (m_new, l_new) = old_res[args.old_lambda], kept
        differ = l_old != l_new
        first = differ.int().argmax(dim=1)[differ.any(dim=1)] + 1
        print(
            f"agreement at lambda {args.old_lambda:g}: identical top-{K} lists for "
            f"{100 * (1 - differ.any(dim=1).float().mean().item()):.2f}% of users, identical "
            f"top-20 for {100 * (1 - differ[:, :20].any(dim=1).float().mean().item()):.2f}% "
            f"(median first differing rank {first.median().item() if len(first) else '-'}); "
            f"val ndcg@100 old {m_old['ndcg@100']:.6f} new {m_new['ndcg@100']:.6f}, "
            f"recall@20 old {m_old['recall@20']:.6f} new {m_new['recall@20']:.6f}"
        )
    print(f"load after old: {load_average()}")
    print(final_line(ratio=old_total / new_t["total"]))


if __name__ == "__main__":
    main()
