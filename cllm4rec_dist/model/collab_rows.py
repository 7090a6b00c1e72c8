"""Collaborative factors for the ID rows of a pretrained backbone (``tables.collab_dims``).

A pretrained LM's ID rows start from the item's text (text_rows.py) and move slowly: they are as
wide as the LM (576 for SmolLM2) and a table lr high enough to reshape them in a few epochs
throws the LM off (docs/results.md). After a SmolLM2 pretraining epoch the rows alone rank
items below popularity, where the tiny backbone's rows alone are a good model. So the rows also
start with the interactions' own structure: the top right singular vectors of the binary
user x item matrix X of the training split (PureSVD's item factors), written into the LM's
space through a fixed random orthonormal map (``random_basis``).

The factors come from a randomized range finder on X^T X (Halko, Martinsson and Tropp, 2011):
each rank multiplies by its own users' rows and one sum over ranks (``reduce``) joins them, so
no rank holds X or an [I, I] matrix; memory is [I, dims + oversample]. ``reference_factors``
is the plain dense SVD beside it (the parity test).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

Reduce = Callable[[Tensor], Tensor]  # sums a tensor over ranks in place and returns it


def _rows_matrix(offsets: Tensor, items: Tensor, num_items: int) -> Tensor:
    """CSR histories (offsets [n+1], items [nnz]) -> sparse binary X [n, I] (float32)."""
    n = offsets.numel() - 1
    rows = torch.repeat_interleave(torch.arange(n), offsets[1:] - offsets[:-1])
    ones = torch.ones(items.numel())
    index = torch.stack([rows, items.to(torch.int64)])
    x = torch.sparse_coo_tensor(index, ones, (n, num_items), check_invariants=True).coalesce()
    # A repeated item counts once (coalesce summed the repeats).
    values = x.values().clamp(max=1.0)
    return torch.sparse_coo_tensor(x.indices(), values, x.shape, check_invariants=True).coalesce()


def item_factors(
    offsets: Tensor,
    items: Tensor,
    num_items: int,
    dims: int,
    reduce: Reduce,
    seed: int = 0,
    oversample: int = 16,
    power_iters: int = 3,
) -> Tensor:
    """Item factors F [I, dims] = V_k diag(s_k)^(1/2) of X = U S V^T, X the binary matrix of the
    histories (this rank's users, CSR); ``reduce`` sums over the ranks that share the users.
    Every rank gets the same F (same seed, same sums). dims is cut to I."""
    dims = min(dims, num_items)
    width = min(dims + oversample, num_items)
    x = _rows_matrix(offsets, items, num_items)
    xt = x.t().coalesce()
    gen = torch.Generator().manual_seed(seed)
    y = torch.randn(num_items, width, generator=gen)

    def gram(q: Tensor) -> Tensor:  # X^T X q summed over ranks: [I, width]
        return reduce(torch.sparse.mm(xt, torch.sparse.mm(x, q)))

    y = gram(y)
    for _ in range(power_iters):
        y = gram(torch.linalg.qr(y).Q)
    q = torch.linalg.qr(y).Q  # [I, width], orthonormal: X^T X's top subspace
    z = torch.sparse.mm(x, q)
    small = reduce(z.t() @ z)  # q^T X^T X q [width, width]
    evals, evecs = torch.linalg.eigh(small.double())
    order = torch.argsort(evals, descending=True)[:dims]
    # X^T X = V S^2 V^T: eigenvalues are s^2, so s^(1/2) = evals^(1/4).
    scale = evals[order].clamp(min=0).pow(0.25)
    factors = (q.double() @ evecs[:, order]) * scale
    return _fix_signs(factors.float())


def reference_factors(dense: Tensor, dims: int) -> Tensor:
    """The plain dense SVD of X [n, I] -> V_k diag(s_k)^(1/2) [I, dims] (signs as item_factors)."""
    _, s, vt = torch.linalg.svd(dense.double(), full_matrices=False)
    return _fix_signs((vt[:dims].T * s[:dims].sqrt()).float())


def _fix_signs(factors: Tensor) -> Tensor:
    """A singular vector's sign is arbitrary: make each column's largest entry positive."""
    at = factors.abs().argmax(0)
    signs = torch.sign(factors[at, torch.arange(factors.shape[1])])
    return factors * torch.where(signs == 0, 1.0, signs)


def random_basis(hidden: int, dims: int, seed: int = 0) -> Tensor:
    """A random orthonormal map [hidden, dims], seeded: the same on every rank. Random
    directions, not the token embeddings' principal ones: those were tried on SmolLM2 and lost
    (val Recall@20 0.2697 against 0.2998 after 1 + 1 epochs on ml-100k, docs/results.md)."""
    if dims > hidden:
        raise ValueError(f"{dims} factors do not fit in a hidden size of {hidden}")
    gen = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(hidden, dims, generator=gen)).Q


def into_space(factors: Tensor, basis: Tensor, norm: float) -> Tensor:
    """F [I, k] -> rows [I, H] = F @ basis.T (basis [H, k], orthonormal columns), each row
    rescaled to the norm ``norm`` (a row of zeros, an item no user took, stays zero).

    Per row, like a text row's placement (text_rows.TokenSpace): a factor row's norm grows with
    the item's popularity, and on a long-tailed catalog (Amazon Scientific: the top 1 % of items
    above 12x the mean norm) those rows took over the LM's inputs and the head's logits, and the
    first pretraining steps' item cross-entropy rose to 51 (uniform: 8.4). The rows' products
    are then the cosines of the factors."""
    if factors.shape[1] > basis.shape[1]:
        raise ValueError(f"{factors.shape[1]} factors but a basis of {basis.shape[1]} directions")
    rows = factors @ basis[:, : factors.shape[1]].T
    lengths = rows.norm(dim=1, keepdim=True)
    return torch.where(lengths > 0, rows * (norm / lengths.clamp_min(1e-12)), rows)


__all__ = ["into_space", "item_factors", "random_basis", "reference_factors"]
