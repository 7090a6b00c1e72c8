"""CLLM4Rec losses: parity with a hand-built HF forward, mutual regularization, call order, training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import tiny_model_cfg
from torch import nn

from cllm4rec_dist.data.collate import Collator
from cllm4rec_dist.model.cllm4rec import CLLM4Rec, IdTables
from cllm4rec_dist.model.heads import DenseItemScorer
from cllm4rec_dist.model.loading import build_backbone
from cllm4rec_dist.model.prompts import DEFAULT_TEMPLATES, PromptBuilder
from cllm4rec_dist.model.tables import DenseTable

N_USERS, N_ITEMS, H = 4, 8, 32
HISTORIES = {0: [0, 1, 2, 3, 4, 5, 6, 7], 1: [1], 2: [3, 4], 3: [0, 5]}
TEXTS = {0: "a fine book about the history of music.", 1: "great.", 2: "likes music."}


class Recorder(nn.Module):
    """A table that logs each call (name, number of ids) into a shared list."""

    def __init__(self, table: DenseTable, name: str, log: list):
        super().__init__()
        self.table, self.name, self.log = table, name, log
        self.num_rows, self.dim = table.num_rows, table.dim

    def forward(self, ids):
        self.log.append((self.name, ids.numel()))
        return self.table(ids)


def make_model(
    tokenizer, lambda_v=1.0, log=None, mode="frozen", seed=0, id_skip=False, rec_pool="last"
):
    backbone = build_backbone(tiny_model_cfg(mode=mode, seed=seed), vocab_size=len(tokenizer))
    names = ["user_collab", "item_collab", "user_content", "item_content"]
    tables = [
        DenseTable(n, H, seed=seed + k, std=0.1)
        for k, n in enumerate([N_USERS, N_ITEMS, N_USERS, N_ITEMS])
    ]
    if log is not None:
        tables = [Recorder(t, name, log) for t, name in zip(tables, names)]
    id_tables = IdTables(*tables)
    dense_items = tables[1].table if log is not None else tables[1]
    scorer = DenseItemScorer(dense_items)
    return CLLM4Rec(
        backbone, id_tables, scorer, lambda_v=lambda_v, id_skip=id_skip, rec_pool=rec_pool
    )


@pytest.fixture(params=[False, True], ids=["rows", "packed"])
def collator(tokenizer, request):
    """Both layouts: the parity tests below must hold for each."""
    builder = PromptBuilder(tokenizer, DEFAULT_TEMPLATES, N_USERS, N_ITEMS)
    return Collator(builder, max_items=8, max_text_tokens=16, pack=request.param)


@pytest.fixture()
def packed_collator(tokenizer):
    """The default (packed) layout, for tests where the layout does not matter."""
    builder = PromptBuilder(tokenizer, DEFAULT_TEMPLATES, N_USERS, N_ITEMS)
    return Collator(builder, max_items=8, max_text_tokens=16)


def collab_rows():
    return [{"user": u, "items": np.array(items)} for u, items in HISTORIES.items()]


def content_rows():
    return [
        {"kind": 0, "user": 0, "item": 1, "text": TEXTS[0]},
        {"kind": 1, "user": -1, "item": 4, "text": TEXTS[1]},
        {"kind": 2, "user": 3, "item": -1, "text": TEXTS[2]},
    ]


def rec_rows():
    return [
        {
            "user": u,
            "train": np.array(items),
            "val": np.array([(u + 4) % N_ITEMS]),
            "test": np.array([]),
        }
        for u, items in HISTORIES.items()
    ]


def manual_inputs(model: CLLM4Rec, input_ids: torch.Tensor, view: str) -> torch.Tensor:
    """Embeddings built position by position from the tables (the obvious, slow way)."""
    v = model.vocab_size
    user_t, item_t = model.tables.view(view)
    rows = []
    for token in input_ids.flatten().tolist():
        if token < v:
            rows.append(model.backbone.lm.get_input_embeddings().weight[token])
        elif token < v + N_USERS:
            rows.append(user_t.weight[token - v])
        else:
            rows.append(item_t.weight[token - v - N_USERS])
    return torch.stack(rows).reshape(*input_ids.shape, H)


def manual_reg(model, batch_ids, this: str, other: str, batch_size: int, extra_items=None):
    v = model.vocab_size
    users = torch.unique(batch_ids[(batch_ids >= v) & (batch_ids < v + N_USERS)] - v)
    items = batch_ids[batch_ids >= v + N_USERS] - v - N_USERS
    if extra_items is not None:
        items = torch.cat([items, extra_items])
    items = torch.unique(items)
    (tu, ti), (ou, oi) = model.tables.view(this), model.tables.view(other)
    sq = (tu.weight[users] - ou.weight[users]).pow(2).sum()
    sq = sq + (ti.weight[items] - oi.weight[items]).pow(2).sum()
    return 0.5 * model.lambda_v * sq / batch_size


def test_collaborative_loss_matches_manual_forward(tokenizer, collator):
    model = make_model(tokenizer, lambda_v=0.7)
    batch = collator.collate_collab(collab_rows())
    out = model.collaborative_loss(batch)
    lm = model.backbone.lm
    hidden = lm.base_model(
        inputs_embeds=manual_inputs(model, batch.input_ids, "collab"),
        position_ids=batch.position_ids,
    ).last_hidden_state.reshape(-1, H)[batch.target_index]
    logits = hidden @ model.tables.item_collab.weight.T
    ce = nn.functional.cross_entropy(logits, batch.target_items)
    reg = manual_reg(model, batch.input_ids, "collab", "content", 4, batch.target_items)
    torch.testing.assert_close(out.terms["item_ce"], ce.detach())
    torch.testing.assert_close(out.terms["reg"], reg.detach())
    torch.testing.assert_close(out.loss, ce + reg)
    assert out.tokens == int(batch.attention_mask.sum())


def test_content_loss_matches_manual_forward(tokenizer, collator):
    model = make_model(tokenizer, lambda_v=0.3)
    batch = collator.collate_content(content_rows())
    out = model.content_loss(batch)
    lm = model.backbone.lm
    logits = lm(
        inputs_embeds=manual_inputs(model, batch.input_ids, "content"),
        position_ids=batch.position_ids,
    ).logits.reshape(-1, lm.config.vocab_size)[batch.target_index]
    ce = nn.functional.cross_entropy(logits, batch.target_words)
    reg = manual_reg(model, batch.input_ids, "content", "collab", 3)
    torch.testing.assert_close(out.terms["word_ce"], ce.detach())
    torch.testing.assert_close(out.loss, ce + reg)


def test_recommendation_loss_and_user_vectors(tokenizer, collator):
    model = make_model(tokenizer, lambda_v=0.5)
    batch = collator.collate_rec_eval(rec_rows(), "val")
    out = model.recommendation_loss(batch)
    vectors = model.user_vectors(batch)
    assert vectors.shape == (4, H) and vectors.dtype == torch.float32
    hidden = model.backbone.lm.base_model(
        inputs_embeds=manual_inputs(model, batch.input_ids, "collab"),
        position_ids=batch.position_ids,
    ).last_hidden_state.reshape(-1, H)[batch.last_index]
    torch.testing.assert_close(vectors, hidden)
    log_probs = torch.log_softmax(hidden @ model.tables.item_collab.weight.T, -1)
    nll = -log_probs[torch.arange(4), batch.target_items].mean()
    torch.testing.assert_close(out.terms["nll"], nll.detach())
    reg = manual_reg(model, batch.input_ids, "collab", "content", 4)
    torch.testing.assert_close(out.loss, nll + reg)


def test_rec_pool_mean_averages_the_item_predicting_positions(tokenizer, collator):
    last = make_model(tokenizer, lambda_v=0.5)
    pooled = make_model(tokenizer, lambda_v=0.5, rec_pool="mean")
    pooled.load_state_dict(last.state_dict())
    batch = collator.collate_rec_eval(rec_rows(), "val")
    hidden = last.backbone.lm.base_model(
        inputs_embeds=manual_inputs(last, batch.input_ids, "collab"),
        position_ids=batch.position_ids,
    ).last_hidden_state.reshape(-1, H)
    offsets = batch.pool_offsets.tolist()
    expected = torch.stack(
        [hidden[batch.pool_index[a:b]].mean(0) for a, b in zip(offsets, offsets[1:])]
    )
    torch.testing.assert_close(pooled.user_vectors(batch), expected)
    log_probs = torch.log_softmax(expected @ pooled.tables.item_collab.weight.T, -1)
    nll = -log_probs[torch.arange(4), batch.target_items].mean()
    torch.testing.assert_close(pooled.recommendation_loss(batch).terms["nll"], nll.detach())


def manual_id_mean(model, input_ids, position_ids, view="collab"):
    """Each position's mean over the ID rows at or before it in its document, one by one."""
    inputs = manual_inputs(model, input_ids, view)
    is_id = input_ids >= model.vocab_size
    out = torch.zeros_like(inputs)
    for r in range(input_ids.shape[0]):
        rows = []
        for t in range(input_ids.shape[1]):
            if position_ids is not None and int(position_ids[r, t]) == 0:
                rows = []
            if is_id[r, t]:
                rows.append(inputs[r, t])
            if rows:
                out[r, t] = torch.stack(rows).mean(0)
    return out


def test_id_skip_adds_each_documents_running_id_mean(tokenizer, collator):
    plain = make_model(tokenizer, lambda_v=0.5)
    skip = make_model(tokenizer, lambda_v=0.5, id_skip=True)
    skip.load_state_dict(plain.state_dict())
    batch = collator.collate_rec_eval(rec_rows(), "val")
    mean = manual_id_mean(plain, batch.input_ids, batch.position_ids).reshape(-1, H)
    expected = plain.user_vectors(batch) + mean[batch.last_index]
    torch.testing.assert_close(skip.user_vectors(batch), expected)
    # The collaborative loss reads every target position through the skip.
    cbatch = collator.collate_collab(collab_rows())
    hidden = plain.backbone.lm.base_model(
        inputs_embeds=manual_inputs(plain, cbatch.input_ids, "collab"),
        position_ids=cbatch.position_ids,
    ).last_hidden_state
    hidden = hidden + manual_id_mean(plain, cbatch.input_ids, cbatch.position_ids)
    at = hidden.reshape(-1, H)[cbatch.target_index]
    ce = torch.nn.functional.cross_entropy(at @ plain.tables.item_collab.weight.T,
                                           cbatch.target_items)  # fmt: skip
    torch.testing.assert_close(skip.collaborative_loss(cbatch).terms["item_ce"], ce)
    # The content view (words through the LM head) has no skip.
    tbatch = collator.collate_content(content_rows())
    torch.testing.assert_close(skip.content_loss(tbatch).loss, plain.content_loss(tbatch).loss)


def test_lm_scale_zero_reads_the_skip_alone_without_running_the_lm(tokenizer, collator):
    model = make_model(tokenizer, lambda_v=0.5, id_skip=True)
    model.lm_scale = 0.0
    calls = []
    model.backbone.register_forward_hook(lambda *_: calls.append(1))
    batch = collator.collate_rec_eval(rec_rows(), "val")
    mean = manual_id_mean(model, batch.input_ids, batch.position_ids).reshape(-1, H)
    torch.testing.assert_close(model.user_vectors(batch), mean[batch.last_index])
    cbatch = collator.collate_collab(collab_rows())
    mean = manual_id_mean(model, cbatch.input_ids, cbatch.position_ids).reshape(-1, H)
    ce = torch.nn.functional.cross_entropy(
        mean[cbatch.target_index] @ model.tables.item_collab.weight.T, cbatch.target_items
    )
    torch.testing.assert_close(model.collaborative_loss(cbatch).terms["item_ce"], ce)
    assert not calls
    model.content_loss(collator.collate_content(content_rows()))  # words still need the LM
    assert calls


def test_packed_and_row_batches_give_the_same_losses(tokenizer):
    builder = PromptBuilder(tokenizer, DEFAULT_TEMPLATES, N_USERS, N_ITEMS)
    rows_c, packed_c = (
        Collator(builder, max_items=8, max_text_tokens=16, pack=pack, row_length=24)
        for pack in (False, True)
    )
    model = make_model(tokenizer)
    cases = [
        ("collaborative_loss", lambda c: c.collate_collab(collab_rows())),
        ("content_loss", lambda c: c.collate_content(content_rows())),
        ("recommendation_loss", lambda c: c.collate_rec_eval(rec_rows(), "val")),
    ]
    for method, collate in cases:
        unpacked, packed = collate(rows_c), collate(packed_c)
        assert packed.input_ids.shape[0] < unpacked.input_ids.shape[0], method
        a, b = getattr(model, method)(unpacked), getattr(model, method)(packed)
        torch.testing.assert_close(a.loss, b.loss)
        assert a.tokens == b.tokens
    batch_a, batch_b = (c.collate_rec_eval(rec_rows(), "val") for c in (rows_c, packed_c))
    torch.testing.assert_close(model.user_vectors(batch_a), model.user_vectors(batch_b))


def test_regularizer_gradient_stops_at_the_other_tables(tokenizer, packed_collator):
    collator = packed_collator
    batch = collator.collate_collab(collab_rows())
    grads = {}
    for lam in (0.0, 2.0):
        model = make_model(tokenizer, lambda_v=lam)
        model.collaborative_loss(batch).loss.backward()
        assert model.tables.user_content.weight.grad is None
        assert model.tables.item_content.weight.grad is None
        grads[lam] = model.tables.user_collab.weight.grad.clone()
    # d reg / d z_collab[u] = lambda * (z_collab[u] - z_content[u]) / B for users in the batch
    t = model.tables
    want = 2.0 * (t.user_collab.weight - t.user_content.weight).detach() / 4
    torch.testing.assert_close(grads[2.0] - grads[0.0], want)


def test_table_call_sequence_is_fixed(tokenizer, packed_collator):
    collator = packed_collator
    rng = np.random.default_rng(0)
    batches = {
        "collaborative_loss": (
            collator.collate_collab(collab_rows(), rng),
            collator.collate_collab([]),
        ),
        "content_loss": (collator.collate_content(content_rows()), collator.collate_content([])),
        "recommendation_loss": (
            collator.collate_rec_train(rec_rows(), rng),
            collator.collate_rec_train([], rng),
        ),
        "user_vectors": (collator.collate_rec_eval(rec_rows()), collator.collate_rec_eval([])),
    }
    collab = ["user_collab", "item_collab", "user_content", "item_content"]
    expected = {
        "collaborative_loss": collab,
        "content_loss": collab[2:] + collab[:2],
        "recommendation_loss": collab,
        "user_vectors": collab[:2],
    }
    for lam in (0.0, 1.0):
        log: list = []
        model = make_model(tokenizer, lambda_v=lam, log=log)
        for method, (full, empty) in batches.items():
            for batch in (full, empty):
                log.clear()
                result = getattr(model, method)(batch)
                assert [name for name, _ in log] == expected[method], (method, lam)
                if method != "user_vectors":
                    assert torch.isfinite(result.loss)
                    result.loss.backward()  # empty batches too: every rank runs backward


def test_table_dims_must_match_backbone(tokenizer):
    backbone = build_backbone(tiny_model_cfg(), vocab_size=len(tokenizer))
    tables = IdTables(*(DenseTable(n, 16) for n in (N_USERS, N_ITEMS, N_USERS, N_ITEMS)))
    with pytest.raises(ValueError, match="dim"):
        CLLM4Rec(backbone, tables, DenseItemScorer(tables.item_collab), 1.0)
    with pytest.raises(ValueError, match="item tables"):
        IdTables(
            DenseTable(N_USERS, H),
            DenseTable(N_ITEMS, H),
            DenseTable(N_USERS, H),
            DenseTable(N_ITEMS + 1, H),
        )


# A random-init frozen backbone can only move the ID embeddings, which barely help to predict
# review words; item-level losses fall fast in every mode.
CONTENT_DROP = {"frozen": 0.995, "lora": 0.98, "full": 0.7}


@pytest.mark.parametrize("mode", ["frozen", "lora", "full"])
def test_few_sgd_steps_decrease_every_loss(tokenizer, packed_collator, mode):
    collator = packed_collator
    model = make_model(tokenizer, lambda_v=0.1, mode=mode)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.05)
    stages = {
        "content": lambda: model.content_loss(collator.collate_content(content_rows())),
        "collaborative": lambda: model.collaborative_loss(collator.collate_collab(collab_rows())),
        "recommendation": lambda: model.recommendation_loss(
            collator.collate_rec_eval(rec_rows(), "val")
        ),
    }
    for name, loss_fn in stages.items():
        losses = []
        for _ in range(15):
            out = loss_fn()
            opt.zero_grad()
            out.loss.backward()
            opt.step()
            losses.append(float(out.loss.detach()))
        factor = CONTENT_DROP[mode] if name == "content" else 0.7
        assert np.mean(losses[-3:]) < factor * losses[0], (name, losses)
