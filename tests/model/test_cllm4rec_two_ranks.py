"""CLLM4Rec on 2 gloo ranks with partitioned tables and the item-parallel scorer, one rank EMPTY.

Checks the model's collective discipline: every loss and the evaluation path run to completion
(no rank blocked in a collective) when one rank has no rows, and rank 0's values equal the
single-process dense model's on the same batch.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from helpers import tiny_model_cfg

from cllm4rec_dist.data.collate import Collator
from cllm4rec_dist.distributed.item_parallel import ItemParallelScorer
from cllm4rec_dist.distributed.partitioned_table import PartitionedTable
from cllm4rec_dist.distributed.spawn import run_ranks
from cllm4rec_dist.model.cllm4rec import CLLM4Rec, IdTables
from cllm4rec_dist.model.heads import DenseItemScorer
from cllm4rec_dist.model.loading import build_backbone, load_tokenizer
from cllm4rec_dist.model.prompts import DEFAULT_TEMPLATES, PromptBuilder
from cllm4rec_dist.model.tables import DenseTable

N_USERS, N_ITEMS, H = 5, 7, 32
HISTORIES = {0: [0, 1, 2, 3], 1: [4], 3: [5, 6, 0]}


def _batches(collator: Collator, empty: bool) -> dict:
    collab = [{"user": u, "items": np.array(h)} for u, h in HISTORIES.items()]
    content = [
        {"kind": 0, "user": 1, "item": 2, "text": "great product, works well."},
        {"kind": 1, "user": -1, "item": 6, "text": "a small red lamp."},
    ]
    rec = [
        {"user": u, "train": np.array(h), "val": np.array([(u + 2) % N_ITEMS]), "test": []}
        for u, h in HISTORIES.items()
    ]
    if empty:
        collab, content, rec = [], [], []
    return {
        "collaborative_loss": collator.collate_collab(collab),
        "content_loss": collator.collate_content(content),
        "recommendation_loss": collator.collate_rec_train(rec, np.random.default_rng(0)),
        "eval": collator.collate_rec_eval(rec, "val"),
    }


def _run(model: CLLM4Rec, batches: dict) -> dict:
    out = {}
    for method in ("collaborative_loss", "content_loss", "recommendation_loss"):
        result = getattr(model, method)(batches[method])
        result.loss.backward()
        out[method] = result.loss.detach()
    ev = batches["eval"]
    with torch.no_grad():
        vectors = model.user_vectors(ev)
        out["topk"] = model.item_scorer.topk(vectors, 3, ev.exclude_offsets, ev.exclude_items)
    return out


def _rank(rank: int, world_size: int, tokenizer_file: str) -> bytes:
    # Forked from a parent that already ran OpenMP regions: one thread avoids a hang in the child.
    torch.set_num_threads(1)
    tokenizer = load_tokenizer(tiny_model_cfg(), tokenizer_file)
    collator = Collator(
        PromptBuilder(tokenizer, DEFAULT_TEMPLATES, N_USERS, N_ITEMS),
        max_items=8,
        max_text_tokens=16,
    )
    sizes = [N_USERS, N_ITEMS, N_USERS, N_ITEMS]
    tables = IdTables(*(PartitionedTable(n, H, seed=k, std=0.1) for k, n in enumerate(sizes)))
    backbone = build_backbone(tiny_model_cfg(), vocab_size=len(tokenizer))
    model = CLLM4Rec(backbone, tables, ItemParallelScorer(tables.item_collab), lambda_v=0.5)
    result = {"ranks": _run(model, _batches(collator, empty=rank == 1))}
    if rank == 0:
        dense = IdTables(*(DenseTable(n, H, seed=k, std=0.1) for k, n in enumerate(sizes)))
        backbone = build_backbone(tiny_model_cfg(), vocab_size=len(tokenizer))
        reference = CLLM4Rec(backbone, dense, DenseItemScorer(dense.item_collab), lambda_v=0.5)
        result["dense"] = _run(reference, _batches(collator, empty=False))
    buf = io.BytesIO()
    torch.save(result, buf)  # bytes, not tensors, cross the process boundary
    return buf.getvalue()


@pytest.mark.distributed
def test_two_ranks_one_empty_match_the_dense_model(tokenizer_file):
    raw = run_ranks(_rank, 2, str(tokenizer_file), timeout=240)
    rank0, rank1 = (torch.load(io.BytesIO(b), weights_only=False) for b in raw)
    for method in ("collaborative_loss", "content_loss", "recommendation_loss"):
        torch.testing.assert_close(rank0["ranks"][method], rank0["dense"][method])
        assert float(rank1["ranks"][method]) == 0.0
    scores, items = rank0["ranks"]["topk"]
    torch.testing.assert_close(scores, rank0["dense"]["topk"][0])
    assert torch.equal(items, rank0["dense"]["topk"][1])
    assert rank1["ranks"]["topk"][1].shape == (0, 3)
