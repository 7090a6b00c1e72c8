"""CLLM4Rec: a causal LM whose user / item tokens come from two pairs of ID tables.

The collaborative LM reads the ``*_collab`` tables and predicts items with a head tied to
``item_collab`` (the injected ``item_scorer``); the content LM reads the ``*_content`` tables and
predicts words with the backbone's LM head. Mutual regularization pulls each pair together.

Tables and scorer are injected and may be collective (row-partitioned / item-parallel): every
method calls them in a fixed order, unconditionally, even with zero ids, so all ranks issue the
same sequence of collectives whatever their batch holds.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from cllm4rec_dist.model.backbone import Backbone, BackboneOutput
from cllm4rec_dist.model.batches import CollabBatch, ContentBatch, RecBatch
from cllm4rec_dist.model.heads import word_cross_entropy
from cllm4rec_dist.model.interfaces import IdTable, ItemScorer
from cllm4rec_dist.model.options import RecPool
from cllm4rec_dist.model.text_rows import segment_mean

Batch = CollabBatch | ContentBatch | RecBatch


@dataclass
class LossOutput:
    loss: Tensor  # scalar: mean task loss + regularization
    terms: dict[str, Tensor]  # detached scalars for logging; same keys on every rank
    tokens: int  # non-padding input tokens of the batch (throughput)


class IdTables(nn.Module):
    """The four ID tables. nn.Module tables (DenseTable) register as submodules; other injected
    objects are kept as plain attributes."""

    def __init__(
        self,
        user_collab: IdTable,
        item_collab: IdTable,
        user_content: IdTable,
        item_content: IdTable,
    ):
        super().__init__()
        self.user_collab, self.item_collab = user_collab, item_collab
        self.user_content, self.item_content = user_content, item_content
        if user_collab.num_rows != user_content.num_rows:
            raise ValueError("collaborative and content user tables differ in rows")
        if item_collab.num_rows != item_content.num_rows:
            raise ValueError("collaborative and content item tables differ in rows")

    def view(self, name: str) -> tuple[IdTable, IdTable]:
        """ "collab" | "content" -> (user table, item table) of that view."""
        if name == "collab":
            return self.user_collab, self.item_collab
        if name == "content":
            return self.user_content, self.item_content
        raise ValueError(f"table view {name!r} is not collab or content")


@dataclass
class _IdLookup:
    """The ID tokens of a batch, looked up once per table (unique ids)."""

    users: Tensor  # [Nu] unique user indices
    user_rows: Tensor  # [Nu, H] their rows in this view's table (with grad)
    items: Tensor  # [Ni]
    item_rows: Tensor  # [Ni, H]


class CLLM4Rec(nn.Module):
    """Composes backbone, tables and item scorer into the three CLLM4Rec losses.

    vocab_size: V of the unified token space (defaults to the backbone's embedding rows; it must
    equal the PromptBuilder's).

    id_skip: the collaborative view's hidden state at each position gets the mean of the ID rows
    read so far in its document added (``causal_id_mean``). A pretrained LM's last hidden state
    is 30 layers away from the ID rows it read; the skip gives the tied item head the item-to-item
    and user-to-item products of the rows themselves, and the LM adds to that (docs/model.md).
    Off for the tiny backbone, whose identity paths already carry the rows to the top.
    lm_scale: with id_skip, the LM's hidden states are multiplied by it before the skip is
    added: SmolLM2's last hidden states have norm ~32 against the skip's ~2, and at 1 its
    logits drown the rows' products (docs/results.md). At 0 the collaborative view is the skip
    alone and the backbone is not run for it (an ID-only model on the same rows).

    rec_pool: the user vector of a recommendation prompt. ``last``: the hidden state at its last
    position (the paper's). ``mean``: the mean of the hidden states at the positions that predict
    an item (``RecBatch.pool_index``): the collaborative LM trained each of them to predict the
    user's next item, so their mean is an ensemble of predictions it already makes, where the
    last position must learn a new prompt.
    """

    def __init__(
        self,
        backbone: Backbone,
        tables: IdTables,
        item_scorer: ItemScorer,
        lambda_v: float,
        vocab_size: int | None = None,
        id_skip: bool = False,
        rec_pool: RecPool | str = RecPool.last,
        lm_scale: float = 1.0,
    ):
        super().__init__()
        self.id_skip, self.lm_scale = bool(id_skip), float(lm_scale)
        self.rec_pool = RecPool(rec_pool)
        self.backbone, self.tables = backbone, tables
        self.item_scorer = item_scorer
        self.lambda_v = float(lambda_v)
        self.vocab_size = backbone.vocab_size if vocab_size is None else int(vocab_size)
        self.num_users = tables.user_collab.num_rows
        self.num_items = tables.item_collab.num_rows
        for name in ("user_collab", "item_collab", "user_content", "item_content"):
            if getattr(tables, name).dim != backbone.hidden_size:
                raise ValueError(f"table {name} has dim != backbone hidden {backbone.hidden_size}")

    # ----- losses -----------------------------------------------------------------------------
    def collaborative_loss(self, batch: CollabBatch, lm: bool = True) -> LossOutput:
        """Mean item cross-entropy over target positions + reg(collab -> content). ``lm=False``
        (needs id_skip): the ID rows' running mean alone, the backbone not run."""
        # The last item of a document is a target but not an input: add the targets to the ids
        # looked up so that every item of the documents is regularized.
        out, ids = self._forward(batch, "collab", extra_items=batch.target_items, lm=lm)
        ce = self.item_scorer.cross_entropy(
            _gather(out.hidden, batch.target_index), batch.target_items
        )
        task = ce.sum() / max(ce.numel(), 1)
        reg = self._mutual_reg(ids, "content", batch.num_documents)
        return _output(task + reg, {"item_ce": task, "reg": reg}, batch)

    def collaborative_rows_loss(self, batch: CollabBatch) -> LossOutput:
        """``collaborative_loss`` through the skip alone (data/phases.py, collaborative_rows)."""
        if not self.id_skip:
            raise ValueError("the collaborative_rows phase reads the ID skip: model.id_skip=true")
        return self.collaborative_loss(batch, lm=False)

    def content_loss(self, batch: ContentBatch) -> LossOutput:
        """Mean word cross-entropy over main-text targets + reg(content -> collab)."""
        out, ids = self._forward(batch, "content", word_logit_index=batch.target_index)
        ce = word_cross_entropy(out.word_logits, batch.target_words)
        task = ce.sum() / max(ce.numel(), 1)
        reg = self._mutual_reg(ids, "collab", batch.num_documents)
        return _output(task + reg, {"word_ce": task, "reg": reg}, batch)

    def recommendation_loss(self, batch: RecBatch) -> LossOutput:
        """Mean over users of the multinomial NLL of their held-out items + reg(collab -> content)."""
        out, ids = self._forward(batch, "collab")
        hidden = self._user_hidden(out.hidden, batch)
        nll = self.item_scorer.multinomial_nll(hidden, batch.target_offsets, batch.target_items)
        task = nll.sum() / max(nll.numel(), 1)
        reg = self._mutual_reg(ids, "content", batch.num_documents)
        return _output(task + reg, {"nll": task, "reg": reg}, batch)

    def user_vectors(self, batch: RecBatch) -> Tensor:
        """Hidden state at each prompt's last position -> [D, H] fp32, scored against the items."""
        out, _ = self._forward(batch, "collab")
        return self._user_hidden(out.hidden, batch).float()

    # ----- internals --------------------------------------------------------------------------
    def _user_hidden(self, hidden: Tensor, batch: RecBatch) -> Tensor:
        """[R, T, H] hidden states -> [D, H] user vectors (``rec_pool``; ``mean`` gives fp32, which
        the item scorer computes in anyway)."""
        if self.rec_pool == RecPool.last:
            return _gather(hidden, batch.last_index)
        return segment_mean(batch.pool_offsets, _gather(hidden, batch.pool_index))

    def _forward(
        self,
        batch: Batch,
        view: str,
        word_logit_index: Tensor | None = None,
        extra_items: Tensor | None = None,
        lm: bool = True,
    ) -> tuple[BackboneOutput, _IdLookup]:
        """Split the unified ids [R, T] into words / users / items, look the ids up in ``view``'s
        tables (user table first, then item table, each once) and run the backbone.
        extra_items [n]: item indices looked up (and regularized) besides those in the input."""
        v, u, input_ids = self.vocab_size, self.num_users, batch.input_ids
        id_mask = input_ids >= v
        id_vals = input_ids[id_mask]  # row-major, the order Backbone expects for id_embeds
        is_user = id_vals < v + u
        users, user_inv = torch.unique(id_vals[is_user] - v, return_inverse=True)
        input_items = id_vals[~is_user] - v - u
        if extra_items is not None:
            input_items = torch.cat([input_items, extra_items])
        items, item_inv = torch.unique(input_items, return_inverse=True)
        item_inv = item_inv[: int((~is_user).sum())]
        # Out-of-range ids are left to the tables: a partitioned table raises on every rank at
        # once, whereas raising here on one rank would leave the others blocked in a collective.
        user_table, item_table = self.tables.view(view)
        user_rows, item_rows = user_table(users), item_table(items)
        id_embeds = user_rows.new_zeros(id_vals.shape[0], user_rows.shape[-1])
        id_embeds = id_embeds.index_put((is_user,), user_rows[user_inv])
        id_embeds = id_embeds.index_put((~is_user,), item_rows[item_inv])
        lookup = _IdLookup(users, user_rows, items, item_rows)
        if self.id_skip and view == "collab" and (not lm or self.lm_scale == 0.0):
            # The LM's share is zero: its forward (and backward) would be spent on nothing.
            skip = causal_id_mean(id_embeds, id_mask, batch.position_ids)
            return BackboneOutput(hidden=skip, word_logits=None), lookup
        out = self.backbone(
            input_ids,
            id_embeds,
            id_mask,
            batch.attention_mask,
            word_logit_index=word_logit_index,
            position_ids=batch.position_ids,
        )
        if self.id_skip and view == "collab" and input_ids.numel():
            skip = causal_id_mean(id_embeds, id_mask, batch.position_ids)
            out.hidden = self.lm_scale * out.hidden + skip.to(out.hidden.dtype)
        return out, lookup

    def _mutual_reg(self, ids: _IdLookup, other_view: str, num_documents: int) -> Tensor:
        """lambda_v / 2 * sum over the batch's unique user and item ids of
        ||z_this - stopgrad(z_other)||^2, divided by the number of documents D in the batch.

        Computed (and the other tables called) even when lambda_v = 0: the calls are collective.
        """
        user_table, item_table = self.tables.view(other_view)
        with torch.no_grad():
            other_users, other_items = user_table(ids.users), item_table(ids.items)
        squared = (ids.user_rows - other_users).pow(2).sum()
        squared = squared + (ids.item_rows - other_items).pow(2).sum()
        return 0.5 * self.lambda_v * squared / max(num_documents, 1)


def causal_id_mean(id_embeds: Tensor, id_mask: Tensor, position_ids: Tensor | None) -> Tensor:
    """The mean of the ID rows at positions <= t of t's document -> [B, T, H] (zero before the
    first ID token). id_embeds [N_id, H] in id_mask's row-major order; a row holds one document,
    or several when ``position_ids`` [B, T] restarts at 0 (packing)."""
    rows = id_embeds.new_zeros(*id_mask.shape, id_embeds.shape[-1])
    rows = rows.index_put((id_mask,), id_embeds)
    sums = torch.cumsum(rows, dim=1)
    counts = torch.cumsum(id_mask.to(sums.dtype), dim=1)
    if position_ids is not None:
        # Subtract what the row held before each document's first position.
        steps = torch.arange(id_mask.shape[1], device=id_mask.device).expand_as(id_mask)
        start = torch.cummax(torch.where(position_ids == 0, steps, 0), dim=1).values
        before = (start - 1).clamp(min=0)
        has_before = (start > 0).to(sums.dtype)
        sums = sums - sums.gather(1, before.unsqueeze(-1).expand_as(sums)) * has_before[..., None]
        counts = counts - counts.gather(1, before) * has_before
    return sums / counts.clamp(min=1).unsqueeze(-1)


def _gather(hidden: Tensor, flat_index: Tensor) -> Tensor:
    """hidden [R, T, H], flat positions [N] into R*T -> [N, H]."""
    return hidden.reshape(-1, hidden.shape[-1])[flat_index]


def _output(loss: Tensor, terms: dict[str, Tensor], batch: Batch) -> LossOutput:
    return LossOutput(
        loss=loss,
        terms={k: t.detach() for k, t in terms.items()},
        tokens=int(batch.attention_mask.sum()),
    )


__all__ = ["CLLM4Rec", "IdTables", "LossOutput", "causal_id_mean"]
