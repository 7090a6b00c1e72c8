"""``Recommender``: a trained model as users call it, loaded from an export alone.

It rebuilds what ``launchers/predict.py`` runs at one rank, from the export's files only
(``export.py``: tables, backbone, tokenizer, id maps, prompt templates, seen items): the same
``PromptBuilder`` and ``Collator`` make the recommendation prompt (``<user> has interacted with
<train items>, <user> will interact with``), the model's last hidden state is the user's vector,
and the same masked top-K kernel (``ops/topk.py``, through ``DenseItemScorer``) ranks every
item with the user's train and validation items masked, as predict masks them by default
(``predict.split=test``), and items without a trained row (cold ones not inferred) never ranked.

A new user (``histories=``) has no row: its prompt's user token takes one extra row, the mean of
the trained users' rows (where ``launchers/fold_in.py`` starts before fitting a row for them), so
the model reads them through their items. That row sits after the trained ones (index U), which
leaves every trained user's prompt and score unchanged.

On a CPU with bf16 products in hardware, ``recommend`` ranks in two passes
(``ops/topk.masked_topk_prefiltered``): a bf16 copy of the item head (half the bytes that bound
a small batch over a large catalog) keeps a few candidates beyond k, whose fp32 scores are then
ranked; the result is the fp32 kernel's (a user it cannot certify goes through that kernel).
``prefilter=False`` turns it off; the copy costs 2 bytes per item and dimension.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from omegaconf import OmegaConf
from torch import Tensor

from cllm4rec_dist.config import ModelConfig
from cllm4rec_dist.data.collate import Collator
from cllm4rec_dist.export import (
    FORMAT_VERSION,
    ExportMeta,
    ExportWriter,
    ServingAssets,
    load_export,
    read_assets,
    read_meta,
    table_rows,
)
from cllm4rec_dist.model.backbone import Backbone
from cllm4rec_dist.model.cllm4rec import CLLM4Rec, IdTables
from cllm4rec_dist.model.heads import DenseItemScorer
from cllm4rec_dist.model.loading import build_backbone
from cllm4rec_dist.model.prompts import PromptBuilder
from cllm4rec_dist.model.tables import DenseTable
from cllm4rec_dist.ops.topk import masked_topk, masked_topk_prefiltered, prefilter_supported

# The marker command of a directory save_pretrained writes (cli/outputs.py).
COMMAND = "save_pretrained"
TABLE_NAMES = ("user_collab", "item_collab", "user_content", "item_content")

Result = tuple[list[str], list[float]]


class UnknownIdError(KeyError):
    """A raw user or item id the export's id maps do not hold."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def _index(ids: pa.Array) -> dict[str, int]:
    return {raw: i for i, raw in enumerate(ids.to_pylist())}


class Recommender:
    """Top-K recommendations, similar items and vectors of an exported CLLM4Rec model.

    Thread-safe: one call scores at a time (the top-K kernel sets torch's process-wide thread
    count while it runs).
    """

    def __init__(
        self,
        backbone: Backbone,
        tables: dict[str, DenseTable],
        assets: ServingAssets,
        meta: ExportMeta,
        *,
        batch_size: int = 256,
        prefilter: bool | None = None,
    ):
        self.meta, self.assets, self.batch_size = meta, assets, batch_size
        # None: where bf16 products run in hardware (see the module docstring).
        self.prefilter = prefilter_supported() if prefilter is None else bool(prefilter)
        self._items_bf16: tuple[Tensor, float] | None = None
        self.tables = tables
        users, items = tables["user_collab"], tables["item_collab"]
        self.num_users, self.num_items = users.num_rows, items.num_rows
        history_offsets = assets.history[0]
        trained = (history_offsets[1:] > history_offsets[:-1]).nonzero().flatten()
        source = users.weight[trained] if len(trained) else users.weight
        mean = source.detach().mean(0, keepdim=True)
        # One more user row: the new users' (see the module docstring).
        serving_users = DenseTable(self.num_users + 1, users.dim)
        with torch.no_grad():
            serving_users.weight.copy_(torch.cat([users.weight.detach(), mean]))
        serving_users.requires_grad_(False)
        items.requires_grad_(False)
        backbone.requires_grad_(False)
        id_tables = IdTables(serving_users, items, serving_users, items)
        self.scorer = DenseItemScorer(items)
        trained = meta.model or {}  # the training config's model section
        self.model = CLLM4Rec(
            backbone, id_tables, self.scorer, lambda_v=0.0,
            id_skip=bool(trained.get("id_skip", False)),
            rec_pool=trained.get("rec_pool", "last"),
            lm_scale=float(trained.get("lm_scale", 1.0)),
        ).eval()  # fmt: skip
        prompts = PromptBuilder(
            assets.tokenizer,
            assets.templates,
            self.num_users + 1,
            self.num_items,
            vocab_size=meta.vocab_size,
            bos_id=assets.bos_id,
        )
        # Text budgets do not matter here: only recommendation prompts are built.
        self.collator = Collator(prompts, max_items=assets.max_items, max_text_tokens=1)
        self.user_ids, self.item_ids = assets.user_ids.to_pylist(), assets.item_ids.to_pylist()
        self._user_index, self._item_index = _index(assets.user_ids), _index(assets.item_ids)
        self._lock = threading.Lock()
        self.device = torch.device("cpu")

    # ----- loading and saving -----------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: str | Path, device: str = "cpu", **kwargs: Any) -> Recommender:
        """Load an export (``<run>/best``, ``<run>/export``, an infer output, or a directory
        ``save_pretrained`` wrote). Only safetensors, JSON and Parquet are read; ExportError
        (one line naming the file) when one is missing, truncated or of another format."""
        path = Path(path)
        meta = read_meta(path)
        assets = read_assets(path, meta)
        model_cfg = OmegaConf.to_object(
            OmegaConf.merge(OmegaConf.structured(ModelConfig), meta.model or {})
        )
        backbone = build_backbone(model_cfg, vocab_size=len(assets.tokenizer))
        dim = backbone.hidden_size
        rows = {"user": int(meta.num_users or 0), "item": int(meta.num_items or 0)}
        tables = {
            name: DenseTable(rows[name.split("_")[0]], dim)
            for name in TABLE_NAMES
            if table_rows(path, name) is not None or name.endswith("_collab")
        }
        load_export(path, backbone, tables)
        rec = cls(backbone, tables, assets, meta, **kwargs)
        return rec.to(device)

    def to(self, device: str | torch.device) -> Recommender:
        self.model.to(device)
        self.device = torch.device(device)
        return self

    def save_pretrained(self, path: str | Path) -> Path:
        """Write this model as an export (the same layout ``from_pretrained`` reads) into
        ``path``, which must be absent, empty, or an earlier ``save_pretrained`` output."""
        meta = dataclasses.replace(
            self.meta, extra=dict(self.meta.extra), inferred=list(self.meta.inferred),
            format_version=FORMAT_VERSION, backbone_state=True,
        )  # fmt: skip
        backbone = self.model.backbone
        with ExportWriter(path, COMMAND) as writer:
            for name, table in self.tables.items():
                writer.write_table(name, table.weight)
            writer.write_backbone(backbone.state_dict())
            writer.write_assets(self.assets, meta)
            return writer.commit(meta)

    # ----- queries ----------------------------------------------------------------------------
    def recommend(
        self,
        users: Sequence[str] | None = None,
        histories: Sequence[Sequence[str]] | None = None,
        k: int = 20,
        exclude_seen: bool = True,
    ) -> list[Result]:
        """Top-``k`` (raw item ids, float scores), best first, for each of ``users`` (raw ids of
        trained users) or each of ``histories`` (lists of raw item ids of new users). Seen items
        (a user's train and validation items, a history's items) are masked unless
        ``exclude_seen=False``; fewer than k items come back only when fewer may be ranked."""
        rows = self._rows(users, histories)
        k = self._check_k(k)
        out: list[Result] = []
        with self._lock, torch.no_grad():
            for lo in range(0, len(rows), self.batch_size):
                chunk = rows[lo : lo + self.batch_size]
                batch = self.collator.collate_rec_eval(chunk, "test").to(self.device)
                offsets, items = self._exclusions(batch, exclude_seen)
                scores, index = self._topk(self.model.user_vectors(batch), k, offsets, items)
                out += self._results(scores, index)
        return out

    def similar_items(self, items: Sequence[str], k: int = 20) -> list[Result]:
        """The ``k`` items nearest to each of ``items`` by cosine similarity of their rows in
        the item table (the item head), the item itself and unranked items excluded."""
        index = self._indices(items, self._item_index, "item")
        k = self._check_k(k)
        unranked = self.assets.unranked.to(self.device)
        with self._lock, torch.no_grad():
            weight = torch.nn.functional.normalize(self.item_vectors().to(self.device), dim=1)
            excludes = [torch.cat([torch.tensor([i], device=self.device), unranked]) for i in index]
            offsets = torch.tensor([0, *np.cumsum([len(e) for e in excludes])], device=self.device)
            scores, top = masked_topk(weight[index], weight, k, offsets, torch.cat(excludes))
        return self._results(scores, top)

    def item_vectors(self) -> Tensor:
        """[I, H] fp32: the item head (rows of ``item_collab``); row i is ``item_ids[i]``. A user
        vector's score for item i is their dot product."""
        return self.tables["item_collab"].weight.detach()

    def user_vectors(
        self, users: Sequence[str] | None = None, histories: Sequence[Sequence[str]] | None = None
    ) -> Tensor:
        """[n, H] fp32: the vectors ``recommend`` scores items with, for ``users`` or
        ``histories`` (as in ``recommend``)."""
        rows = self._rows(users, histories)
        parts = []
        with self._lock, torch.no_grad():
            for lo in range(0, len(rows), self.batch_size):
                batch = self.collator.collate_rec_eval(rows[lo : lo + self.batch_size], "test")
                parts.append(self.model.user_vectors(batch.to(self.device)).cpu())
        return torch.cat(parts) if parts else torch.zeros(0, self.model.backbone.hidden_size)

    def has_user(self, raw: str) -> bool:
        return str(raw) in self._user_index

    def has_item(self, raw: str) -> bool:
        return str(raw) in self._item_index

    # ----- internals --------------------------------------------------------------------------
    def _topk(
        self, vectors: Tensor, k: int, offsets: Tensor, items: Tensor
    ) -> tuple[Tensor, Tensor]:
        """The masked top-k of ``vectors`` against the item head: the scorer's kernel, or on a
        CPU with ``prefilter`` its two-pass form over a bf16 copy made at the first call."""
        if not self.prefilter or self.device.type != "cpu":
            return self.scorer.topk(vectors, k, offsets, items)
        weight = self.item_vectors()
        if self._items_bf16 is None:
            self._items_bf16 = (weight.bfloat16(), float(weight.norm(dim=1).max()))
        items_bf16, norm_max = self._items_bf16
        return masked_topk_prefiltered(
            vectors, weight, items_bf16, k, offsets, items,
            item_norm_max=norm_max, item_chunk=self.scorer.topk_chunk,
        )  # fmt: skip

    def _check_k(self, k: int) -> int:
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        return min(int(k), self.num_items)

    def _indices(self, raw: Sequence[str], index: dict[str, int], what: str) -> list[int]:
        if isinstance(raw, str):
            raise TypeError(f"{what}s must be a list of raw ids, not one string")
        out = []
        for r in raw:
            if str(r) not in index:
                raise UnknownIdError(f"unknown {what} id {str(r)!r}")
            out.append(index[str(r)])
        return out

    def _rows(
        self, users: Sequence[str] | None, histories: Sequence[Sequence[str]] | None
    ) -> list[dict]:
        """Recommendation rows as predict builds them: ``train`` = the prompt's items, ``val``
        masked with them, a one-item placeholder ``test`` target (unused) keeping each row."""
        if (users is None) == (histories is None):
            raise ValueError("give exactly one of users= or histories=")
        target = np.zeros(1, np.int64)
        if users is not None:
            (h_off, h_items), (v_off, v_items) = self.assets.history, self.assets.val
            return [
                {
                    "user": u,
                    "train": h_items[h_off[u] : h_off[u + 1]].numpy(),
                    "val": v_items[v_off[u] : v_off[u + 1]].numpy(),
                    "test": target,
                }
                for u in self._indices(users, self._user_index, "user")
            ]
        rows = []
        for history in histories:
            items = np.asarray(self._indices(history, self._item_index, "item"), np.int64)
            rows.append({"user": self.num_users, "train": items, "val": items[:0], "test": target})
        return rows

    def _exclusions(self, batch: Any, exclude_seen: bool) -> tuple[Tensor, Tensor]:
        """The batch's seen-item CSR (or none) with the unranked items added to every row."""
        n = int(batch.users.numel())
        unranked = self.assets.unranked.to(self.device)
        if exclude_seen:
            offsets, items = batch.exclude_offsets, batch.exclude_items
        else:
            offsets = torch.zeros(n + 1, dtype=torch.int64, device=self.device)
            items = offsets[:0]
        if len(unranked) == 0:
            return offsets, items
        rows = [torch.cat([items[offsets[r] : offsets[r + 1]], unranked]) for r in range(n)]
        counts = torch.tensor([len(r) for r in rows], dtype=torch.int64, device=self.device)
        return torch.cat([counts.new_zeros(1), counts.cumsum(0)]), torch.cat(rows)

    def _results(self, scores: Tensor, index: Tensor) -> list[Result]:
        out = []
        for s, i in zip(scores.cpu().tolist(), index.cpu().tolist()):
            kept = [(self.item_ids[j], v) for j, v in zip(i, s) if j >= 0]
            out.append(([j for j, _ in kept], [float(v) for _, v in kept]))
        return out


__all__ = ["Recommender", "UnknownIdError"]
