"""The text-similarity baseline for cold-start items: TF-IDF of the item texts, each user scored
by the cosine between an item's vector and the sum of the vectors of the user's training items.

It needs no interactions for the item being scored, only its text, which is what makes it the
reference for items that arrive with a description and no history. Words are lower-cased runs
of letters and digits; idf = log((1 + n) / (1 + df)) + 1 (the smoothed form), rows L2-normalised.
No library does this here without pulling in scikit-learn for one transform, so it is written
out with scipy.sparse (a few lines).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

_WORD = re.compile(r"[a-z0-9]+")


def tfidf_matrix(texts: Sequence[str | None]) -> sp.csr_matrix:
    """[n, vocabulary] float64 TF-IDF rows of ``texts`` (a missing text is an empty row)."""
    vocab: dict[str, int] = {}
    rows, cols = [], []
    for r, text in enumerate(texts):
        for word in _WORD.findall((text or "").lower()):
            rows.append(r)
            cols.append(vocab.setdefault(word, len(vocab)))
    counts = sp.csr_matrix(
        (np.ones(len(rows)), (rows, cols)), shape=(len(texts), max(len(vocab), 1))
    )
    counts.sum_duplicates()
    df = np.bincount(counts.indices, minlength=counts.shape[1])
    idf = np.log((1 + len(texts)) / (1 + df)) + 1.0
    weighted = counts @ sp.diags(idf)
    norms = np.sqrt(np.asarray(weighted.multiply(weighted).sum(1)).ravel())
    return sp.csr_matrix(sp.diags(1.0 / np.maximum(norms, 1e-12)) @ weighted)


def text_similarity_scores(
    item_vectors: sp.csr_matrix, histories: Sequence[np.ndarray]
) -> np.ndarray:
    """[len(histories), n_items] float64: cosine between each item's row of ``item_vectors`` and
    the sum of the rows of the user's history items."""
    n = item_vectors.shape[0]
    users = np.repeat(np.arange(len(histories)), [len(h) for h in histories])
    items = np.concatenate(histories) if len(histories) else np.zeros(0, np.int64)
    pick = sp.csr_matrix((np.ones(len(items)), (users, items)), shape=(len(histories), n))
    profile = pick @ item_vectors
    norms = np.sqrt(np.asarray(profile.multiply(profile).sum(1)).ravel())
    profile = sp.diags(1.0 / np.maximum(norms, 1e-12)) @ profile
    return np.asarray((profile @ item_vectors.T).todense())


__all__ = ["text_similarity_scores", "tfidf_matrix"]
