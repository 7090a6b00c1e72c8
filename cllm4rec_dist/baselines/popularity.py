"""Most-popular baseline: every user gets the items ranked by training-interaction count.

It goes through the same split, seen-item masking, top-K and metric code as CLLM4Rec: the scores
are a one-column "item table" of counts scored against a hidden state of ones.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from cllm4rec_dist.data.splits import eval_targets, train_item_counts
from cllm4rec_dist.eval.evaluate import evaluate_ranking
from cllm4rec_dist.model.heads import DenseItemScorer
from cllm4rec_dist.model.tables import DenseTable


def popularity_scorer(counts: np.ndarray) -> DenseItemScorer:
    table = DenseTable(len(counts), 1)
    with torch.no_grad():
        table.weight.copy_(torch.from_numpy(counts.astype(np.float32)).unsqueeze(1))
    return DenseItemScorer(table)


def evaluate_popularity(
    data_dir: str, manifest: Any, ks: list[int], batch_size: int = 256
) -> dict[str, Any]:
    """{"val": metrics, "test": metrics} of the most-popular ranking."""
    scorer = popularity_scorer(train_item_counts(data_dir, manifest.num_items))
    return {
        split: evaluate_ranking(
            data_dir,
            manifest,
            split,
            ks,
            batch_size,
            collate_eval=eval_targets,
            user_vectors=lambda batch: torch.ones(batch.users.shape[0], 1),
            scorer=scorer,
        )
        for split in ("val", "test")
    }
