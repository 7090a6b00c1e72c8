"""Start the ID tables of a pretrained backbone in its token-embedding space (``tables.init``).

- Items: the mean of the LM's input embeddings of the item's description tokens (the first
  ``data.max_text_tokens``, as the content LM reads them), rescaled to the mean norm of the
  LM's token embeddings. Items without text get the mean of the others' rows.
- Items, with ``tables.collab_dims`` > 0: plus the training interactions' top singular factors
  (model/collab_rows.py), so that the rows hold the collaborative structure from the start.
- Users: the mean of their training items' rows (what the collaborative LM will predict from
  them), rescaled the same way; users without training items start from their description,
  else from the mean user row.

Both copies of a table (collaborative and content) get the same values on top of their own
random init, which stays as a small perturbation (``tables.init_std``) so that rows of items
with the same text still differ. Every rank fills its own rows; the item rows of other ranks
are read through the (collective) item table, so all ranks call this together.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from cllm4rec_dist.data.shards import iter_rows
from cllm4rec_dist.distributed.comm import all_reduce
from cllm4rec_dist.model.collab_rows import into_space, item_factors, random_basis
from cllm4rec_dist.model.prompts import CONTENT_TEMPLATES, PromptBuilder
from cllm4rec_dist.model.text_rows import SPACE_SAMPLE_TEXTS, TokenSpace, mean_rows, token_rows

log = logging.getLogger(__name__)

DESCRIPTION_KINDS = {v: k for k, v in CONTENT_TEMPLATES.items()}


def descriptions(data_dir: str, kind: str, lo: int, hi: int) -> dict[int, str]:
    """index -> description text for the ``kind`` ("item" | "user") indices in [lo, hi)."""
    code, field = DESCRIPTION_KINDS[f"{kind}_description"], kind
    return {
        int(row[field]): row["text"]
        for row in iter_rows(data_dir, "content", shuffle=False)
        if int(row["kind"]) == code and lo <= int(row[field]) < hi
    }


def _text_rows(
    texts: dict[int, str],
    lo: int,
    hi: int,
    prompts: PromptBuilder,
    max_tokens: int,
    emb: Tensor,
    space: TokenSpace,
) -> tuple[Tensor, Tensor]:
    """Rows [hi-lo, H] of the texts of indices [lo, hi) and has_text [hi-lo]."""
    ids = list(range(lo, hi))
    encoded = prompts.encode_texts([texts.get(i, "") for i in ids]) if ids else []
    return token_rows([t[:max_tokens] for t in encoded], emb, space)


def _global_mean(rows: Tensor, use: Tensor) -> Tensor | None:
    """Mean over all ranks of ``rows[use]``; None when no rank has one (collective)."""
    stats = torch.cat([rows[use].sum(0), use.sum().reshape(1).float()]).double()
    all_reduce(stats, dist.ReduceOp.SUM)
    return None if stats[-1] == 0 else (stats[:-1] / stats[-1]).float()


def _user_histories(data_dir: str, lo: int, hi: int) -> tuple[Tensor, Tensor]:
    """CSR (offsets [hi-lo+1], items) of the training items of users [lo, hi)."""
    items: list[np.ndarray] = [np.zeros(0, dtype=np.int64)] * (hi - lo)
    for row in iter_rows(data_dir, "recommendation", shuffle=False):
        user = int(row["user"])
        if lo <= user < hi:
            items[user - lo] = np.asarray(row["train"], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum([len(a) for a in items])]).astype(np.int64)
    flat = np.concatenate(items) if items else np.zeros(0, dtype=np.int64)
    return torch.from_numpy(offsets), torch.from_numpy(flat)


def _fill(tables: list[Any], rows: Tensor) -> None:
    """Add ``rows`` (this rank's block) to each table's random init."""
    with torch.no_grad():
        for table in tables:
            table.weight.add_(rows.to(table.weight.device, table.weight.dtype))


def init_from_text(
    tables: dict[str, Any],
    embedding: Tensor,
    prompts: PromptBuilder,
    data_dir: str,
    max_tokens: int,
    collab_dims: int = 0,
    collab_norm: float = 1.5,
    seed: int = 0,
) -> dict[str, int]:
    """Fill the four tables (``build_tables``' dict) from text; returns counts for the log.

    embedding: the backbone's input token embeddings [V, H] (whole, not ZeRO-partitioned).
    collab_dims > 0: the item rows also get the training interactions' top ``collab_dims``
    factors, each row at the norm ``collab_norm`` (model/collab_rows.py), before the users'
    rows are made from their items' rows.
    """
    emb = embedding.detach().float().cpu()
    item_tables = [tables["item_collab"], tables["item_content"]]
    user_tables = [tables["user_collab"], tables["user_content"]]
    texts = descriptions(data_dir, "item", 0, item_tables[0].num_rows)
    if not texts:
        log.warning(
            "tables.init=text: no item has a description; the tables keep their random init"
        )
        return {"items_with_text": 0}
    # Every rank reads the same first texts, so the space is the same everywhere.
    sample = prompts.encode_texts([texts[i] for i in sorted(texts)[:SPACE_SAMPLE_TEXTS]])
    space = TokenSpace.of(emb, torch.from_numpy(np.concatenate([t[:max_tokens] for t in sample])))
    lo, hi = item_tables[0].row_range
    item_rows, has_text = _text_rows(texts, lo, hi, prompts, max_tokens, emb, space)
    mean_item = _global_mean(item_rows, has_text)
    assert mean_item is not None  # some item has text
    item_rows[~has_text] = space.place((mean_item - space.mean).unsqueeze(0))
    ulo, uhi = user_tables[0].row_range
    offsets, history = _user_histories(data_dir, ulo, uhi)
    if collab_dims > 0:
        num_items, hidden = item_tables[0].num_rows, item_rows.shape[1]
        factors = item_factors(
            offsets, history, num_items, min(collab_dims, hidden),
            lambda t: all_reduce(t, dist.ReduceOp.SUM),
            seed=seed,
        )  # fmt: skip
        basis = random_basis(hidden, factors.shape[1], seed=seed)
        item_rows += into_space(factors, basis, collab_norm)[lo:hi]
    _fill(item_tables, item_rows)

    with torch.no_grad():
        history_rows = tables["item_collab"](history)  # collective: every rank calls it once
    user_rows = mean_rows(offsets, history_rows.cpu(), space)
    from_items = offsets[1:] > offsets[:-1]
    text_rows, from_text = _text_rows(
        descriptions(data_dir, "user", ulo, uhi), ulo, uhi, prompts, max_tokens, emb, space
    )
    from_text &= ~from_items
    user_rows[from_text] = text_rows[from_text]
    known = from_items | from_text
    mean_user = _global_mean(user_rows, known)
    if mean_user is not None:
        user_rows[~known] = space.place((mean_user - space.mean).unsqueeze(0))
    _fill(user_tables, user_rows)
    counts = torch.tensor(
        [int(has_text.sum()), int(from_items.sum()), int(from_text.sum())], dtype=torch.int64
    )
    all_reduce(counts, dist.ReduceOp.SUM)
    return {
        "items_with_text": int(counts[0]),
        "users_from_items": int(counts[1]),
        "users_from_text": int(counts[2]),
    }


__all__ = ["descriptions", "init_from_text"]
