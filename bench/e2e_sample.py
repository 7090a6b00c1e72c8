"""EASE where it fits: a user x item sample of a prepared catalog, scored beside CLLM4Rec's
predictions and popularity on the same users (bench_e2e's last quality row).

    python -m bench.e2e_sample --data DATA --predictions P/predictions --users 20000 --items 10000

EASE's dense item x item matrix is 40 GB at 100k items, so it runs on every ``step``-th user
(``user % step == 0``; indices follow sorted raw ids, which carry no signal in the synthetic
catalog) and the ``--items`` items most often in those users' training rows; λ is picked on
their validation items from a short grid. All three are scored at k = 20 on the sample's test
items with train and validation items masked, CLLM4Rec from ``launchers/predict.py``'s Parquet
(top-20 over all items, masked the same way), EASE restricted to the item sample (a test item
outside it is a miss: the share of test items inside is printed). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.dataset as ds
import scipy.sparse as sp
import torch

from cllm4rec_dist.baselines.ease import EaseSolver, gram
from cllm4rec_dist.data.id_maps import raw_ids_by_index
from cllm4rec_dist.data.manifest import load_manifest
from cllm4rec_dist.eval.metrics import hits_matrix, recall_ndcg
from cllm4rec_dist.ops.topk import masked_topk_scores

K = 20
LAMBDAS = (100.0, 500.0, 2500.0)
# While the largest λ tried is the best, the grid goes on upwards (x5), up to this: a sample
# this sparse can want more shrinkage than a full catalog.
LAMBDA_MAX = 312500.0


def split_pairs(data: Path, split: str, step: int) -> tuple[np.ndarray, np.ndarray]:
    """(user, item) indices of ``split`` for the sampled users, streamed batch by batch."""
    scan = ds.dataset(data / "splits" / split, format="parquet").to_batches(
        columns=["user", "item"]
    )
    users, items = [], []
    for batch in scan:
        u = batch.column(0).to_numpy()
        keep = u % step == 0
        users.append(u[keep])
        items.append(batch.column(1).to_numpy()[keep])
    if not users:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(users), np.concatenate(items)


def csr(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    x = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=shape)
    x.data[:] = 1.0
    return x


def score(topk: np.ndarray, targets: sp.csr_matrix) -> dict[str, float]:
    """Mean recall@K / ndcg@K of ``topk`` [n, K] global item ids (-1 padding) over the users
    with at least one target."""
    n_targets = np.diff(targets.indptr)
    keep = n_targets > 0
    t = targets[keep]
    hits = hits_matrix(
        torch.from_numpy(topk[keep]),
        torch.from_numpy(t.indptr.astype(np.int64)),
        torch.from_numpy(t.indices.astype(np.int64)),
    )
    per_user = recall_ndcg(hits, torch.from_numpy(n_targets[keep]), [K])
    return {name: float(v.mean()) for name, v in per_user.items()}


def topk_of(scores: np.ndarray, seen: sp.csr_matrix) -> np.ndarray:
    s = torch.from_numpy(np.ascontiguousarray(scores, dtype=np.float32))
    _, items = masked_topk_scores(
        s,
        K,
        torch.from_numpy(seen.indptr.astype(np.int64)),
        torch.from_numpy(seen.indices.astype(np.int64)),
    )
    return items.numpy()


def ease_topk(x: sp.csr_matrix, b: np.ndarray, seen: sp.csr_matrix, batch: int = 2048):
    return np.concatenate(
        [
            topk_of(np.asarray(x[i : i + batch] @ b), seen[i : i + batch])
            for i in range(0, x.shape[0], batch)
        ]
    )


def cllm4rec_topk(predictions: Path, data: Path, users: np.ndarray) -> np.ndarray:
    """The predictions' top-K of ``users`` (indices, ascending) as item indices."""
    user_raw = raw_ids_by_index(data, "users").take(users)
    item_raw = raw_ids_by_index(data, "items").to_numpy(zero_copy_only=False)
    item_index = {raw: i for i, raw in enumerate(item_raw)}
    table = ds.dataset(sorted(predictions.glob("part-*.parquet")), format="parquet").to_table(
        filter=pc.field("user").isin(user_raw)
    )
    row_of = {raw: i for i, raw in enumerate(user_raw.to_pylist())}
    out = np.full((len(users), K), -1, np.int64)
    for raw, items in zip(table.column("user").to_pylist(), table.column("items").to_pylist()):
        out[row_of[raw], : len(items)] = [item_index[i] for i in items[:K]]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--predictions", type=Path, required=True)
    parser.add_argument("--users", type=int, default=20000)
    parser.add_argument("--items", type=int, default=10000)
    args = parser.parse_args()
    manifest = load_manifest(args.data)
    step = max(1, math.ceil(manifest.num_users / args.users))
    start = time.perf_counter()
    pairs = {s: split_pairs(args.data, s, step) for s in ("train", "val", "test")}
    users = np.unique(np.concatenate([pairs[s][0] for s in pairs]))
    row = {s: np.searchsorted(users, u) for s, (u, _) in pairs.items()}
    shape_all = (len(users), manifest.num_items)
    full = {s: csr(row[s], pairs[s][1], shape_all) for s in pairs}
    counts = np.bincount(pairs["train"][1], minlength=manifest.num_items)
    kept = np.sort(np.argsort(-counts, kind="stable")[: args.items])
    col = np.full(manifest.num_items, -1, np.int64)
    col[kept] = np.arange(len(kept))
    x = full["train"][:, kept].tocsr()
    solver = EaseSolver(gram(x))

    def local(topk: np.ndarray) -> np.ndarray:
        return np.where(topk >= 0, kept[np.maximum(topk, 0)], -1)

    by_lambda, best, grid = {}, None, list(LAMBDAS)
    while grid:
        lam = grid.pop(0)
        b = solver.weights(lam)
        val = score(local(ease_topk(x, b, x)), full["val"])
        by_lambda[str(lam)] = val[f"ndcg@{K}"]
        if best is None or val[f"ndcg@{K}"] > by_lambda[str(best[0])]:
            best = (lam, b)
        if not grid and best[0] == lam and lam * 5 <= LAMBDA_MAX:
            grid.append(lam * 5)
    lam, b = best
    seen_test = (full["train"] + full["val"])[:, kept].tocsr()
    ease = score(local(ease_topk(x, b, seen_test)), full["test"])
    seen_all = (full["train"] + full["val"]).tocsr()
    pop_scores = np.broadcast_to(counts.astype(np.float32), shape_all)
    pop = score(
        np.concatenate(
            [
                topk_of(pop_scores[i : i + 2048].copy(), seen_all[i : i + 2048])
                for i in range(0, len(users), 2048)
            ]
        ),
        full["test"],
    )
    model = score(cllm4rec_topk(args.predictions, args.data, users), full["test"])
    test_items = full["test"].indices
    result = {
        "users": int(len(users)),
        "user_step": step,
        "items": int(len(kept)),
        "test_items_in_sample": float(np.mean(col[test_items] >= 0)) if len(test_items) else 0.0,
        "ease_lambda": lam,
        "ease_val_ndcg_by_lambda": by_lambda,
        "test": {"cllm4rec": model, "ease": ease, "popularity": pop},
        "seconds": time.perf_counter() - start,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
