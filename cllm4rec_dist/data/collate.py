"""Rows -> padded token batches for the three document types (architecture.md §3).

Rows come from the row iterators of ``cllm4rec_dist.data.shards``:

- collaborative: ``{"user": int, "items": int64 array}``
- content: ``{"kind": 0 review | 1 item description | 2 user description, "user": int,
  "item": int, "text": str}`` (-1 where a document has no user / item)
- recommendation: ``{"user": int, "train": array, "val": array, "test": array}``

Documents are PACKED by default: several short documents share a row (first-fit decreasing into
rows as long as the longest document, or ``row_length``), each restarting its ``position_ids`` at
0, so the backbone attends within documents only and computes no padding between them; the rest
of a row is padding with its own position run. ``pack=False`` puts one document per row (right
padding). Either way every index the model uses (targets, last positions) is a flat position
into the [R, T] grid, and per-document fields (users, items, CSR targets) have one entry per
document.

A document's final main token (its last item, or ``<eos>``) predicts nothing, so it is a target
but not an input: the causal hidden states of every other position are unchanged and each
document costs one position less (as usual in LM training: feed ``tokens[:-1]``, predict
``tokens[1:]``).

Item histories are sets: training collators shuffle them (and subsample those longer than
``max_items``) with the caller's ``np.random.Generator``; evaluation keeps the stored order and
subsamples with a generator seeded by the user index, so a user's prompt does not depend on its
batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import torch

from cllm4rec_dist.data.splits import split_rows
from cllm4rec_dist.model.batches import CollabBatch, ContentBatch, RecBatch
from cllm4rec_dist.model.prompts import CONTENT_TEMPLATES, PromptBuilder


class RecTarget(StrEnum):
    """``stage.rec_target``: what finetuning predicts (collate_rec_train)."""

    all = "all"  # every train item (Mult-DAE style, the reference code)
    heldout = "heldout"  # only the items dropped from the prompt


# Mixed into the per-user seed of the deterministic evaluation subsample.
_EVAL_SUBSAMPLE_SEED = 0x5EED


class Collator:
    """Turns row dicts into CollabBatch / ContentBatch / RecBatch tensors.

    max_items bounds the item tokens of one document (collaborative history, recommendation
    input); max_text_tokens bounds the main text of a content document (including ``<eos>``).
    pack: several documents per row (see the module docstring); row_length: with packing, rows
    are max(row_length, longest document) tokens wide (0: the longest document).
    """

    def __init__(
        self,
        builder: PromptBuilder,
        *,
        max_items: int,
        max_text_tokens: int,
        pack: bool = True,
        row_length: int = 0,
    ):
        if max_items < 1 or max_text_tokens < 1:
            raise ValueError("max_items and max_text_tokens must be >= 1")
        self.builder = builder
        self.max_items, self.max_text_tokens = max_items, max_text_tokens
        self.pack, self.row_length = pack, row_length

    # ----- collaborative ----------------------------------------------------------------------
    def collate_collab(
        self, rows: Sequence[dict], rng: np.random.Generator | None = None
    ) -> CollabBatch:
        """Each item token is predicted from the previous position (the first from the prompt's
        last token); the last item is a target only, never fed (see the module docstring).
        ``rng`` None = evaluation (stored order, deterministic subsample)."""
        b = self.builder
        seqs, target_pos, target_items = [], [], []
        for row in rows:
            items = self._history(row["user"], row["items"], rng)
            prompt = b.prompt("collaborative", user=row["user"])
            seqs.append(np.concatenate([prompt, b.item_tokens(items[:-1])]))
            target_pos.append(len(prompt) - 1 + np.arange(len(items)))
            target_items.append(items)
        grid = _layout(seqs, b.pad_id, self.pack, self.row_length)
        return CollabBatch(
            **grid.tensors(),
            target_index=grid.flat_index(target_pos),
            target_items=_cat(target_items),
            users=_users(rows),
        )

    # ----- content ------------------------------------------------------------------------------
    def collate_content(self, rows: Sequence[dict]) -> ContentBatch:
        """Main text = text words ++ ``<eos>``, cut to max_text_tokens (a cut text loses its eos).
        Every main token is a target, predicted from the previous position; the last one (the
        eos, or the cut text's last word) is not fed."""
        b = self.builder
        texts = b.encode_texts([row["text"] for row in rows])
        seqs, target_pos, target_words = [], [], []
        for row, words in zip(rows, texts):
            kind = int(row["kind"])
            if kind not in CONTENT_TEMPLATES:
                raise ValueError(f"content kind {kind} is not one of {sorted(CONTENT_TEMPLATES)}")
            prompt = b.prompt(CONTENT_TEMPLATES[kind], user=row["user"], item=row["item"])
            main = np.append(words, b.eos_id)[: self.max_text_tokens]
            seqs.append(np.concatenate([prompt, main[:-1]]))
            target_pos.append(len(prompt) - 1 + np.arange(len(main)))
            target_words.append(main)
        grid = _layout(seqs, b.pad_id, self.pack, self.row_length)
        return ContentBatch(
            **grid.tensors(),
            target_index=grid.flat_index(target_pos),
            target_words=_cat(target_words),
            users=_users(rows),
            items=torch.tensor([int(r["item"]) for r in rows], dtype=torch.int64),
        )

    # ----- recommendation ---------------------------------------------------------------------
    def collate_rec_train(
        self,
        rows: Sequence[dict],
        rng: np.random.Generator,
        mask_fraction: float = 0.2,
        target: RecTarget = RecTarget.heldout,
    ) -> RecBatch:
        """Drop a random ``mask_fraction`` of each user's train items from the prompt (at least
        one, and at least one left as input when the user has two or more); the rest, shuffled
        and cut to max_items, is the prompt. Targets: ``"heldout"`` = the dropped items only;
        ``"all"`` = every train item (the reference code's multinomial head: a denoising
        autoencoder over the user's whole set, as Mult-DAE). Users without train items are left
        out."""
        if not 0.0 < mask_fraction < 1.0:
            raise ValueError(f"mask_fraction must be in (0, 1), got {mask_fraction}")
        target = RecTarget(target)
        kept, inputs, targets = [], [], []
        for row in rows:
            train = np.asarray(row["train"], dtype=np.int64)
            n = len(train)
            if n == 0:
                continue
            perm = rng.permutation(train)
            n_target = min(max(1, round(mask_fraction * n)), max(n - 1, 1))
            kept.append(row)
            targets.append(perm[:n_target] if target == RecTarget.heldout else train)
            inputs.append(perm[n_target:][: self.max_items])
        empty = [np.zeros(0, dtype=np.int64)] * len(kept)
        return self._rec_batch(kept, inputs, targets, empty)

    def collate_rec_eval(self, rows: Sequence[dict], split: str = "val") -> RecBatch:
        """Input = the train items (stored order, deterministic subsample to max_items); targets =
        the ``split`` items; excluded from ranking = train items, plus val items when split is
        "test". Users with no ``split`` items are filtered out (batch.users says who is left);
        the rule is shared with the baselines (``data/splits.py``)."""
        kept, targets, excludes = split_rows(rows, split)
        inputs = [
            self._history(r["user"], np.asarray(r["train"], dtype=np.int64), None) for r in kept
        ]
        return self._rec_batch(kept, inputs, targets, excludes)

    def _rec_batch(
        self,
        rows: list[dict],
        inputs: list[np.ndarray],
        targets: list[np.ndarray],
        excludes: list[np.ndarray],
    ) -> RecBatch:
        b = self.builder
        seqs, pools = [], []
        for row, items in zip(rows, inputs):
            user = row["user"]
            prompt = b.prompt("recommendation", user=user)
            suffix = b.prompt("recommendation_suffix", user=user)
            seqs.append(np.concatenate([prompt, b.item_tokens(items), suffix]))
            # The positions the collaborative LM trained to predict an item: the prompt's last
            # word, each history item, and the suffix's last word.
            history = np.arange(len(prompt) - 1, len(prompt) + len(items))
            pools.append(np.append(history, len(seqs[-1]) - 1))
        grid = _layout(seqs, b.pad_id, self.pack, self.row_length)
        return RecBatch(
            **grid.tensors(),
            last_index=grid.flat_index([np.array([len(seq) - 1]) for seq in seqs]),
            pool_offsets=_offsets(pools),
            pool_index=grid.flat_index(pools),
            target_offsets=_offsets(targets),
            target_items=_cat(targets),
            exclude_offsets=_offsets(excludes),
            exclude_items=_cat(excludes),
            users=_users(rows),
        )

    # ----- helpers ----------------------------------------------------------------------------
    def _history(self, user: int, items: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
        """Training (rng given): a random permutation cut to max_items. Evaluation: stored order,
        and for long histories a subsample drawn by a generator seeded with the user index."""
        items = np.asarray(items, dtype=np.int64)
        if rng is not None:
            return rng.permutation(items)[: self.max_items]
        if len(items) <= self.max_items:
            return items
        pick = np.random.default_rng([_EVAL_SUBSAMPLE_SEED, int(user)]).choice(
            len(items), self.max_items, replace=False
        )
        return items[np.sort(pick)]


@dataclass
class _Grid:
    """Documents laid out in an [R, T] grid; starts[d] = flat index of document d's first token."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    position_ids: np.ndarray
    starts: np.ndarray

    def tensors(self) -> dict[str, torch.Tensor]:
        return {
            "input_ids": torch.from_numpy(self.input_ids),
            "attention_mask": torch.from_numpy(self.attention_mask),
            "position_ids": torch.from_numpy(self.position_ids),
        }

    def flat_index(self, positions: list[np.ndarray]) -> torch.Tensor:
        """Per-document positions -> flat indices into the grid, [sum of lengths] int64."""
        return _cat(
            [start + np.asarray(p, dtype=np.int64) for start, p in zip(self.starts, positions)]
        )


def _layout(seqs: list[np.ndarray], pad_id: int, pack: bool, row_length: int) -> _Grid:
    """Place documents into rows of T tokens.

    pack: T = max(row_length, longest document); first-fit decreasing (longest documents first,
    each into the first row with room). Otherwise one document per row, T = longest document. Padding fills row ends (attention_mask 0) and gets its own
    position run, so it forms a separate segment that no document attends to. B = 0 -> [0, 0].
    """
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    width = int(lengths.max(initial=0))
    row_of = np.arange(len(seqs))
    offset = np.zeros(len(seqs), dtype=np.int64)
    if pack and len(seqs):
        width = max(width, row_length)
        used: list[int] = []
        for doc in np.argsort(-lengths, kind="stable"):
            row = next((r for r, u in enumerate(used) if u + lengths[doc] <= width), len(used))
            if row == len(used):
                used.append(0)
            row_of[doc], offset[doc] = row, used[row]
            used[row] += int(lengths[doc])
    rows = int(row_of.max(initial=-1)) + 1
    ids = np.full((rows, width), pad_id, dtype=np.int64)
    mask = np.zeros((rows, width), dtype=np.int64)
    positions = np.zeros((rows, width), dtype=np.int64)
    fill = np.zeros(rows, dtype=np.int64)  # documents of a row sit back to back from column 0
    for doc, seq in enumerate(seqs):
        r, o = row_of[doc], offset[doc]
        ids[r, o : o + len(seq)] = seq
        mask[r, o : o + len(seq)] = 1
        positions[r, o : o + len(seq)] = np.arange(len(seq))
        fill[r] = max(fill[r], o + len(seq))
    for r in range(rows):
        # The padding after the last document is a position run of its own (a separate segment).
        positions[r, fill[r] :] = np.arange(width - fill[r])
    return _Grid(ids, mask, positions, row_of * width + offset)


def _cat(arrays: list[np.ndarray]) -> torch.Tensor:
    if not arrays:
        return torch.zeros(0, dtype=torch.int64)
    return torch.from_numpy(np.concatenate(arrays).astype(np.int64, copy=False))


def _offsets(arrays: list[np.ndarray]) -> torch.Tensor:
    """CSR offsets [len(arrays) + 1] of the concatenation of ``arrays``."""
    lengths = np.array([len(a) for a in arrays], dtype=np.int64)
    return torch.from_numpy(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))


def _users(rows: Sequence[dict]) -> torch.Tensor:
    return torch.tensor([int(r["user"]) for r in rows], dtype=torch.int64)


__all__ = ["CollabBatch", "Collator", "ContentBatch", "RecBatch"]
