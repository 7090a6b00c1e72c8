"""DenseItemScorer against the naive references (incl. the original dense-target multinomial)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cllm4rec_dist.model.heads import DenseItemScorer, word_cross_entropy
from cllm4rec_dist.model.tables import DenseTable
from cllm4rec_dist.ops import reference


def _csr(lists: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    offsets = torch.tensor([0] + [len(x) for x in lists]).cumsum(0)
    items = torch.tensor([j for x in lists for j in x], dtype=torch.int64)
    return offsets, items


@st.composite
def problems(draw):
    """hidden [B, H], a table of I items, and per-row CSR target lists (possibly empty)."""
    b, h, i = draw(st.integers(0, 4)), draw(st.integers(1, 6)), draw(st.integers(1, 9))
    seed = draw(st.integers(0, 2**16))
    lists = [draw(st.lists(st.integers(0, i - 1), max_size=4)) for _ in range(b)]
    gen = torch.Generator().manual_seed(seed)
    table = DenseTable(i, h, seed=seed, std=1.0)
    hidden = torch.randn(b, h, generator=gen)
    return table, hidden, lists


@settings(max_examples=40, deadline=None)
@given(problems())
def test_cross_entropy_matches_reference_with_gradients(problem):
    table, hidden, lists = problem
    targets = torch.tensor([x[0] if x else 0 for x in lists], dtype=torch.int64)
    scorer = DenseItemScorer(table)
    h1 = hidden.clone().requires_grad_(True)
    got = scorer.cross_entropy(h1, targets)
    got.sum().backward()
    w2 = table.weight.detach().clone().requires_grad_(True)
    h2 = hidden.clone().requires_grad_(True)
    want = reference.cross_entropy_reference(h2, w2, targets)
    want.sum().backward()
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(h1.grad, h2.grad)
    torch.testing.assert_close(table.weight.grad, w2.grad)


@settings(max_examples=40, deadline=None)
@given(problems())
def test_multinomial_nll_matches_original_dense_target_form(problem):
    table, hidden, lists = problem
    offsets, items = _csr(lists)
    scorer = DenseItemScorer(table)
    h1 = hidden.clone().requires_grad_(True)
    got = scorer.multinomial_nll(h1, offsets, items)
    (got * torch.arange(1.0, len(got) + 1)).sum().backward()  # distinct row weights
    w2 = table.weight.detach().clone().requires_grad_(True)
    h2 = hidden.clone().requires_grad_(True)
    dense = reference.dense_targets(offsets, items, table.num_rows)
    want = reference.multinomial_nll_dense_target(h2, w2, dense)
    (want * torch.arange(1.0, len(want) + 1)).sum().backward()
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(h1.grad, h2.grad)
    torch.testing.assert_close(table.weight.grad, w2.grad)


@settings(max_examples=40, deadline=None)
@given(problems(), st.integers(1, 4), st.integers(0, 9))
def test_topk_matches_reference_with_chunks(problem, chunk, k):
    table, hidden, lists = problem
    k = min(k, table.num_rows)
    offsets, items = _csr(lists)
    # Rounding makes ties frequent, so tie order is exercised too.
    hidden = hidden.round()
    table.weight.data = table.weight.data.round()
    scores, top = DenseItemScorer(table, topk_chunk=chunk).topk(hidden, k, offsets, items)
    want_scores, want_items = reference.masked_topk_reference(
        hidden, table.weight.detach(), k, offsets, items
    )
    torch.testing.assert_close(scores, want_scores)
    assert torch.equal(top, want_items)
    assert scores.dtype == torch.float32 and top.dtype == torch.int64


def test_topk_ties_masking_and_padding():
    table = DenseTable(5, 2)
    table.weight.data = torch.tensor([[1.0, 0], [2, 0], [1, 0], [2, 0], [0, 0]])
    hidden = torch.tensor([[1.0, 0], [1.0, 0]])
    offsets, items = _csr([[3], [0, 1, 2, 3]])
    scores, top = DenseItemScorer(table, topk_chunk=2).topk(hidden, 3, offsets, items)
    # row 0: item 3 excluded; 1 (2.0), then the tie 0 / 2 at 1.0 in index order
    assert top[0].tolist() == [1, 0, 2] and scores[0].tolist() == [2.0, 1.0, 1.0]
    # row 1: only item 4 is left; the rest pads with (-inf, -1)
    assert top[1].tolist() == [4, -1, -1]
    assert scores[1].tolist() == [0.0, float("-inf"), float("-inf")]
    with pytest.raises(ValueError, match="k="):
        DenseItemScorer(table).topk(hidden, 6, offsets, items)


def test_empty_rows_and_bf16_hidden():
    table = DenseTable(7, 4, std=1.0)
    scorer = DenseItemScorer(table)
    empty = torch.zeros(0, 4)
    assert scorer.cross_entropy(empty, torch.zeros(0, dtype=torch.long)).shape == (0,)
    assert scorer.multinomial_nll(
        empty, torch.zeros(1, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    ).shape == (0,)
    scores, items = scorer.topk(
        empty, 3, torch.zeros(1, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    )
    assert scores.shape == items.shape == (0, 3)
    loss = scorer.cross_entropy(torch.randn(2, 4, dtype=torch.bfloat16), torch.tensor([1, 2]))
    assert loss.dtype == torch.float32


def test_word_cross_entropy_is_fp32_ce():
    logits = torch.randn(5, 11, dtype=torch.bfloat16)
    targets = torch.tensor([0, 3, 10, 2, 2])
    want = torch.nn.functional.cross_entropy(logits.float(), targets, reduction="none")
    torch.testing.assert_close(word_cross_entropy(logits, targets), want)
