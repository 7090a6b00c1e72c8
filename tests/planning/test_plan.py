"""launchers/plan.py: composes like the training launchers, reads counts from the dataset, prints
the layout, the estimate and launch commands that carry the training overrides."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from cllm4rec_dist.config import validate
from cllm4rec_dist.data.manifest import load_manifest
from cllm4rec_dist.planning.estimate import make_plan, phases
from cllm4rec_dist.planning.render import launch_commands, render_text, training_overrides
from cllm4rec_dist.planning.schema import register_plan

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"
register_plan()


def _compose(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name="plan", overrides=overrides)


def test_plan_root_composes_with_every_experiment(monkeypatch):
    monkeypatch.setenv("CLLM4REC_MODELS_DIR", "/nonexistent")
    for exp in sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml")):
        cfg = _compose(["data.dir=/tmp/x", f"experiment={exp}"])
        validate(cfg)
        assert cfg.plan.launcher == "pretrain"


def test_debug_plan_reads_the_dataset(tiny_dataset):
    train = [f"data.dir={tiny_dataset}", "model.mode=full", "deepspeed=zero2"]
    cfg = _compose([*train, "plan.nodes=2", "plan.gpus_per_node=4", "plan.partition=gpu"])
    plan = make_plan(cfg, train)
    manifest = load_manifest(tiny_dataset)
    assert plan.world_size == 8
    assert (plan.num_users, plan.num_items) == (manifest.num_users, manifest.num_items)
    assert plan.backbone["trainable"] == plan.backbone["params"] > 0
    assert plan.commands["one_node"] == (
        "deepspeed --num_gpus 4 --no_local_rank launchers/pretrain.py " + shlex.join(train)
    )
    assert plan.commands["cluster"].startswith(
        "sbatch --nodes=2 --ntasks-per-node=4 --gpus-per-node=4 --partition=gpu "
        "slurm/pretrain.sbatch data.dir="
    )
    text = render_text(plan)
    assert "8 ranks = 2 node(s) x 4 GPUs" in text and "ZeRO reduce bucket" in text


def test_counts_from_plan_keys_need_no_dataset(tmp_path):
    model = tmp_path / "llama"
    model.mkdir()
    (model / "config.json").write_text(
        json.dumps(
            {
                "model_type": "llama",
                "hidden_size": 128,
                "intermediate_size": 256,
                "num_attention_heads": 4,
                "num_hidden_layers": 2,
                "vocab_size": 1000,
            }
        )
    )
    cfg = _compose(
        [
            "data.dir=/nonexistent",
            "model=llama_local",
            f"model.path={model}",
            "plan.num_users=1000000",
            "plan.num_items=50000",
            "plan.gpus_per_node=2",
        ]
    )
    plan = make_plan(cfg, [])
    assert plan.memory.static[0].bytes == 2 * plan.backbone["params"]  # frozen bf16
    tables = {t.name: t.bytes for t in plan.memory.static}["ID tables (4 x fp32 rows / W)"]
    assert tables == 4 * 2 * (500_000 + 25_000) * 128


def test_stage_phases_follow_the_stage_config():
    cfg = _compose(["data.dir=/tmp/x", "stage=finetune", "stage.phases=[recommendation,content]"])
    got, seq = phases(cfg, prompt_tokens=10, users=10**5, world_size=2)
    assert [p.name for p in got] == ["recommendation", "content"]
    rec = got[0]
    assert rec.scored_rows == cfg.data.rec_batch_size
    assert seq["recommendation"] == 20 + cfg.data.max_items
    pretrain = ["stage.content_warmup_epochs=1", "stage.phases=[collaborative,content]"]
    pre, _ = phases(_compose(["data.dir=/tmp/x", *pretrain]), 10, users=10**5, world_size=2)
    assert [p.name for p in pre] == ["content", "collaborative"]  # warm-up first
    rows = ["stage.rows_only_epochs=2", "model.id_skip=true", *pretrain]
    pre, _ = phases(_compose(["data.dir=/tmp/x", *rows]), 10, users=10**5, world_size=2)
    assert [p.name for p in pre] == ["collaborative_rows", "content", "collaborative"]
    assert pre[0].tokens == 0 and pre[0].scored_rows == pre[2].scored_rows  # no backbone
    only = _compose(["data.dir=/tmp/x", *rows, "stage.epochs=0"])
    assert [p.name for p in phases(only, 10, users=10**5, world_size=2)[0]] == [
        "collaborative_rows"
    ]


def test_commands_and_overrides():
    assert training_overrides(["a=1", "plan.nodes=2", "+plan.x=1", "deepspeed=zero3"]) == [
        "a=1",
        "deepspeed=zero3",
    ]
    cpu = launch_commands("finetune", ["stage.init_from=/a b"], 1, 2, "cpu")
    assert cpu["one_node"] == (
        "DS_ACCELERATOR=cpu deepspeed --num_gpus 2 --no_local_rank "
        "launchers/finetune.py 'stage.init_from=/a b'"
    )
    assert "--gpus-per-node" not in cpu["cluster"]
    with pytest.raises(ValueError, match="not a valid Launcher"):
        launch_commands("train", [], 1, 1, "cuda")


def test_launcher_prints_json(tiny_dataset):
    proc = subprocess.run(
        [
            sys.executable,
            "launchers/plan.py",
            f"data.dir={tiny_dataset}",
            "plan.format=json",
            "plan.device=cpu",
            "plan.gpus_per_node=2",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["world_size"] == 2
    mem = out["memory_bytes"]
    assert mem["training_peak"] > mem["overhead"] > 0
    assert mem["peak_phase"] in ("collaborative", "content")


def test_a_large_catalog_plans_the_batch_and_softmax_the_trainer_uses():
    """Above softmax.full_max_items the head scores the sampled candidates, not every item, and
    above data.max_steps_per_epoch steps per pass the batch grows: memory and step time follow."""
    base = [
        "data.dir=/nonexistent",
        "plan.num_items=100000",
        "plan.vocab_size=1000",
        "plan.mean_items=20",
        "plan.device=cpu",
        "plan.gpus_per_node=2",
    ]
    small = make_plan(_compose([*base, "plan.num_users=100000"]), [])
    large = make_plan(_compose([*base, "plan.num_users=1000000"]), [])
    full = make_plan(_compose([*base, "plan.num_users=1000000", "softmax.kind=full"]), [])
    _, small_phase = small.steps["collaborative"]
    est, phase = large.steps["collaborative"]
    assert small_phase.documents == 32 and small_phase.steps_per_epoch == 1562
    # 500k rows per rank: 2,000 steps would take 250 per step; growth stops at 4 x 32.
    assert phase.documents == 128 and phase.steps_per_epoch == 3906
    grown = make_plan(
        _compose([*base, "plan.num_users=1000000", "data.max_batch_growth=16"]), []
    ).steps["collaborative"][1]
    assert grown.documents == 250 and grown.steps_per_epoch == 2000
    assert large.softmax.startswith("popularity") and full.softmax == "full"
    heads = {t.name: t.note for t in est.terms}
    assert heads["item head matmuls"].endswith("[64, 4,096]")  # 8,192 candidates over 2 shards
    full_heads = {t.name: t.note for t in full.steps["collaborative"][0].terms}
    assert full_heads["item head matmuls"].endswith("[64, 50,000]")
    assert est.seconds < full.steps["collaborative"][0].seconds
    # The sampled head keeps the exponentials of every gathered row (2 ranks x 128 users x 64
    # items at most) against this shard's share of the candidates until its backward.
    block = {t.name: t.note for t in large.memory.transient["collaborative"]}
    assert block["scorer kept exponentials"] == "[16,384, 4,096] fp32"  # 8,192 candidates / 2
    assert "softmax   popularity, 8,192 candidates per step" in render_text(large)
    table = {t.name: t.note for t in large.memory.transient["collaborative"]}
    assert table["item table gradient + update temporaries"].startswith("sparse")


def test_calibration_constants_sit_beside_the_runs_that_set_them():
    """calibration.yaml: every constant says whether it was measured; a measured one names its
    command and its runs; the planner reads the values from it."""
    import yaml

    from cllm4rec_dist.planning.estimate import CALIBRATION, calibration, overhead_gib, rates
    from cllm4rec_dist.planning.schema import PlanConfig

    raw = yaml.safe_load(CALIBRATION.read_text())
    entries = [*raw["overhead_gib"].values()]
    entries += [e for device in raw["rates"].values() for e in device.values()]
    entries += [*raw["serving_files"].values()]
    for entry in entries:
        assert {"value", "status", "runs"} <= set(entry), entry
        if entry["status"] == "measured":
            assert entry["command"] and entry["runs"], entry
    values = calibration()
    assert overhead_gib(PlanConfig(device="cpu")) == values["overhead_gib"]["cpu"] == 0.45
    assert rates(PlanConfig(device="cpu")).step_overhead_s == 0.06
    assert rates(PlanConfig(device="cpu")).matmul_flops_per_s == 74.6e9
    assert values["serving_files"]["bytes_per_seen_item"] == 19.9
    assert rates(PlanConfig(device="cuda", step_overhead_s=0.5)).step_overhead_s == 0.5
