"""The step-time model: each term against its formula worked by hand, and how it scales."""

from __future__ import annotations

import pytest

from cllm4rec_dist.planning.memory import BackboneShape
from cllm4rec_dist.planning.steptime import Hardware, StepPhase, backbone_flops, step_time

FROZEN = BackboneShape(params=100, trainable=0, hidden=64, layers=2, heads=4, intermediate=128,
                       vocab=300)  # fmt: skip
HW = Hardware(
    matmul_flops_per_s=1e9, elementwise_per_s=1e8, network_bytes_per_s=1e9, step_overhead_s=0.5
)


def _terms(est):
    return {t.name: t.bytes for t in est.terms}


def test_item_head_terms_by_hand():
    # 2 ranks, 100 scored rows per rank, 1,000 items: each rank scores 200 rows x 500 items.
    phase = StepPhase("collaborative", documents=10, tokens=300, seq=40, scored_rows=100)
    t = _terms(step_time(phase, FROZEN, "fp32", 2, 1000, HW))
    assert t["item head matmuls"] == pytest.approx(4 * 2 * 200 * 500 * 64 / 1e9)
    assert t["item head element-wise"] == pytest.approx(6 * 200 * 500 / 1e8)
    assert t["item table update"] == pytest.approx(4 * 500 * 64 / 1e8)
    comm = 4 * (3 * 100 * 64) + 4 * 2 * 2 * 300 * 64 / 2
    assert t["collectives"] == pytest.approx(comm / 1e9)
    assert t["backbone matmuls"] == pytest.approx(backbone_flops(FROZEN, 300, 40) / 1e9)
    assert t["fixed cost per step"] == 0.5
    # The sampled head keeps its forward's exponentials: no recomputed logits, no second exp.
    s = _terms(step_time(phase, FROZEN, "fp32", 2, 1000, HW, sampled=True))
    assert s["item head matmuls"] == pytest.approx(3 * 2 * 200 * 500 * 64 / 1e9)
    assert s["item head element-wise"] == pytest.approx(4 * 200 * 500 / 1e8)


def test_backbone_flops_frozen_vs_trained():
    full = BackboneShape(100, 100, 64, 2, 4, 128, 300)
    per_token = 2 * (4 * 64 * 64 + 3 * 64 * 128) + 4 * 40 * 64
    assert backbone_flops(FROZEN, 10, 40) == pytest.approx(2 * per_token * 10 * 2)
    assert backbone_flops(full, 10, 40) == pytest.approx(3 * per_token * 10 * 2)
    # LoRA: the activations' gradients plus the weight gradients of its small trainable share.
    lora = BackboneShape(100, 1, 64, 2, 4, 128, 300)
    assert backbone_flops(lora, 10, 40) == pytest.approx(2.01 * per_token * 10 * 2)


def test_head_scales_with_items_and_one_rank_has_no_collectives_for_the_head():
    phase = StepPhase("recommendation", 128, 128 * 40, 64, 128)
    small = _terms(step_time(phase, FROZEN, "fp32", 1, 10_000, HW))
    large = _terms(step_time(phase, FROZEN, "fp32", 1, 100_000, HW))
    assert large["item head matmuls"] == pytest.approx(10 * small["item head matmuls"])
    assert small["collectives"] == 0
