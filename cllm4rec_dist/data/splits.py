"""Held-out targets and seen-item exclusions of an evaluation split, as CSR tensors, and the
training split's item counts (popularity baseline, sampled-softmax proposal).

The rule, shared by every ranker (CLLM4Rec's collator and the baselines): targets are the
user's ``split`` items; excluded from the ranking are the train items, plus the validation items
when the split is ``test``; users without ``split`` items are not evaluated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import torch
from torch import Tensor

from cllm4rec_dist.data.format import USER_CSR, member_key
from cllm4rec_dist.data.shards import iter_blocks


class EvalSplit(StrEnum):
    """An evaluation split (``predict.split``: which one's exclusion rule predict masks with)."""

    val = "val"
    test = "test"


@dataclass
class EvalTargets:
    users: Tensor  # [B] evaluated users, in row order
    target_offsets: Tensor  # [B+1]
    target_items: Tensor  # [nnz]
    exclude_offsets: Tensor  # [B+1]
    exclude_items: Tensor  # [nnz']

    def to(self, device: torch.device | str) -> EvalTargets:
        return EvalTargets(
            *(
                t.to(device)
                for t in (
                    self.users,
                    self.target_offsets,
                    self.target_items,
                    self.exclude_offsets,
                    self.exclude_items,
                )
            )
        )


def _csr(arrays: list[np.ndarray]) -> tuple[Tensor, Tensor]:
    offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(a) for a in arrays])
    flat = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int64)
    return torch.from_numpy(offsets), torch.from_numpy(flat.astype(np.int64, copy=False))


def split_rows(
    rows: Sequence[dict], split: str
) -> tuple[list[dict], list[np.ndarray], list[np.ndarray]]:
    """(evaluated rows, their targets, their exclusions) for ``split`` in ("val", "test")."""
    if split not in ("val", "test"):
        raise ValueError(f"split must be 'val' or 'test', got {split!r}")
    kept, targets, excludes = [], [], []
    for row in rows:
        target = np.asarray(row[split], dtype=np.int64)
        if len(target) == 0:
            continue
        seen = [np.asarray(row["train"], dtype=np.int64)]
        if split == "test":
            seen.append(np.asarray(row["val"], dtype=np.int64))
        kept.append(row)
        targets.append(target)
        excludes.append(np.concatenate(seen))
    return kept, targets, excludes


def eval_targets(rows: Sequence[dict], split: str) -> EvalTargets:
    kept, targets, excludes = split_rows(rows, split)
    t_off, t_items = _csr(targets)
    e_off, e_items = _csr(excludes)
    users = torch.tensor([int(r["user"]) for r in kept], dtype=torch.int64)
    return EvalTargets(users, t_off, t_items, e_off, e_items)


def train_item_counts(data_dir: str, num_items: int, rank: int = 0, world_size: int = 1):
    """[I] int64 numpy: users with each item in their training split, over this rank's share of
    the recommendation rows (sum over ranks for the whole catalog). One pass over the rank's
    shards (digests checked), counting their blocks' flat train items at once rather than a
    row at a time (0.9 s instead of 1.3 s per rank at 200k users)."""
    items = member_key(USER_CSR["recommendation"]["train"][1])  # the flat train items
    blocks = iter_blocks(
        data_dir, "recommendation", rank=rank, world_size=world_size, shuffle=False
    )
    flat = [np.asarray(block[items], dtype=np.int64) for block in blocks]
    return (
        np.bincount(np.concatenate(flat), minlength=num_items)
        if flat
        else np.zeros(num_items, dtype=np.int64)
    )
