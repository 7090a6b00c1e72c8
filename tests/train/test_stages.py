"""Single-process runs of the trainer: golden losses per stage, exact resume, NaN stop."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import compose_train

from cllm4rec_dist.distributed.spawn import run_ranks
from cllm4rec_dist.train.checkpoint import _safe_torch_load

GOLDEN = Path(__file__).with_name("golden_losses.json")
# Loss sequences must reproduce to this relative tolerance (fp32 on CPU, fixed seeds).
RTOL = 1e-4

STAGES = {
    "pretrain_frozen": (
        "pretrain",
        [
            "stage.epochs=2",
            "stage.content_warmup_epochs=1",
            "stage.phases=[collaborative,content]",
            "stage.max_steps_per_phase=3",
        ],
    ),
    "pretrain_lora": (
        "pretrain",
        [
            "stage.epochs=1",
            "stage.content_warmup_epochs=0",
            "stage.max_steps_per_phase=3",
            "model.mode=lora",
            "model.lora.target_modules=[q_proj,v_proj]",
        ],
    ),
    "finetune_frozen": (
        "finetune",
        ["stage.epochs=2", "stage.phases=[recommendation,content]", "stage.max_steps_per_phase=3"],
    ),
}


def _run(rank, world, root, overrides):
    torch.set_num_threads(1)
    from cllm4rec_dist.train.builder import build
    from cllm4rec_dist.train.trainer import Trainer

    cfg = compose_train(root, overrides)
    built = build(cfg)
    result = Trainer(cfg, built).run()
    tables = {n: t.weight.detach().numpy().copy() for n, t in built.tables.items()}
    return result, tables


def run_stage(root, overrides):
    """Run in a fresh 1-rank process group (DeepSpeed needs one for trainable backbones)."""
    return run_ranks(_run, 1, root, overrides)[0]


@pytest.mark.parametrize("name", sorted(STAGES))
def test_golden_losses(name, tiny_dataset, tmp_path):
    root, overrides = STAGES[name]
    result, _ = run_stage(
        root, [f"data.dir={tiny_dataset}", f"run.dir={tmp_path / 'run'}", *overrides]
    )
    losses = [round(loss, 6) for _, _, loss in result["losses"]]
    phases = [phase for _, phase, _ in result["losses"]]
    assert all(np.isfinite(losses)) and len(losses) > 0
    golden = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
    if os.environ.get("UPDATE_GOLDEN") == "1" or name not in golden:
        if os.environ.get("CI"):
            pytest.fail(f"no golden losses for {name}; run with UPDATE_GOLDEN=1 and commit them")
        golden[name] = {"phases": phases, "losses": losses}
        GOLDEN.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")
    assert phases == golden[name]["phases"]
    np.testing.assert_allclose(losses, golden[name]["losses"], rtol=RTOL)
    if root == "finetune":
        assert set(result["test"]) >= {"recall@20", "recall@40", "ndcg@100", "users"}


MODES = {
    "full": ["model.mode=full"],
    # A LoRA checkpoint holds the adapters only: the frozen base comes from the build again.
    "lora": ["model.mode=lora", "model.lora.target_modules=[q_proj,v_proj]"],
}


@pytest.mark.parametrize("mode", sorted(MODES))
def test_resume_is_exact(mode, tiny_dataset, tmp_path):
    common = [
        f"data.dir={tiny_dataset}",
        "stage.epochs=2",
        "stage.content_warmup_epochs=1",
        "stage.phases=[collaborative,content]",
        "stage.max_steps_per_phase=4",
        "checkpoint.every_steps=3",
        *MODES[mode],
        "deepspeed=zero1",
        "tables.partitioned=true",
    ]
    full, full_tables = run_stage("pretrain", [*common, f"run.dir={tmp_path / 'a'}"])
    part, _ = run_stage("pretrain", [*common, f"run.dir={tmp_path / 'b'}", "run.max_steps=5"])
    assert part["stopped"] and part["global_step"] == 5
    rest, rest_tables = run_stage("pretrain", [*common, f"run.dir={tmp_path / 'b'}"])
    # Resumed from the step-4 checkpoint (epoch end): step 5 is recomputed, all must match.
    resumed = {step: loss for step, _, loss in rest["losses"]}
    assert min(resumed) == 5
    for step, _, loss in full["losses"]:
        if step in resumed:
            assert loss == pytest.approx(resumed[step], rel=1e-6, abs=1e-7)
    assert rest["global_step"] == full["global_step"]
    for name, weight in full_tables.items():
        np.testing.assert_allclose(rest_tables[name], weight, rtol=1e-6, atol=1e-7, err_msg=name)
    states = next(
        (tmp_path / "b" / "checkpoints").glob("step*/backbone/ds/mp_rank_00_model_states.pt")
    )
    saved = _safe_torch_load(str(states))["module"]
    if mode == "lora":
        # DeepSpeed drops frozen parameters by their deduplicated names: the head tied to the
        # token embeddings stays under its alias (the embeddings themselves are left out).
        assert saved and all("lora_" in k or k == "lm.lm_head.weight" for k in saved), list(saved)
        assert not any("embed_tokens" in k or "mlp" in k for k in saved)
    else:
        assert any("lora_" not in key for key in saved)


def _patched_run(overrides, hook):
    """Train with ``hook(call_number, loss_output)`` run on every loss; returns (exception or
    exit code, steps applied)."""
    torch.set_num_threads(1)
    from cllm4rec_dist.train.builder import TrainingParts, build
    from cllm4rec_dist.train.trainer import Trainer, TrainingDiverged

    calls = {"n": 0}
    original = TrainingParts.loss

    def loss(self, phase, batch):
        calls["n"] += 1
        return hook(calls["n"], original(self, phase, batch))

    TrainingParts.loss = loss
    cfg = compose_train("pretrain", overrides)
    trainer = Trainer(cfg, build(cfg))
    try:
        trainer.run()
    except TrainingDiverged as err:
        return str(err), trainer.state.global_step
    except SystemExit as exit_:
        return exit_.code, trainer.state.global_step
    return None, trainer.state.global_step


def _run_with_nan(rank, world, overrides, nan_at_call):
    """The ``nan_at_call``-th loss is NaN."""

    def hook(n, out):
        if n == nan_at_call:
            out.loss = out.loss * float("nan")
        return out

    return _patched_run(overrides, hook)


def test_nan_loss_stops_and_keeps_last_checkpoint(tiny_dataset, tmp_path):
    run_dir = tmp_path / "run"
    message, step = run_ranks(
        _run_with_nan,
        1,
        [
            f"data.dir={tiny_dataset}",
            f"run.dir={run_dir}",
            "stage.epochs=2",
            "stage.content_warmup_epochs=1",
            "stage.phases=[collaborative,content]",
            "stage.max_steps_per_phase=3",
            "checkpoint.every_steps=2",
        ],
        5,
    )[0]
    assert message is not None and "non-finite" in message
    assert step == 4  # steps 1-4 applied, the 5th (NaN) was not
    latest = (run_dir / "checkpoints" / "latest").read_text().strip()
    assert latest == "step00000004"  # saved at step 2 (every_steps), 3 (epoch end) and 4
    assert latest in message
    assert (run_dir / "checkpoints" / latest / "COMPLETE").exists()


def _run_with_signal(rank, world, overrides, signal_at_call):
    """SIGUSR1 arrives during the ``signal_at_call``-th loss."""
    import signal as sig

    def hook(n, out):
        if n == signal_at_call:
            os.kill(os.getpid(), sig.SIGUSR1)
        return out

    return _patched_run(overrides, hook)


def test_preemption_signal_checkpoints_and_resumes(tiny_dataset, tmp_path):
    overrides = [
        f"data.dir={tiny_dataset}",
        f"run.dir={tmp_path / 'run'}",
        "stage.epochs=2",
        "stage.content_warmup_epochs=1",
        "stage.phases=[collaborative,content]",
        "stage.max_steps_per_phase=3",
    ]
    code, step = run_ranks(_run_with_signal, 1, overrides, 2)[0]
    assert code == 75 and step == 2  # the step in flight completes, then checkpoint + exit
    assert (tmp_path / "run" / "checkpoints" / "latest").read_text().strip() == "step00000002"
    resumed, _ = run_stage("pretrain", overrides)
    assert min(s for s, _, _ in resumed["losses"]) == 3
    assert resumed["global_step"] == 9


def _run_two_ranks_sampled(rank, world, root, overrides):
    result, _ = _run(rank, world, root, overrides)
    return [loss for _, _, loss in result["losses"]], result.get("test")


@pytest.mark.distributed
def test_sampled_softmax_trains_on_two_ranks(tiny_dataset, tmp_path):
    """The item losses through the sampled head on partitioned tables (collaborative in
    pretraining, recommendation in finetuning): finite, the same on both ranks, different from
    the full softmax's, and evaluated exactly."""
    common = [
        f"data.dir={tiny_dataset}",
        "stage.epochs=1",
        "stage.max_steps_per_phase=3",
        "tables.partitioned=true",
        "softmax.num_samples=16",
    ]
    runs = {}
    for root, kind in (
        ("pretrain", "popularity"),
        ("finetune", "popularity"),
        ("finetune", "in_batch"),
        ("finetune", "full"),
    ):
        run_dir = f"run.dir={tmp_path / (root + kind)}"
        overrides = [*common, f"softmax.kind={kind}", run_dir]
        runs[root, kind] = run_ranks(_run_two_ranks_sampled, 2, root, overrides)
    for (root, kind), ((losses0, test0), (losses1, _)) in runs.items():
        assert len(losses0) > 0 and all(np.isfinite(losses0)), (root, kind)
        assert losses0 == losses1  # logged losses are averaged over ranks
        if root == "finetune":
            assert test0 is not None and 0 <= test0["recall@20"] <= 1
            if kind != "full":
                assert losses0 != runs["finetune", "full"][0][0], kind


def _built_softmax(rank, world, overrides):
    from cllm4rec_dist.model.sampling import SampledSoftmaxScorer
    from cllm4rec_dist.train.builder import build

    scorer = build(compose_train("pretrain", overrides)).scorer
    return scorer.sampler.kind if isinstance(scorer, SampledSoftmaxScorer) else "full"


def test_auto_softmax_follows_the_catalog_size(tiny_dataset, tmp_path):
    """softmax.kind=auto (the default): the exact full softmax on a catalog of at most
    softmax.full_max_items items, popularity-sampled negatives above."""
    base = [f"data.dir={tiny_dataset}", f"run.dir={tmp_path}", "tables.partitioned=false"]
    assert run_ranks(_built_softmax, 1, base)[0] == "full"
    assert run_ranks(_built_softmax, 1, [*base, "softmax.full_max_items=1"])[0] == "popularity"


def test_validation_ranks_a_user_sample_and_the_test_every_user(tiny_dataset, tmp_path):
    """eval.val_max_users below the catalog's users: each epoch's validation ranks about that
    many (the same users every epoch); the test still ranks all of them."""
    from cllm4rec_dist.data.manifest import load_manifest

    evaluated = load_manifest(str(tiny_dataset)).counts.evaluated_users
    result, _ = run_stage(
        "finetune",
        [
            f"data.dir={tiny_dataset}",
            f"run.dir={tmp_path / 'run'}",
            "stage.epochs=2",
            "stage.max_steps_per_phase=1",
            f"eval.val_max_users={evaluated['val'] // 2}",
        ],
    )
    history = json.loads((tmp_path / "run" / "metrics.json").read_text())["validation_history"]
    sampled = [h["users"] for h in history]
    assert len(sampled) == 2 and sampled[0] == sampled[1]
    assert 0 < sampled[0] < evaluated["val"]
    assert result["test"]["users"] == evaluated["test"]


def _rows_then_lm(rank, world, overrides):
    """Backbone parameters after the rows-only epoch and after the LM epoch, and the phases."""
    torch.set_num_threads(1)
    from cllm4rec_dist.train.builder import build
    from cllm4rec_dist.train.trainer import Trainer

    cfg = compose_train("pretrain", overrides)
    built = build(cfg)
    trainer = Trainer(cfg, built)
    snapshots = []

    def snapshot() -> dict[str, np.ndarray]:  # numpy: tensors do not travel back from a rank
        named = built.model.backbone.module.named_parameters()
        return {n: p.detach().numpy().copy() for n, p in named if p.requires_grad}

    snapshots.append(snapshot())
    tables = built.tables["item_collab"].weight.detach().clone()
    trainer.step_hooks.append(
        lambda t: snapshots.append(snapshot()) if t.state.global_step == 3 else None
    )
    result = trainer.run()
    moved = not torch.equal(built.tables["item_collab"].weight.detach(), tables)
    return [str(p) for _, p, _ in result["losses"]], snapshots + [snapshot()], moved


def test_rows_only_epochs_train_the_rows_and_leave_the_backbone(tiny_dataset, tmp_path):
    """stage.rows_only_epochs: the first epoch reads the ID skip alone, the LoRA adapters keep
    their init (their optimizer does not step), the next epoch runs the LM and moves them."""
    phases, (start, after_rows, end), moved = run_ranks(
        _rows_then_lm,
        1,
        [
            f"data.dir={tiny_dataset}", f"run.dir={tmp_path / 'run'}", "stage.epochs=1",
            "stage.rows_only_epochs=1", "stage.max_steps_per_phase=3", "model.id_skip=true",
            "model.mode=lora", "model.lora.target_modules=[q_proj,v_proj]",
        ],
    )[0]  # fmt: skip
    assert phases == ["collaborative_rows"] * 3 + ["collaborative"] * 3
    assert moved and start.keys() == after_rows.keys() == end.keys() and start
    assert all(np.array_equal(start[n], after_rows[n]) for n in start)
    assert any(not np.array_equal(after_rows[n], end[n]) for n in start)


def test_a_pretraining_of_rows_only_epochs_exports(tiny_dataset, tmp_path):
    """stage.epochs=0 with rows-only epochs: the cheap pretraining alone, exported."""
    run = tmp_path / "run"
    result, _ = run_stage(
        "pretrain",
        [
            f"data.dir={tiny_dataset}", f"run.dir={run}", "stage.epochs=0",
            "stage.rows_only_epochs=2", "stage.max_steps_per_phase=2", "model.id_skip=true",
        ],
    )  # fmt: skip
    assert [str(p) for _, p, _ in result["losses"]] == ["collaborative_rows"] * 4
    assert (run / "export" / "meta.json").is_file()
