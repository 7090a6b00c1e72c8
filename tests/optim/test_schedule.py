"""The one LR schedule of a stage: warm-up, then decay, as a pure function of the step."""

import math

import pytest
import torch

from cllm4rec_dist.optim.schedule import lr_factor, set_lr


def test_warmup_then_cosine_decay():
    f = [lr_factor(s, 100, schedule="cosine", warmup_fraction=0.1) for s in range(100)]
    assert f[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert all(a >= b for a, b in zip(f[9:], f[10:]))  # non-increasing after warm-up
    assert f[10] == pytest.approx(0.5 * (1 + math.cos(math.pi / 91)))
    assert 0 <= f[-1] < 1e-3


def test_linear_and_constant():
    lin = [lr_factor(s, 10, schedule="linear", warmup_fraction=0.0) for s in range(10)]
    assert lin == pytest.approx([1 - (s + 1) / 11 for s in range(10)])
    assert {lr_factor(s, 10, schedule="constant", warmup_fraction=0.0) for s in range(10)} == {1.0}
    with pytest.raises(ValueError, match="not a valid Schedule"):
        lr_factor(0, 10, schedule="step", warmup_fraction=0.0)


def test_set_lr_scales_every_group_from_its_base():
    a = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    b = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    set_lr([(a, 0.1), (b, 2.0)], 0.5)
    assert a.param_groups[0]["lr"] == pytest.approx(0.05)
    assert b.param_groups[0]["lr"] == pytest.approx(1.0)
