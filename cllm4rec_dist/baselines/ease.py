"""EASE (Steck, WWW 2019): a closed-form item-item linear autoencoder, a strong full-ranking baseline.

    G = XᵀX,  P = (G + λI)⁻¹,  B = I − P · diag(1 / diag(P))   (so diag(B) = 0)
    scores(u) = X_u B

X is the binary user × item matrix of the training split. λ is chosen on validation NDCG@100 from
a grid. The whole grid comes from ONE eigendecomposition G = QΛQᵀ: (G + λI)⁻¹ = Q diag(1/(Λ+λ)) Qᵀ
= (Q√W)(Q√W)ᵀ with W = diag(1/(Λ+λ)), one symmetric rank-I product (BLAS syrk, I³ flops) per λ
instead of a general inverse (≈ 2.7 I³ flops, LU plus I right-hand sides) per λ. Users are
scored as the sparse-times-dense product X_u B and ranked by the shared masking, top-K and metric
code. The I × I matrices bound this baseline to catalogs of some tens of thousands of items.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import scipy.linalg
import scipy.sparse as sp

from cllm4rec_dist.baselines.ranking import evaluate_rows, sparse_row_scorer, train_matrix

log = logging.getLogger(__name__)

DEFAULT_LAMBDAS = (10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0)
# Up to this many items the I × I work is float64 (four such buffers, about 0.5 GB; seconds of
# compute). Beyond it float32: at 12k items one buffer is 0.6 GB instead of 1.2 GB, and the
# tridiagonal reduction inside the eigendecomposition, which dominates, is memory-bound, so
# half the bytes is about half the time. Float32 eigenvectors carry more error than a float32
# LU inverse (B off by ~3e-5 of max|B| instead of ~1e-7 at 3k items): near-tied items deep in
# the top-100 can swap (bench/bench_ease.py counts them), metrics agree to 1e-6.
FLOAT64_MAX_ITEMS = 4096
_SYMMETRIZE_BLOCK = 1024


def work_dtype(num_items: int) -> np.dtype:
    return np.dtype(np.float64 if num_items <= FLOAT64_MAX_ITEMS else np.float32)


def gram(x: sp.csr_matrix, dtype: np.dtype | None = None) -> np.ndarray:
    """G = XᵀX [I, I], in ``dtype`` (default: ``work_dtype`` of the item count)."""
    dtype = work_dtype(x.shape[1]) if dtype is None else dtype
    return (x.T @ x).toarray().astype(dtype, copy=False)


class EaseSolver:
    """B(λ) for any λ from one eigendecomposition of the Gram matrix.

    ``g`` [I, I] is consumed (its memory holds the eigenvectors). Memory: the eigenvectors plus
    one scaled copy, plus the caller's B buffers.
    """

    def __init__(self, g: np.ndarray):
        # G is symmetric, so the C-ordered G is also its own Fortran-ordered transpose: LAPACK
        # works on it in place instead of on a copy.
        eigvals, self.eigvecs = scipy.linalg.eigh(
            g.T, driver="evd", overwrite_a=True, check_finite=False
        )
        # G is positive semi-definite; rounding can leave tiny negative eigenvalues.
        self.eigvals = np.maximum(eigvals, 0)
        self.dtype = self.eigvecs.dtype
        self._scaled = np.empty_like(self.eigvecs, order="F")
        self._syrk = scipy.linalg.get_blas_funcs("syrk", dtype=self.dtype)

    @property
    def num_items(self) -> int:
        return self.eigvecs.shape[0]

    def weights(self, lam: float, out: np.ndarray | None = None) -> np.ndarray:
        """B [I, I] C-contiguous (diag(B) = 0) for the L2 weight ``lam`` > 0, written into
        ``out`` (a previous result) when given."""
        if lam <= 0:
            raise ValueError(f"lambda must be > 0, got {lam}")
        n = self.num_items
        np.multiply(self.eigvecs, np.sqrt(1.0 / (self.eigvals + lam)), out=self._scaled)
        c = np.empty((n, n), self.dtype, order="F") if out is None else out.T
        # P = (Q√W)(Q√W)ᵀ; syrk fills the upper triangle of the Fortran-ordered c, i.e. the
        # lower triangle of its C-ordered transpose p (the same matrix, P being symmetric).
        c = self._syrk(1.0, self._scaled, beta=0.0, c=c, trans=0, lower=0, overwrite_c=1)
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
) -> dict[str, Any]:
    """Tune λ on validation ``select`` (default NDCG at the largest k); returns
    {"val", "test", "lambda", "val_by_lambda"} for the chosen λ."""
    select = select or f"ndcg@{max(ks)}"
    x = train_matrix(data_dir, manifest.num_users, manifest.num_items)
    start = time.perf_counter()
    solver = EaseSolver(gram(x))
    log.info(
        "EASE: eigendecomposition of G (%d items, %s) in %.1f s",
        solver.num_items,
        solver.dtype,
        time.perf_counter() - start,
    )
    best, spare, by_lambda = None, None, {}
    for lam in lambdas:
        b = solver.weights(lam, out=spare)
        val = evaluate_rows(data_dir, manifest, "val", ks, batch_size, sparse_row_scorer(x, b))
        log.info("EASE lambda=%g: validation %s=%.4f", lam, select, val[select])
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
