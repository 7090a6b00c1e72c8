"""Cold-start items: rows for items that have a text but no interactions, from a trained model.

Two methods (``infer.method``); docs/results.md compares them with the TF-IDF baseline.

**lm** (steps 1 and 2 below): the content LM itself.

1. **Content rows from text.** An item's content row is what the content LM conditions its
   description on (``The description of <item> is: <text>``). For a new item the backbone, the
   LM head and every other row are frozen and only its content row is fitted, by gradient steps
   on the likelihood of its own description (``rows.fit_rows``), from the mean warm content row.
   Items are independent (a document holds one item), so they are fitted in chunks of
   ``batch_size``, each chunk full-batch; Adam ignores the loss scale a chunk's token count
   sets, so the chunking changes the rows only through Adam's eps and rounding (tested).
2. **Placement in the collaborative scorer.** The recommendation head scores collaborative rows,
   so the fitted content row is carried over: ``copy`` takes it as is (what mutual
   regularization aims at: λ_V pulls each item's two rows together), ``linear`` maps it by the
   ridge regression from content to collaborative rows fitted on the warm items (what is left of
   the gap after regularization). ``alignment`` reports how far apart the two spaces are.

**lm_tokens** (``token_rows_mapped``): the LM's own reading of the words, without a step of
gradient descent. A new item's text becomes the row a pretrained backbone's tables start from
(its description tokens' embeddings placed in the catalog's token space, model/text_rows.py),
and a ridge regression fitted on the trained items, from those text rows to each trained table,
maps it into that table. The ``lm`` route runs the backbone forward and backward per step and
item, which a 135 M-parameter LM cannot afford on a CPU for hundreds of items; this route costs
one embedding lookup per token.

**text_neighbors** (``neighbor_rows``), an amortised encoder from text to both rows: the k
trained items whose descriptions are nearest in TF-IDF cosine give the new item the
similarity-weighted mean of their rows, rescaled to the weighted mean of their norms (a mean of
rows is shorter than its parts, and the score is a dot product: unscaled, a new item would rank
below every trained one). ``lm_weight`` blends the LM's reading of the texts into the
nearness (the cosine of their ``lm_text_vectors``). On Amazon Scientific it beat the LM route
with the tiny backbone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from cllm4rec_dist.baselines.text_similarity import tfidf_matrix
from cllm4rec_dist.config import Placement
from cllm4rec_dist.infer.rows import fit_rows, start_at_mean
from cllm4rec_dist.model.prompts import CONTENT_TEMPLATES
from cllm4rec_dist.model.text_rows import SPACE_SAMPLE_TEXTS, TokenSpace, token_rows

ITEM_DESCRIPTION = next(k for k, v in CONTENT_TEMPLATES.items() if v == "item_description")


def description_rows(items: np.ndarray, texts: list[str]) -> list[dict]:
    """Content-corpus rows (the collator's input) of item descriptions."""
    return [
        {"kind": ITEM_DESCRIPTION, "user": -1, "item": int(i), "text": t}
        for i, t in zip(items, texts)
    ]


def infer_content_rows(
    built: Any,
    items: np.ndarray,
    texts: list[str],
    *,
    steps: int,
    lr: float,
    batch_size: int,
    on_step: Callable[[int], None] | None = None,
) -> list[float]:
    """Fit ``built``'s item_content rows of ``items`` (unique indices) to their ``texts``, in
    place. Returns the final loss per chunk (word cross-entropy of the descriptions).
    ``on_step`` as in ``fit_rows``, for each chunk."""
    table = built.tables["item_content"]
    ids = torch.from_numpy(np.array(items, dtype=np.int64))
    start_at_mean(table, ids)
    final = []
    for lo in range(0, len(items), batch_size):
        chunk_items, chunk_texts = items[lo : lo + batch_size], texts[lo : lo + batch_size]
        batch = built.collator.collate_content(description_rows(chunk_items, chunk_texts))
        batch = batch.to(built.device)
        losses = fit_rows(
            built.model,
            table,
            ids[lo : lo + batch_size],
            lambda _step, b=batch: built.model.content_loss(b).loss,
            steps=steps,
            lr=lr,
            on_step=on_step,
        )
        final.append(losses[-1])
    return final


def neighbor_rows(
    built: Any,
    items: np.ndarray,
    texts: list[str],
    known: dict[int, str],
    k: int,
    lm_weight: float = 0.0,
    max_tokens: int = 64,
) -> int:
    """Set both rows (collaborative and content) of ``items`` from the ``k`` items of ``known``
    (trained item -> description; the items being inferred are left out of it) nearest to
    each text (module docstring). Nearness is TF-IDF cosine, blended with weight ``lm_weight``
    with the cosine of the texts' LM readings (``lm_text_vectors``, the first ``max_tokens``
    tokens). Returns how many known items were used."""
    if not 0.0 <= lm_weight <= 1.0:
        raise ValueError(f"lm_weight must be in [0, 1], got {lm_weight}")
    new = set(np.asarray(items).tolist())
    known = {i: t for i, t in known.items() if i not in new}
    if not known:
        raise ValueError("text_neighbors needs trained items with a description")
    ids = torch.from_numpy(np.array(items, dtype=np.int64))
    known_items = np.fromiter(known, dtype=np.int64)
    vectors = tfidf_matrix([*texts, *known.values()])
    new_vectors, old = vectors[: len(items)], vectors[len(items) :]
    if lm_weight > 0:
        lm_old, lm_new = lm_text_vectors(built, list(known.values()), texts, max_tokens)
        # Every text row is a common mean plus its own deviation: cosines of the deviations.
        center = lm_old.double().mean(0)
        lm_old, lm_new = (F.normalize(x.double() - center, dim=1).numpy() for x in (lm_old, lm_new))
    k = min(k, len(known_items))
    weights = [built.tables[name].weight for name in ("item_collab", "item_content")]
    norms = [w.detach().norm(dim=1) for w in weights]
    for lo in range(0, len(items), 1024):  # [chunk, trained items] similarities at a time
        sim = (new_vectors[lo : lo + 1024] @ old.T).toarray()
        if lm_weight > 0:
            # Cosines of texts with no shared word are 0 in TF-IDF; the LM's may be negative:
            # clipped, so that the weights of the mean below stay non-negative.
            lm_sim = np.clip(lm_new[lo : lo + 1024] @ lm_old.T, 0.0, None)
            sim = (1 - lm_weight) * sim + lm_weight * lm_sim
        top = np.argsort(-sim, axis=1, kind="stable")[:, :k]
        w = torch.from_numpy(np.take_along_axis(sim, top, 1)).float()
        w = w / w.sum(1, keepdim=True).clamp_min(1e-12)
        rows = torch.from_numpy(known_items[top])
        with torch.no_grad():
            for weight, norm in zip(weights, norms):  # the same neighbours for both copies
                mean = (w.unsqueeze(-1) * weight[rows]).sum(1)
                length = (w * norm[rows]).sum(1, keepdim=True)
                weight[ids[lo : lo + 1024]] = (
                    mean / mean.norm(dim=1, keepdim=True).clamp_min(1e-12) * length
                )
    return len(known)


def lm_text_vectors(
    built: Any, known_texts: list[str], new_texts: list[str], max_tokens: int
) -> tuple[Tensor, Tensor]:
    """The LM's reading of each text without a forward pass: the text row a pretrained
    backbone's tables start from (model/text_rows.py: its first ``max_tokens`` tokens' mean
    embedding, placed in the token space of ``known_texts``). Returns (known [n, H], new [m, H])."""
    prompts = built.collator.builder
    emb = built.model.backbone.lm.get_input_embeddings().weight.detach().float().cpu()
    known_tokens = [t[:max_tokens] for t in prompts.encode_texts(known_texts)]
    sample = known_tokens[:SPACE_SAMPLE_TEXTS]
    space = TokenSpace.of(emb, torch.from_numpy(np.concatenate(sample)).long())
    new_tokens = [t[:max_tokens] for t in prompts.encode_texts(new_texts)]
    return token_rows(known_tokens, emb, space)[0], token_rows(new_tokens, emb, space)[0]


def token_rows_mapped(
    built: Any,
    items: np.ndarray,
    texts: list[str],
    known: dict[int, str],
    max_tokens: int,
    ridge: float,
) -> dict[str, float]:
    """Set both rows of ``items`` from the LM's token embeddings of their ``texts``, mapped by
    a ridge regression fitted on the trained items of ``known`` (item -> description; the items
    being inferred are left out of it). Returns the map's R² on those items, per table."""
    new = set(np.asarray(items).tolist())
    known = {i: t for i, t in known.items() if i not in new}
    if not known:
        raise ValueError("lm_tokens needs trained items with a description")
    known_items = torch.from_numpy(np.fromiter(known, dtype=np.int64))
    x_known, x_new = lm_text_vectors(built, list(known.values()), texts, max_tokens)
    ones = lambda x: torch.cat([x.double(), torch.ones(len(x), 1, dtype=torch.float64)], 1)  # noqa: E731
    ids = torch.from_numpy(np.array(items, dtype=np.int64))
    report = {}
    for name in ("item_collab", "item_content"):
        weight = built.tables[name].weight
        target = weight.detach()[known_items].double()
        w = linear_map(x_known, target, ridge)
        resid = ((ones(x_known) @ w - target) ** 2).sum()
        report[f"{name}_r2"] = float(1 - resid / ((target - target.mean(0)) ** 2).sum())
        with torch.no_grad():
            weight[ids] = (ones(x_new) @ w).to(weight.dtype)
    return report


def alignment(collab: Tensor, content: Tensor) -> dict[str, float]:
    """How far the collaborative and content rows of the same items are: mean cosine, mean
    ‖collab − content‖ / ‖collab‖, and the share of items whose content row is nearer (cosine)
    to its own collaborative row than to any other item's (top-1 retrieval)."""
    c, t = collab.double(), content.double()
    cos = torch.nn.functional.cosine_similarity(c, t, dim=1)
    rel = (c - t).norm(dim=1) / c.norm(dim=1).clamp_min(1e-12)
    cn = torch.nn.functional.normalize(c, dim=1)
    tn = torch.nn.functional.normalize(t, dim=1)
    nearest = torch.cat([(tn[lo : lo + 4096] @ cn.T).argmax(1) for lo in range(0, len(c), 4096)])
    own = (nearest == torch.arange(len(c))).double().mean()
    return {
        "mean_cosine": float(cos.mean()),
        "mean_relative_distance": float(rel.mean()),
        "top1_retrieval": float(own),
    }


def linear_map(content: Tensor, collab: Tensor, ridge: float = 1.0) -> Tensor:
    """W [d+1, d] minimising ‖[content, 1] W − collab‖² + ridge ‖W‖² over the given (warm) items."""
    x = torch.cat([content.double(), torch.ones(len(content), 1, dtype=torch.float64)], 1)
    gram = x.T @ x + ridge * torch.eye(x.shape[1], dtype=torch.float64)
    return torch.linalg.solve(gram, x.T @ collab.double())


def place(built: Any, items: np.ndarray, how: Placement, ridge: float = 1.0) -> dict[str, float]:
    """Write collaborative rows for ``items`` from their content rows (``copy`` or ``linear``,
    module docstring). Returns the warm items' alignment before placement (and the linear
    map's fit on them as ``linear_r2``)."""
    how = Placement(how)
    collab = built.tables["item_collab"].weight
    content = built.tables["item_content"].weight
    cold = torch.from_numpy(np.array(items, dtype=np.int64))
    warm = torch.ones(collab.shape[0], dtype=torch.bool)
    warm[cold] = False
    with torch.no_grad():
        report = alignment(collab[warm], content[warm])
        w = linear_map(content[warm], collab[warm], ridge)
        x = torch.cat([content.double(), torch.ones(len(content), 1, dtype=torch.float64)], 1)
        mapped = x @ w
        resid = ((mapped[warm] - collab[warm].double()) ** 2).sum()
        total = ((collab[warm].double() - collab[warm].double().mean(0)) ** 2).sum()
        report["linear_r2"] = float(1 - resid / total)
        rows = content[cold] if how == Placement.copy else mapped[cold].to(collab.dtype)
        collab[cold] = rows
    return report


__all__ = [
    "ITEM_DESCRIPTION",
    "token_rows_mapped",
    "neighbor_rows",
    "alignment",
    "description_rows",
    "infer_content_rows",
    "linear_map",
    "place",
]
