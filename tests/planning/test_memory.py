"""The memory math of cllm4rec_dist/planning/memory.py, term by term, on hand-computed cases."""

from __future__ import annotations

import pytest

from cllm4rec_dist.planning.memory import (
    BackboneShape,
    Phase,
    RunShape,
    activation_bytes,
    backbone_static,
    backbone_transient,
    build_terms,
    estimate,
    export_terms,
    scorer_transient,
    shard,
    table_static,
    table_transient,
)

P = 1_000_000
BUCKET = 500_000_000


def _shape(trainable: int = P, params: int = P) -> BackboneShape:
    return BackboneShape(
        params=params,
        trainable=trainable,
        hidden=64,
        layers=2,
        heads=4,
        intermediate=256,
        vocab=1000,
    )


def _total(terms) -> float:
    return sum(t.bytes for t in terms)


def test_shard_is_the_largest_block():
    assert shard(10, 4) == 3
    assert shard(8, 4) == 2
    assert shard(3, 8) == 1


def test_frozen_backbone_is_only_replicated_weights():
    terms = backbone_static(_shape(trainable=0), "bf16", 3, 8, BUCKET, "cuda")
    assert [t.name for t in terms] == ["backbone weights"]
    assert terms[0].bytes == 2 * P  # ZeRO does not apply: no DeepSpeed engine
    assert backbone_transient(_shape(trainable=0), "bf16", 3, BUCKET, 10**9) == []


@pytest.mark.parametrize("dtype,per_param", [("fp32", 4 + 4 + 8), ("bf16", 2 + 2 + 4 + 4 + 8)])
def test_zero0_bytes_per_parameter(dtype, per_param):
    # fp32: weights, grads, Adam m+v; bf16 adds DeepSpeed's fp32 master and grad accumulator.
    assert _total(backbone_static(_shape(), dtype, 0, 4, BUCKET, "cuda")) == per_param * P


@pytest.mark.parametrize("stage", [1, 2])
def test_zero12_partition_optimizer_and_grads(stage):
    w = 4
    terms = {t.name: t.bytes for t in backbone_static(_shape(), "bf16", stage, w, BUCKET, "cuda")}
    assert terms["backbone weights"] == 2 * P
    assert terms["gradient partition"] == 2 * P / w
    assert terms["fp32 master partition"] == 4 * P / w
    assert terms["Adam moments partition (fp32 m, v)"] == 8 * P / w
    assert terms["ZeRO reduce bucket"] == 2 * BUCKET  # allocated whole on a GPU


def test_zero3_partitions_the_weights_too():
    w = 8
    terms = {t.name: t.bytes for t in backbone_static(_shape(), "bf16", 3, w, BUCKET, "cuda")}
    assert terms["backbone weights (ZeRO-3 partition)"] == 2 * P / w
    assert _total(backbone_static(_shape(), "bf16", 3, w, BUCKET, "cuda")) == (
        (2 + 2 + 4 + 8) * P / w + 2 * BUCKET
    )


def test_cpu_bucket_counts_only_touched_pages():
    cpu = {t.name: t.bytes for t in backbone_static(_shape(), "fp32", 1, 2, BUCKET, "cpu")}
    assert cpu["ZeRO reduce bucket"] == 4 * P  # min(bucket, trainable) elements


def test_lora_optimizer_state_covers_adapters_only():
    shape = _shape(trainable=10_000, params=P + 10_000)
    terms = {t.name: t.bytes for t in backbone_static(shape, "bf16", 2, 4, 1000, "cuda")}
    assert terms["backbone weights"] == 2 * (P + 10_000)
    assert terms["Adam moments partition (fp32 m, v)"] == 8 * 10_000 / 4


def test_backbone_transients_by_stage():
    assert _total(backbone_transient(_shape(), "fp32", 0, BUCKET, 10**9)) == 4 * P
    assert _total(backbone_transient(_shape(), "bf16", 2, 1000, 10**9)) == 2 * 1000
    z3 = {t.name: t.bytes for t in backbone_transient(_shape(), "bf16", 3, BUCKET, 500)}
    assert z3["gathered parameters (ZeRO-3)"] == 2 * 500  # capped by max live parameters


def test_tables_are_four_fp32_shards_plus_one_accumulator_per_row():
    terms = {t.name: t.bytes for t in table_static(num_users=10, num_items=5, dim=8, world_size=4)}
    # 3 user + 2 item rows per rank, collaborative and content copies.
    assert terms["ID tables (4 x fp32 rows / W)"] == 4 * 2 * (3 + 2) * 8
    assert terms["row-wise Adagrad state"] == 4 * 2 * (3 + 2)
    assert _total(table_transient(num_items=5, dim=8, world_size=4)) == 3 * 4 * 2 * 8


def test_scorer_block_grows_with_world_size_and_is_chunked():
    small = {t.name: t.bytes for t in scorer_transient(16, 1000, 64, 2, 16384)}
    assert small["scorer logits block (x2)"] == 2 * 4 * (2 * 16) * 500
    big = {t.name: t.bytes for t in scorer_transient(16, 10**6, 64, 8, 16384)}
    assert big["scorer logits block (x2)"] == 2 * 4 * (8 * 16) * 16384
    assert big["scorer gathered hidden rows"] == 4 * 8 * 16 * 64
    assert scorer_transient(0, 1000, 64, 2, 16384) == []


def test_activations_checkpointing_and_attention_scores():
    shape = _shape()
    full = activation_bytes(100, shape, "bf16", False, False, 50)
    assert full == 2 * 100 * 2 * (10 * 64 + 4 * 256)
    ckpt = activation_bytes(100, shape, "bf16", True, False, 50)
    assert ckpt == 2 * 100 * (2 * 64 + 10 * 64 + 4 * 256)
    assert ckpt < full
    math_sdpa = activation_bytes(100, shape, "bf16", False, True, 50)
    assert math_sdpa - full == 2 * 100 * 2 * 4 * 50


def _run(**kw) -> RunShape:
    base = dict(
        backbone=_shape(),
        dtype="fp32",
        zero_stage=3,
        world_size=2,
        num_users=1000,
        num_items=100,
        phases=(Phase("collaborative", 64, scored_rows=32), Phase("content", 64, word_logits=48)),
        overhead_bytes=1000.0,
        device="cpu",
    )
    base.update(kw)
    return RunShape(**base)


def test_estimate_peak_is_static_plus_the_largest_phase():
    est = estimate(_run())
    assert set(est.transient) == {"collaborative", "content"}
    largest = max(est.phase_bytes(p) for p in est.transient)
    assert est.phase_bytes(est.peak_phase) == largest
    assert est.training_peak() == pytest.approx(1000.0 + est.static_bytes() + largest)
    assert est.process_peak(0) == max(est.build_peak(), est.training_peak(), est.export_peak())
    assert est.process_peak(1) == max(est.build_peak(), est.training_peak())
    assert not est.host_separate  # CPU: building and export share the process with training


def test_export_streams_one_block_and_consolidates_zero3():
    names = {t.name: t.bytes for t in export_terms(_run())}
    assert names["table export block (x2)"] == 2 * 4 * 1000 * 64  # fewer rows than a block
    big = {t.name: t.bytes for t in export_terms(_run(num_users=10**7))}
    assert big["table export block (x2)"] == 2 * 4 * 65536 * 64
    assert names["consolidated backbone state"] == 4 * P
    frozen = {t.name for t in export_terms(_run(backbone=_shape(trainable=0)))}
    assert frozen == {"table export block (x2)"}


def test_build_holds_the_whole_backbone_and_an_init_chunk():
    terms = {t.name: t.bytes for t in build_terms(_run(num_users=10**6, zero_stage=3))}
    assert terms["whole backbone while loading"] == 4 * P  # before ZeRO-3 partitions it
    assert terms["table init draw (x2)"] == 2 * 4 * 4096 * 64
    small = {t.name: t.bytes for t in build_terms(_run(num_users=1000))}
    assert small["table init draw (x2)"] == 2 * 4 * 4096 * 64  # whole draws, whatever the rows


def test_estimate_rejects_bad_inputs():
    # (model.dtype is a Dtype: the config rejects fp16 when it is composed.)
    with pytest.raises(ValueError, match="world_size"):
        estimate(_run(world_size=0))


def test_constants_mirror_the_code_they_model():
    import inspect

    from cllm4rec_dist.distributed.item_parallel import ItemParallelScorer
    from cllm4rec_dist.model import interfaces
    from cllm4rec_dist.planning import memory

    assert memory.INIT_DRAW_ROWS == interfaces.INIT_DRAW_ROWS
    chunk = inspect.signature(ItemParallelScorer).parameters["chunk_items"].default
    assert chunk == memory.SCORER_CHUNK_ITEMS


def test_serving_files_stay_on_rank_0_after_its_first_export():
    run = _run(seen_items=10**6, serving_fixed_bytes=5e6, serving_bytes_per_user=32.0,
               serving_bytes_per_seen=20.0)  # fmt: skip
    terms = {t.name: t for t in export_terms(run)}
    files = terms["serving files (seen items, raw ids)"]
    assert files.bytes == 5e6 + 32.0 * 1000 + 20.0 * 10**6 and files.kept
    est = estimate(run)
    # rank 0 trains on with the cached files; the other ranks never build them
    assert est.process_peak(0) >= est.training_peak() + files.bytes
    assert est.process_peak(1) == max(est.build_peak(), est.training_peak())
    assert "serving files (seen items, raw ids)" not in {t.name for t in export_terms(_run())}
