"""Prompt building and collation: exact token layouts, padding, targets, subsampling, empty batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cllm4rec_dist.data.collate import Collator
from cllm4rec_dist.model.prompts import DEFAULT_TEMPLATES, PromptBuilder

N_USERS, N_ITEMS = 5, 9


@pytest.fixture()
def builder(tokenizer):
    return PromptBuilder(tokenizer, DEFAULT_TEMPLATES, N_USERS, N_ITEMS)


@pytest.fixture()
def collator(builder):
    """One document per row: the layouts below are easiest to read that way."""
    return Collator(builder, max_items=4, max_text_tokens=6, pack=False)


def words(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_id_tokens_are_arithmetic(builder, tokenizer):
    v = len(tokenizer)
    assert builder.vocab_size == v
    assert builder.user_tokens(np.array([0, 4])).tolist() == [v, v + 4]
    assert builder.item_tokens(np.array([0, 8])).tolist() == [v + N_USERS, v + N_USERS + 8]
    with pytest.raises(IndexError):
        builder.item_tokens(np.array([N_ITEMS]))
    with pytest.raises(IndexError):
        builder.user_tokens(np.array([-1]))


def test_templates_tokenized_once_and_split_at_slots(builder, tokenizer):
    v = len(tokenizer)
    review = builder.prompt("review", user=2, item=3).tolist()
    expected = (
        [v + 2]
        + words(tokenizer, " writes the following review for")
        + [v + N_USERS + 3]
        + words(tokenizer, ":")
    )
    assert review == expected
    desc = builder.prompt("item_description", item=7).tolist()
    assert desc == words(tokenizer, "The description of") + [v + N_USERS + 7] + words(
        tokenizer, " is:"
    )
    suffix = builder.prompt("recommendation_suffix", user=1).tolist()
    assert suffix == words(tokenizer, ",") + [v + 1] + words(tokenizer, " will interact with")


def test_bos_starts_every_document_but_not_a_continuation(tokenizer):
    bos = 3
    b = PromptBuilder(tokenizer, DEFAULT_TEMPLATES, N_USERS, N_ITEMS, bos_id=bos)
    plain = PromptBuilder(tokenizer, DEFAULT_TEMPLATES, N_USERS, N_ITEMS)
    for name in ("collaborative", "review", "item_description", "recommendation"):
        got = b.prompt(name, user=1, item=2).tolist()
        assert got == [bos] + plain.prompt(name, user=1, item=2).tolist()
    assert (
        b.prompt("recommendation_suffix", user=1).tolist()
        == plain.prompt("recommendation_suffix", user=1).tolist()
    )
    # Targets stay aligned: each item is predicted from the position before it.
    collator = Collator(b, max_items=4, max_text_tokens=6, pack=False)
    batch = collator.collate_collab([{"user": 1, "items": np.array([4, 5, 6])}], None)
    flat = batch.input_ids.reshape(-1)
    assert flat[0] == bos
    assert flat[batch.target_index[1:]].tolist() == b.item_tokens(np.array([4, 5])).tolist()


def test_bad_templates_rejected(tokenizer):
    with pytest.raises(KeyError, match="recommendation_suffix"):
        PromptBuilder(tokenizer, {"collaborative": "{user}"}, N_USERS, N_ITEMS)
    bad = {**DEFAULT_TEMPLATES, "review": "{user} on {product}:"}
    with pytest.raises(ValueError, match="placeholder"):
        PromptBuilder(tokenizer, bad, N_USERS, N_ITEMS)
    with pytest.raises(ValueError, match="word space"):
        PromptBuilder(tokenizer, DEFAULT_TEMPLATES, N_USERS, N_ITEMS, vocab_size=10)


def test_collab_layout_targets_and_padding(collator, builder, tokenizer):
    v = len(tokenizer)
    rows = [{"user": 1, "items": np.array([3])}, {"user": 4, "items": np.array([0, 2, 5])}]
    batch = collator.collate_collab(rows)  # evaluation order: as stored
    prompt = [v + 1] + words(tokenizer, " has interacted with")
    p = len(prompt)
    width = p + 2  # the last item of a document is a target, not an input
    assert batch.input_ids.shape == (2, width)
    assert batch.input_ids[0].tolist() == prompt + [builder.pad_id] * 2
    assert batch.input_ids[1].tolist() == [v + 4] + prompt[1:] + [v + N_USERS, v + N_USERS + 2]
    assert batch.attention_mask.tolist() == [[1] * p + [0, 0], [1] * width]
    assert batch.position_ids.tolist() == [list(range(p)) + [0, 1], list(range(width))]
    # the prompt's last token predicts the first item; each item predicts the next
    assert batch.target_index.tolist() == [p - 1, width + p - 1, width + p, width + p + 1]
    assert batch.target_items.tolist() == [3, 0, 2, 5]
    assert batch.users.tolist() == [1, 4]


def test_collab_training_shuffles_and_subsamples(collator):
    history = np.arange(9)
    rows = [{"user": 0, "items": history}]
    seen = set()
    for seed in range(5):
        batch = collator.collate_collab(rows, np.random.default_rng(seed))
        items = batch.target_items.tolist()
        assert len(items) == 4 and len(set(items)) == 4 and set(items) <= set(history.tolist())
        seen.add(tuple(items))
    assert len(seen) > 1
    # evaluation: deterministic, whatever the rest of the batch, and in stored order
    alone = collator.collate_collab(rows).target_items.tolist()
    other = {"user": 3, "items": np.arange(7)}
    assert collator.collate_collab([other, *rows]).target_items.tolist()[4:] == alone
    assert alone == sorted(alone)


def test_content_layout_eos_and_truncation(collator, builder, tokenizer):
    v = len(tokenizer)
    rows = [
        {"kind": 0, "user": 2, "item": 3, "text": "great product"},
        {"kind": 2, "user": 4, "item": -1, "text": "likes lamps, books and music."},
    ]
    batch = collator.collate_content(rows)
    review = builder.prompt("review", user=2, item=3).tolist()
    main0 = words(tokenizer, " great product") + [builder.eos_id]
    assert len(main0) <= 6
    width = batch.input_ids.shape[1]
    # fed: prompt + main minus its last token (the eos predicts nothing)
    assert batch.input_ids[0, : len(review) + len(main0) - 1].tolist() == review + main0[:-1]
    prompt1 = words(tokenizer, "The description of") + [v + 4] + words(tokenizer, " is:")
    main1 = words(tokenizer, " likes lamps, books and music.")[:6]  # cut: no eos
    assert batch.input_ids[1, : len(prompt1) + 5].tolist() == prompt1 + main1[:-1]
    lengths = [len(review) + len(main0) - 1, len(prompt1) + 5]
    assert batch.attention_mask.sum(1).tolist() == lengths
    expect_index = [len(review) - 1 + j for j in range(len(main0))]
    expect_index += [width + len(prompt1) - 1 + j for j in range(6)]
    assert batch.target_index.tolist() == expect_index
    assert batch.target_words.tolist() == main0 + main1
    assert batch.users.tolist() == [2, 4] and batch.items.tolist() == [3, -1]
    with pytest.raises(ValueError, match="kind"):
        collator.collate_content([{"kind": 5, "user": 0, "item": 0, "text": "x"}])


def test_rec_eval_layout_targets_and_exclusions(collator, builder, tokenizer):
    v = len(tokenizer)
    rows = [
        {"user": 0, "train": np.array([1, 2]), "val": np.array([3]), "test": np.array([4, 5])},
        {
            "user": 1,
            "train": np.array([6]),
            "val": np.array([], dtype=np.int64),
            "test": np.array([7]),
        },
    ]
    val = collator.collate_rec_eval(rows, "val")
    assert val.users.tolist() == [0]  # user 1 has no val items: filtered out
    prompt = [v] + words(tokenizer, " has interacted with")
    suffix = words(tokenizer, ",") + [v] + words(tokenizer, " will interact with")
    seq = prompt + [v + N_USERS + 1, v + N_USERS + 2] + suffix
    assert val.input_ids.tolist() == [seq]
    assert val.last_index.tolist() == [len(seq) - 1]
    # Pooled positions: " with" before the history, each history item, the suffix's last word.
    assert val.pool_offsets.tolist() == [0, 4]
    assert val.pool_index.tolist() == [len(prompt) - 1, len(prompt), len(prompt) + 1, len(seq) - 1]
    assert val.target_offsets.tolist() == [0, 1] and val.target_items.tolist() == [3]
    assert val.exclude_offsets.tolist() == [0, 2] and val.exclude_items.tolist() == [1, 2]
    test = collator.collate_rec_eval(rows, "test")
    assert test.users.tolist() == [0, 1]
    assert test.target_offsets.tolist() == [0, 2, 3] and test.target_items.tolist() == [4, 5, 7]
    assert test.exclude_offsets.tolist() == [0, 3, 4]
    assert test.exclude_items.tolist() == [1, 2, 3, 6]
    width = test.input_ids.shape[1]
    lengths = test.attention_mask.sum(1)
    assert test.last_index.tolist() == [lengths[0] - 1, width + lengths[1] - 1]
    with pytest.raises(ValueError, match="split"):
        collator.collate_rec_eval(rows, "train")


def test_rec_train_masks_a_fraction(collator):
    train = np.arange(9)
    rows = [
        {"user": 0, "train": train, "val": np.array([]), "test": np.array([])},
        {"user": 1, "train": np.array([4]), "val": np.array([]), "test": np.array([])},
        {"user": 2, "train": np.array([], dtype=np.int64), "val": np.array([]), "test": []},
    ]
    batch = collator.collate_rec_train(rows, np.random.default_rng(0), mask_fraction=0.2)
    assert batch.users.tolist() == [0, 1]  # no train items: nothing to predict
    assert batch.target_offsets.tolist() == [0, 2, 3]  # round(0.2 * 9) = 2; a single item -> 1
    v_u = collator.builder.vocab_size + N_USERS
    inputs = batch.input_ids[0][batch.input_ids[0] >= v_u] - v_u
    targets = batch.target_items[:2]
    assert len(inputs) == 4  # the remaining 7, cut to max_items
    assert not set(inputs.tolist()) & set(targets.tolist())
    assert batch.exclude_offsets.tolist() == [0, 0, 0] and batch.exclude_items.numel() == 0
    redrawn = collator.collate_rec_train(rows, np.random.default_rng(1), mask_fraction=0.2)
    assert not torch.equal(redrawn.input_ids, batch.input_ids)
    with pytest.raises(ValueError, match="mask_fraction"):
        collator.collate_rec_train(rows, np.random.default_rng(0), mask_fraction=1.0)


def test_rec_train_all_targets_every_train_item(collator):
    rows = [
        {"user": 0, "train": np.arange(9), "val": np.array([]), "test": np.array([])},
        {"user": 1, "train": np.array([4]), "val": np.array([]), "test": np.array([])},
    ]
    rng = np.random.default_rng(0)
    batch = collator.collate_rec_train(rows, rng, mask_fraction=0.2, target="all")
    assert batch.target_offsets.tolist() == [0, 9, 10]  # the whole train set of each user
    assert sorted(batch.target_items[:9].tolist()) == list(range(9))
    v_u = collator.builder.vocab_size + N_USERS
    inputs = batch.input_ids[0][batch.input_ids[0] >= v_u] - v_u
    # The same prompt as the held-out target rule: 2 of 9 dropped, cut to max_items (4).
    heldout = collator.collate_rec_train(rows, np.random.default_rng(0), mask_fraction=0.2)
    assert torch.equal(heldout.input_ids, batch.input_ids)
    assert len(inputs) == 4 and set(inputs.tolist()) <= set(range(9))
    with pytest.raises(ValueError, match="not a valid RecTarget"):
        collator.collate_rec_train(rows, rng, target="some")


def test_empty_batches_are_well_shaped(collator):
    rng = np.random.default_rng(0)
    for batch in (
        collator.collate_collab([], rng),
        collator.collate_content([]),
        collator.collate_rec_train([], rng),
        collator.collate_rec_eval([], "test"),
    ):
        assert batch.num_documents == 0
        assert batch.input_ids.shape == batch.attention_mask.shape == (0, 0)
        assert batch.input_ids.dtype == torch.int64
    rec = collator.collate_rec_eval([], "val")
    assert rec.last_index.shape == (0,) and rec.target_offsets.tolist() == [0]
    assert rec.exclude_offsets.tolist() == [0] and rec.users.shape == (0,)


def test_packing_first_fit_decreasing_with_restarting_positions(builder):
    packer = Collator(builder, max_items=16, max_text_tokens=6)
    # prompt + items fed: lengths p+5, p, p+1, p with p = len(prompt)
    histories = [np.arange(6), np.arange(1), np.arange(2), np.zeros(0, dtype=np.int64)]
    rows = [{"user": u, "items": h} for u, h in enumerate(histories)]
    packed = packer.collate_collab(rows)
    flat = Collator(builder, max_items=16, max_text_tokens=6, pack=False).collate_collab(rows)
    p = len(builder.prompt("collaborative", user=0))
    width = p + 5
    lengths = [p + 5, p, p + 1, p]
    assert packed.input_ids.shape[1] == width and packed.input_ids.shape[0] < 4
    assert packed.attention_mask.sum() == flat.attention_mask.sum() == sum(lengths)
    # every document's tokens, targets and position run survive packing unchanged
    assert torch.equal(
        packed.input_ids.flatten()[packed.target_index],
        flat.input_ids.flatten()[flat.target_index],
    )
    assert torch.equal(packed.target_items, flat.target_items)
    assert torch.equal(packed.users, flat.users)
    # position runs: each row is documents back to back from 0, then padding, each from 0
    for row_pos, row_mask in zip(packed.position_ids.tolist(), packed.attention_mask.tolist()):
        runs, start = [], 0
        for t in range(1, width + 1):
            if t == width or row_pos[t] != row_pos[t - 1] + 1:
                runs.append((t - start, row_mask[start]))
                start = t
        assert all(row_pos[0] == 0 for _ in runs)
        real = [n for n, m in runs if m == 1]
        assert all(n in lengths for n in real)
        assert all(m == 0 for _, m in runs[len(real) :])  # padding only at the end
    # the token after each target position is the target item (except a document's last item)
    v_u = builder.vocab_size + N_USERS
    fed = torch.isin(packed.target_index + 1, packed.target_index)
    nxt = packed.input_ids.flatten()[packed.target_index[fed] + 1] - v_u
    assert torch.equal(nxt, packed.target_items[fed])
    assert int(fed.sum()) == len(packed.target_items) - 3  # one per non-empty history


def test_packing_keeps_rec_last_positions(builder):
    packer = Collator(builder, max_items=16, max_text_tokens=6, row_length=32)
    rows = [
        {"user": u, "train": np.arange(n), "val": np.array([8]), "test": np.array([])}
        for u, n in enumerate([7, 1, 2, 0, 3])
    ]
    rows[3]["train"] = np.zeros(0, dtype=np.int64)
    packed = packer.collate_rec_eval(rows, "val")
    flat = Collator(builder, max_items=16, max_text_tokens=6, pack=False).collate_rec_eval(rows)
    assert packed.input_ids.shape == (3, 32)  # FFD: 17+13 | 12+11 | 10
    suffix_end = builder.prompt("recommendation_suffix", user=0)[-1]
    assert (packed.input_ids.flatten()[packed.last_index] == suffix_end).all()
    # The pooled positions hold the same tokens in either layout, document by document.
    assert torch.equal(packed.pool_offsets, flat.pool_offsets)
    assert torch.equal(
        packed.input_ids.flatten()[packed.pool_index], flat.input_ids.flatten()[flat.pool_index]
    )
    assert torch.equal(packed.users, flat.users)
    assert torch.equal(packed.exclude_items, flat.exclude_items)
