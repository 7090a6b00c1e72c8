"""EASE (Steck, WWW 2019): a closed-form item-item linear autoencoder, a strong full-ranking baseline.

    G = XᵀX + λI,  P = G⁻¹,  B = I − P · diag(1 / diag(P))   (so diag(B) = 0)
    scores(u) = X_u B

X is the binary user × item matrix of the training split. λ is chosen on validation NDCG@100 from
a grid. Ranking goes through the same top-K, masking and metric code as CLLM4Rec: B's columns
are a "item table" scored against the user's multi-hot training row. The I × I inverse bounds
this baseline to catalogs of some tens of thousands of items (I² floats in memory).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from cllm4rec_dist.data.shards import iter_rows
from cllm4rec_dist.eval.evaluate import evaluate_ranking
from cllm4rec_dist.eval.targets import EvalTargets, eval_targets
from cllm4rec_dist.model.heads import DenseItemScorer
from cllm4rec_dist.model.tables import DenseTable

log = logging.getLogger(__name__)

DEFAULT_LAMBDAS = (10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0)


def train_matrix(data_dir: str, num_users: int, num_items: int) -> sp.csr_matrix:
    """Binary [U, I] training interactions (one pass over the recommendation corpus)."""
    users, items = [], []
    for row in iter_rows(data_dir, "recommendation", rank=0, world_size=1, shuffle=False):
        train = np.asarray(row["train"], dtype=np.int64)
        users.append(np.full(len(train), int(row["user"]), dtype=np.int64))
        items.append(train)
    u = np.concatenate(users) if users else np.zeros(0, np.int64)
    i = np.concatenate(items) if items else np.zeros(0, np.int64)
    x = sp.csr_matrix((np.ones(len(u), np.float32), (u, i)), shape=(num_users, num_items))
    x.data[:] = 1.0  # duplicates summed by the constructor count once
    return x


def gram(x: sp.csr_matrix) -> np.ndarray:
    # float32: the I × I matrices dominate memory (12k items: 0.6 GB each instead of 1.2 GB);
    # ranking by scores does not need float64 precision.
    return (x.T @ x).toarray().astype(np.float32)


def ease_weights(g: np.ndarray, lam: float) -> np.ndarray:
    """B [I, I] from the Gram matrix G = XᵀX and the L2 weight λ (diag(B) = 0)."""
    p = np.linalg.inv(g + np.float32(lam) * np.eye(g.shape[0], dtype=np.float32))
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    return b.astype(np.float32)


def _ranking(x: sp.csr_matrix, b: np.ndarray):
    table = DenseTable(b.shape[1], b.shape[0])
    with torch.no_grad():
        table.weight.copy_(torch.from_numpy(np.ascontiguousarray(b.T)))  # row j = column j of B
    scorer = DenseItemScorer(table)

    def user_vectors(batch: EvalTargets) -> torch.Tensor:
        rows = x[batch.users.numpy()]
        return torch.from_numpy(rows.toarray())

    return scorer, user_vectors


def evaluate_ease(
    data_dir: str,
    manifest: Any,
    ks: list[int],
    lambdas: tuple[float, ...] = DEFAULT_LAMBDAS,
    select: str | None = None,
    batch_size: int = 256,
) -> dict[str, Any]:
    """Tune λ on validation ``select`` (default NDCG at the largest k); returns
    {"val", "test", "lambda"} for the chosen λ."""
    select = select or f"ndcg@{max(ks)}"
    x = train_matrix(data_dir, manifest.num_users, manifest.num_items)
    g = gram(x)
    best = None
    for lam in lambdas:
        scorer, vectors = _ranking(x, ease_weights(g, lam))
        val = evaluate_ranking(
            data_dir, manifest, "val", ks, batch_size, eval_targets, vectors, scorer
        )
        log.info("EASE lambda=%g: validation %s=%.4f", lam, select, val[select])
        if best is None or val[select] > best[1]:
            best = (lam, val[select], scorer, vectors, val)
    lam, _, scorer, vectors, val = best
    test = evaluate_ranking(
        data_dir, manifest, "test", ks, batch_size, eval_targets, vectors, scorer
    )
    return {"val": val, "test": test, "lambda": lam}
