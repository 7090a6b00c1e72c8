"""Text rows: a row is placed like a typical token (the space's mean plus a deviation of the
typical norm), and the vectorised means equal plain per-row loops."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cllm4rec_dist.model.text_rows import TokenSpace, mean_rows, segment_mean, token_rows


@pytest.fixture
def embedding() -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    # A shared direction plus noise, as in a trained LM's token embeddings.
    return torch.randn(50, 8, generator=gen) * 0.3 + torch.linspace(-1, 1, 8)


def test_space_is_the_mean_and_mean_spread_of_the_given_tokens(embedding):
    tokens = torch.tensor([1, 1, 4, 7])
    space = TokenSpace.of(embedding, tokens)
    rows = embedding[tokens]
    assert torch.allclose(space.mean, rows.mean(0))
    assert space.spread == pytest.approx(float((rows - rows.mean(0)).norm(dim=1).mean()))
    with pytest.raises(ValueError):
        TokenSpace.of(embedding, torch.zeros(0, dtype=torch.int64))


def test_token_rows_equal_a_loop_over_texts(embedding):
    space = TokenSpace.of(embedding, torch.arange(50))
    texts = [np.array([3, 4, 5]), np.array([], dtype=np.int64), np.array([9]), np.array([9, 9])]
    rows, has_text = token_rows(texts, embedding, space)
    assert has_text.tolist() == [True, False, True, True]
    for row, ids in zip(rows, texts):
        if len(ids) == 0:
            assert torch.allclose(row, space.mean)
            continue
        deviation = (embedding[torch.from_numpy(ids)] - space.mean).mean(0)
        expected = space.mean + deviation / deviation.norm() * space.spread
        assert torch.allclose(row, expected, atol=1e-6)
        # A placed row is a typical token's distance from the mean.
        assert float((row - space.mean).norm()) == pytest.approx(space.spread, rel=1e-5)
    # Repeating a text's tokens does not move its row.
    assert torch.allclose(rows[2], rows[3], atol=1e-6)


def test_segment_and_mean_rows(embedding):
    offsets = torch.tensor([0, 2, 2, 5])
    rows = embedding[:5]
    means = segment_mean(offsets, rows)
    assert torch.allclose(means[0], rows[:2].mean(0))
    assert torch.equal(means[1], torch.zeros(8))
    assert torch.allclose(means[2], rows[2:5].mean(0))
    space = TokenSpace.of(embedding, torch.arange(50))
    placed = mean_rows(offsets, rows, space)
    assert torch.allclose(placed[1], space.mean)
    assert torch.allclose(placed[0], space.place((rows[:2] - space.mean).mean(0, keepdim=True))[0])
