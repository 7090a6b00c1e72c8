"""Token batches the model consumes (built by ``cllm4rec_dist.data.collate``).

A batch holds D documents in an [R, T] grid of unified ids. A row may hold several documents
(packing): ``position_ids`` restart at 0 at each document, and the backbone attends only within a
run of consecutive positions. ``attention_mask`` [R, T] marks real tokens (1) against padding (0).
All ``*_index`` fields are flat positions into the ``R * T`` grid (row-major), so the model gathers
hidden states with ``hidden.reshape(R * T, H)[index]``. Per-document fields (users, items) have D
entries; ragged per-document lists are CSR pairs: ``*_offsets`` [D+1] int64 and the flat values.
Every batch may be empty (D = R = 0): in distributed evaluation a rank that ran out of rows still
takes part in the collectives.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor


class _Movable:
    def to(self, device: torch.device | str):
        """A copy with every tensor field moved to ``device``."""
        return replace(self, **{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    @property
    def num_documents(self) -> int:
        return int(self.users.shape[0])


@dataclass
class CollabBatch(_Movable):
    """Collaborative documents ``<user> has interacted with`` ++ item tokens.

    target_index [N] flat positions whose hidden state predicts target_items [N] (item indices,
    not unified ids); users [D].
    """

    input_ids: Tensor
    attention_mask: Tensor
    position_ids: Tensor
    target_index: Tensor
    target_items: Tensor
    users: Tensor


@dataclass
class ContentBatch(_Movable):
    """Reviews and user / item descriptions: a hard prompt ++ main-text words ++ ``<eos>``.

    target_index [M] flat positions predicting target_words [M] (word ids); users [D], items [D]
    (-1 where the document has none).
    """

    input_ids: Tensor
    attention_mask: Tensor
    position_ids: Tensor
    target_index: Tensor
    target_words: Tensor
    users: Tensor
    items: Tensor


@dataclass
class RecBatch(_Movable):
    """Recommendation prompts; the hidden state at last_index [D] scores all items.

    pool_offsets [D+1] / pool_index: each prompt's positions that predict an item (the last word
    before the history, every history item, the last position), for ``rec_pool=mean``;
    target_offsets [D+1] / target_items: held-out items per user (multinomial targets);
    exclude_offsets [D+1] / exclude_items: items masked out of the ranking (empty in training);
    users [D].
    """

    input_ids: Tensor
    attention_mask: Tensor
    position_ids: Tensor
    last_index: Tensor
    pool_offsets: Tensor
    pool_index: Tensor
    target_offsets: Tensor
    target_items: Tensor
    exclude_offsets: Tensor
    exclude_items: Tensor
    users: Tensor


__all__ = ["CollabBatch", "ContentBatch", "RecBatch"]
