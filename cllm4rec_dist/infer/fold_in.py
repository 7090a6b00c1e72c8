"""Fold-in users: a row for a user the model was not trained on, from a few interactions.

The model is frozen and only the new users' collaborative rows are fitted (``rows.fit_rows``),
by the recommendation loss itself on their history: at every step a random ``mask_fraction`` of
each user's items is dropped from the prompt (``<user> has interacted with <the rest>, <user>
will interact with``) and the multinomial likelihood of all of them is maximised, as in
finetuning. Rows start from the mean trained user row. Users are independent, so they are
fitted in chunks of ``batch_size``, each chunk full-batch (the prompts' random drops are
drawn per chunk).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from cllm4rec_dist.infer.rows import fit_rows, start_at_mean


def fold_in_users(
    built: Any,
    rows: list[dict],
    *,
    steps: int,
    lr: float,
    batch_size: int,
    mask_fraction: float,
    seed: int = 0,
    on_step: Callable[[int], None] | None = None,
) -> list[float]:
    """Fit ``built``'s user_collab rows of ``rows`` (recommendation rows, their ``train`` items
    the history) in place. Returns the last step's loss per chunk; ``on_step`` as in
    ``fit_rows``, for each chunk."""
    rows = [r for r in rows if len(r["train"])]
    table = built.tables["user_collab"]
    users = torch.as_tensor([int(r["user"]) for r in rows], dtype=torch.int64)
    start_at_mean(table, users)
    final = []
    for lo in range(0, len(rows), batch_size):
        chunk = rows[lo : lo + batch_size]
        rng = np.random.default_rng([seed, lo])

        def loss_of(
            _step: int, chunk: list[dict] = chunk, rng: np.random.Generator = rng
        ) -> torch.Tensor:
            batch = built.collator.collate_rec_train(chunk, rng, mask_fraction, "all")
            return built.model.recommendation_loss(batch.to(built.device)).loss

        losses = fit_rows(
            built.model,
            table,
            users[lo : lo + batch_size],
            loss_of,
            steps=steps,
            lr=lr,
            on_step=on_step,
        )
        final.append(losses[-1])
    return final


__all__ = ["fold_in_users"]
