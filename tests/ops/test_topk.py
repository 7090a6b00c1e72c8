"""The one masked top-K (ops/topk.py), from factors and from score rows, tiled and on its dense
path, == the full-matrix torch.sort reference (ops/reference.py): ties, k >= #allowed, tiling,
pieces, fp64 rows."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cllm4rec_dist.ops.reference import masked_topk_reference, topk_of_scores_reference
from cllm4rec_dist.ops.topk import (
    DENSE_ELEMENTS,
    block_maxima,
    masked_topk,
    masked_topk_prefiltered,
    masked_topk_scores,
)


@st.composite
def topk_cases(draw):
    """Small integer-valued queries/items (exact dot products, many ties) and random exclusions."""
    num_q, n, dim = draw(st.integers(0, 7)), draw(st.integers(0, 30)), draw(st.integers(1, 3))
    k = draw(st.integers(0, n + 3))
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    q = torch.randint(-2, 3, (num_q, dim), generator=gen).float()
    items = torch.randint(-2, 3, (n, dim), generator=gen).float()
    excl = [
        torch.randperm(n, generator=gen)[: draw(st.integers(0, n))].tolist() for _ in range(num_q)
    ]
    offsets = torch.tensor([0] + [len(e) for e in excl]).cumsum(0)
    ex_items = torch.tensor([i for e in excl for i in e], dtype=torch.int64)
    block = draw(st.integers(1, 4))  # 2 and 4: block_maxima halves
    chunks = dict(
        user_chunk=draw(st.integers(1, 4)),
        item_chunk=draw(st.sampled_from([block, 2 * block, 3 * block, 4 * block + 1])),
        block=block,
        # 0: always tiled; 40: the dense path in pieces of a few users; default: whole chunks.
        dense_elements=draw(st.sampled_from([0, 40, DENSE_ELEMENTS])),
        # several threads split the users, or the items when the users are few per thread
        threads=draw(st.sampled_from([1, 2, 3])),
    )
    return q, items, k, offsets, ex_items, draw(st.integers(0, 5)), chunks


@settings(max_examples=200, deadline=None)
@given(topk_cases())
def test_kernel_matches_reference_exactly(case):
    q, items, k, offsets, ex_items, index_offset, chunks = case
    expected = masked_topk_reference(q, items, k, offsets, ex_items, index_offset)
    got = masked_topk(q, items, k, offsets, ex_items, index_offset, **chunks)
    assert torch.equal(got[0], expected[0])
    assert torch.equal(got[1], expected[1])


@settings(max_examples=200, deadline=None)
@given(topk_cases(), st.integers(0, 3))
def test_prefiltered_kernel_matches_reference_exactly(case, extra):
    """The bf16 first pass with few extra candidates: ties at the k-th score leave users
    uncertified, answered by the fp32 kernel; the rest from their exact candidates."""
    q, items, k, offsets, ex_items, _, chunks = case
    expected = masked_topk_reference(q, items, k, offsets, ex_items)
    got = masked_topk_prefiltered(
        q, items, items.bfloat16(), k, offsets, ex_items, extra=extra,
        item_chunk=chunks["item_chunk"], threads=chunks["threads"],
    )  # fmt: skip
    assert torch.equal(got[0], expected[0])
    assert torch.equal(got[1], expected[1])


@pytest.mark.parametrize("extra", [0, 32])
def test_prefiltered_kernel_on_float_vectors(extra, monkeypatch):
    """Real-valued rows of unequal norms: the same items as the fp32 kernel, scores to fp32
    rounding; with no extra candidates most users fall back, with 32 most are certified."""
    gen = torch.Generator().manual_seed(1)
    q = torch.randn(37, 24, generator=gen)
    items = torch.randn(5000, 24, generator=gen) * torch.rand(5000, 1, generator=gen)
    offsets = torch.arange(0, 37 * 9 + 1, 9)
    ex_items = torch.randint(0, 5000, (37 * 9,), generator=gen)
    expected = masked_topk(q, items, 20, offsets, ex_items, item_chunk=512)
    from cllm4rec_dist.ops import topk

    redone = []

    def fp32_kernel(queries, *args, **kwargs):
        redone.append(queries.shape[0])
        return masked_topk(queries, *args, **kwargs)

    monkeypatch.setattr(topk, "masked_topk", fp32_kernel)
    got = masked_topk_prefiltered(
        q, items, items.bfloat16(), 20, offsets, ex_items, extra=extra, item_chunk=512
    )
    assert torch.equal(got[1], expected[1])
    assert sum(redone) > 30 if extra == 0 else sum(redone) < 4
    torch.testing.assert_close(got[0], expected[0], rtol=1e-6, atol=1e-6)


@settings(max_examples=200, deadline=None)
@given(topk_cases(), st.sampled_from([torch.float32, torch.float64]))
def test_score_rows_match_reference_exactly(case, dtype):
    """The baselines' entry: score rows given whole (EASE ranks fp64 rows), not modified."""
    q, items, k, offsets, ex_items, _, chunks = case
    scores = (q.double() @ items.double().T).to(dtype) / 3  # thirds: ties stay ties, inexactly
    before = scores.clone()
    expected = topk_of_scores_reference(scores, k, offsets, ex_items)
    got = masked_topk_scores(scores, k, offsets, ex_items, **chunks)
    assert got[0].dtype == dtype and torch.equal(scores, before)
    assert torch.equal(got[0], expected[0])
    assert torch.equal(got[1], expected[1])


@pytest.mark.parametrize("dense_elements", [0, DENSE_ELEMENTS])  # tiled; dense at K > blocks
def test_kernel_on_float_vectors_and_adversarial_order(dense_elements):
    gen = torch.Generator().manual_seed(0)
    q, items = torch.randn(40, 16, generator=gen), torch.randn(3000, 16, generator=gen)
    offsets = torch.arange(41) * 5
    ex_items = torch.randint(0, 3000, (200,), generator=gen)
    opts = dict(user_chunk=16, item_chunk=256, block=32, dense_elements=dense_elements)
    for k in (20, 100):
        expected = masked_topk_reference(q, items, k, offsets, ex_items)
        got = masked_topk(q, items, k, offsets, ex_items, **opts)
        torch.testing.assert_close(got[0], expected[0])
        assert torch.equal(got[1], expected[1])
    # Items in increasing score order for query 0: every tile improves the top-k (worst case).
    order = torch.argsort(items @ q[0])
    none = torch.zeros(41, dtype=torch.int64)
    expected = masked_topk_reference(q, items[order], 20, none, ex_items[:0])
    got = masked_topk(
        q, items[order], 20, none, ex_items[:0], item_chunk=64, block=16,
        dense_elements=dense_elements,
    )  # fmt: skip
    torch.testing.assert_close(got[0], expected[0])
    assert torch.equal(got[1], expected[1])


@pytest.mark.parametrize("block", [1, 2, 6, 8, 64])
def test_block_maxima_equal_amax(block):
    blocks = torch.randn(5, block, 3, generator=torch.Generator().manual_seed(block))
    blocks[1, 0, 2] = float("-inf")
    assert torch.equal(block_maxima(blocks), blocks.amax(dim=1))
    strided = torch.randn(block * 4, 7)[:, ::2].reshape(4, block, 4)  # a non-contiguous view
    assert torch.equal(block_maxima(strided), strided.amax(dim=1))


def test_kernel_validates_exclusions():
    q, items = torch.zeros(2, 3), torch.zeros(4, 3)
    with pytest.raises(IndexError, match=r"out of range \[0, 4\)"):
        masked_topk(q, items, 2, torch.tensor([0, 1, 1]), torch.tensor([4]))
    with pytest.raises(ValueError, match="shape"):
        masked_topk(q, items, 2, torch.tensor([0, 1]), torch.tensor([0]))
