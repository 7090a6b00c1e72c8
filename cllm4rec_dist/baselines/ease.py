"""EASE (Steck, WWW 2019): a closed-form item-item linear autoencoder, a strong full-ranking baseline.

    G = XᵀX,  P = (G + λI)⁻¹,  B = I − P · diag(1 / diag(P))   (so diag(B) = 0)
    scores(u) = X_u B

X is the binary user × item matrix of the training split. λ is chosen on validation NDCG@100 from
a grid. Each λ costs one Cholesky factorisation of G + λI and the inverse from that factor (LAPACK
potrf + potri, I³ flops in all, on a copy of G): the cheapest exact route measured here. The
previous route, one eigendecomposition of G for the whole grid and then one rank-I product per
λ, never pays on this kind of machine: at 12k items in float32 the eigendecomposition took 332 s
and its per-λ product (BLAS syrk) 22 s, against 9.5 s for potrf + potri. Users are scored as the sparse-times-dense product X_u B and ranked by the
shared masking, top-K and metric code. The I × I matrices bound this baseline to catalogs of
some tens of thousands of items.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import scipy.linalg
import scipy.sparse as sp
from tqdm import tqdm

from cllm4rec_dist.baselines.ranking import evaluate_rows, sparse_row_scorer, train_matrix

log = logging.getLogger(__name__)

DEFAULT_LAMBDAS = (10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0)
# Up to this many items the I × I work is float64 (a few such buffers, about 0.4 GB; seconds of
# compute). Beyond it float32: at 12k items one buffer is 0.6 GB instead of 1.2 GB and the
# factorisation runs at twice the rate. G + λI is well conditioned for the λ grid (its smallest
# eigenvalue is at least λ), so the float32 inverse is off by ~1e-6 of max|B|: near-tied items
# deep in the top-100 can swap (bench/bench_ease.py counts them), metrics agree to 1e-6.
FLOAT64_MAX_ITEMS = 4096
_SYMMETRIZE_BLOCK = 1024


def work_dtype(num_items: int) -> np.dtype:
    return np.dtype(np.float64 if num_items <= FLOAT64_MAX_ITEMS else np.float32)


def gram(x: sp.csr_matrix, dtype: np.dtype | None = None) -> np.ndarray:
    """G = XᵀX [I, I], in ``dtype`` (default: ``work_dtype`` of the item count)."""
    dtype = work_dtype(x.shape[1]) if dtype is None else dtype
    return (x.T @ x).toarray().astype(dtype, copy=False)


class EaseSolver:
    """B(λ) for any λ from the Gram matrix ``g`` [I, I] (kept, not modified).

    Memory: G plus the caller's B buffers (each λ factorises in its output buffer).
    """

    def __init__(self, g: np.ndarray):
        if g.ndim != 2 or g.shape[0] != g.shape[1]:
            raise ValueError(f"the Gram matrix must be square, got shape {g.shape}")
        self.g = g
        self.dtype = g.dtype
        self._potrf, self._potri = scipy.linalg.get_lapack_funcs(("potrf", "potri"), (g,))

    @property
    def num_items(self) -> int:
        return self.g.shape[0]

    def weights(self, lam: float, out: np.ndarray | None = None) -> np.ndarray:
        """B [I, I] C-contiguous (diag(B) = 0) for the L2 weight ``lam`` > 0, written into
        ``out`` (a previous result) when given."""
        if lam <= 0:
            raise ValueError(f"lambda must be > 0, got {lam}")
        n = self.num_items
        p = np.empty((n, n), self.dtype) if out is None else out
        np.copyto(p, self.g)
        p.flat[:: n + 1] += lam
        # G + λI is symmetric, so the C-ordered p is also its own Fortran-ordered transpose:
        # LAPACK factorises and inverts it in place. Its upper triangle is p's lower one.
        c, info = self._potrf(p.T, lower=0, overwrite_a=1, clean=0)
        if info == 0:
            c, info = self._potri(c, lower=0, overwrite_c=1)
        if info != 0:
            raise ValueError(
                f"EASE: G + {lam:g}·I is not positive definite (LAPACK info {info}); "
                "the Gram matrix has non-finite or negative entries"
            )
        p = c.T
        _mirror_lower(p)
        diag = np.diag(p).copy()
        p /= -diag[None, :]  # B_ij = −P_ij / P_jj
        np.fill_diagonal(p, 0.0)
        return p


def _mirror_lower(m: np.ndarray) -> None:
    """Copy the lower triangle of the square C-ordered ``m`` onto its upper triangle, in place,
    block by block (no I × I temporary)."""
    n, step = m.shape[0], _SYMMETRIZE_BLOCK
    for r0 in range(0, n, step):
        r1 = min(n, r0 + step)
        diag = m[r0:r1, r0:r1]
        upper = np.triu_indices(r1 - r0, 1)
        diag[upper] = diag.T[upper]
        for c0 in range(r1, n, step):
            c1 = min(n, c0 + step)
            m[r0:r1, c0:c1] = m[c0:c1, r0:r1].T


def evaluate_ease(
    data_dir: str,
    manifest: Any,
    ks: list[int],
    lambdas: tuple[float, ...] = DEFAULT_LAMBDAS,
    select: str | None = None,
    batch_size: int = 256,
    progress: bool = False,
) -> dict[str, Any]:
    """Tune λ on validation ``select`` (default NDCG at the largest k); returns
    {"val", "test", "lambda", "val_by_lambda"} for the chosen λ (``progress``: a bar over the
    grid; each λ's timings are logged at DEBUG)."""
    select = select or f"ndcg@{max(ks)}"
    x = train_matrix(data_dir, manifest.num_users, manifest.num_items)
    solver = EaseSolver(gram(x))
    best, spare, by_lambda = None, None, {}
    bar = tqdm(lambdas, desc="EASE λ grid", disable=not progress, leave=False)
    for lam in bar:
        start = time.perf_counter()
        b = solver.weights(lam, out=spare)
        solved = time.perf_counter()
        val = evaluate_rows(data_dir, manifest, "val", ks, batch_size, sparse_row_scorer(x, b))
        bar.set_postfix({"λ": f"{lam:g}", select: f"{val[select]:.4f}"})
        log.debug(
            "EASE lambda=%g (%d items, %s): B in %.1f s, validation in %.1f s, %s=%.4f",
            lam,
            solver.num_items,
            solver.dtype,
            solved - start,
            time.perf_counter() - solved,
            select,
            val[select],
        )
        by_lambda[str(lam)] = val[select]
        if best is None or val[select] > best[2][select]:
            spare = None if best is None else best[1]
            best = (lam, b, val)
        else:
            spare = b
    del spare
    lam, b, val = best
    test = evaluate_rows(data_dir, manifest, "test", ks, batch_size, sparse_row_scorer(x, b))
    return {"val": val, "test": test, "lambda": lam, "val_by_lambda": by_lambda}
