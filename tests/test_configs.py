"""Every config file under configs/ composes against its typed schema, and values validate."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from cllm4rec_dist.baselines.config import register_baseline
from cllm4rec_dist.config import ConfigError, register, validate
from cllm4rec_dist.serve.config import ServeConfig, register_serve

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TRAIN_ROOTS = ("pretrain", "finetune", "evaluate", "predict", "infer")
GROUPS = ("model", "data", "deepspeed", "stage", "experiment")

register()
register_baseline()
register_serve()


def _compose(name: str, overrides: list[str], config_dir: Path = CONFIGS):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        return compose(config_name=name, overrides=overrides)


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


@pytest.mark.parametrize("root", TRAIN_ROOTS)
def test_train_roots_compose_and_validate(root, monkeypatch):
    monkeypatch.setenv("CLLM4REC_BACKBONE_DIR", "/nonexistent")
    cfg = _compose(root, ["data.dir=/tmp/x"])
    OmegaConf.to_container(cfg.model, resolve=True)
    validate(cfg)


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in _options(g)])
def test_every_group_option_composes(group, option, monkeypatch):
    monkeypatch.setenv("CLLM4REC_BACKBONE_DIR", "/nonexistent")
    root = "pretrain"
    if group == "stage":
        root = option if option in TRAIN_ROOTS else "pretrain"
    overrides = [f"{group}={option}", "data.dir=/tmp/x"]
    cfg = _compose(root, overrides)
    resolved = OmegaConf.to_container(cfg, resolve=False)
    assert resolved["stage"]["name"] in TRAIN_ROOTS
    if group != "stage" or option != "evaluate":
        validate(cfg)


def test_baseline_root_composes():
    cfg = _compose("baseline", ["data_dir=/tmp/x"])
    assert cfg.method == "popularity"


def test_serve_root_composes():
    cfg = _compose("serve", ["init_from=/tmp/x", "serve.replicas=2", "ray.address=auto"])
    typed = OmegaConf.to_object(cfg)
    assert isinstance(typed, ServeConfig) and typed.serve.host == "127.0.0.1"
    assert (typed.serve.replicas, typed.ray.address) == (2, "auto")


def test_data_prep_configs_compose():
    prep = CONFIGS / "data_prep"
    if not prep.exists():
        pytest.skip("configs/data_prep not present")
    sources = sorted(p.stem for p in (prep / "source").glob("*.yaml"))
    assert "synthetic" in sources
    from data_prep.config import register_configs

    register_configs()
    for source in sources:
        cfg = _compose("config", [f"source={source}", "output_dir=/tmp/x"], prep)
        assert cfg.source.name == source


@pytest.mark.parametrize(
    "override,key",
    [
        ("deepspeed.zero_stage=4", "deepspeed.zero_stage"),
        ("stage.mask_fraction=1.5", "stage.mask_fraction"),
        ("eval.select_metric=ndcg@7", "eval.select_metric"),
        ("eval.val_max_users=-1", "eval.val_max_users"),
        ("data.collab_batch_size=0", "data.collab_batch_size"),
        # Issue 13: values that used to fail mid-run or be accepted silently.
        ("run.log_every_steps=0", "run.log_every_steps"),
        ("optim.lr=-1e-4", "optim.lr"),
        ("checkpoint.every_steps=-5", "checkpoint.every_steps"),
        ("optim.grad_clip=-1", "optim.grad_clip"),
        ("optim.warmup_fraction=-0.1", "optim.warmup_fraction"),
        ("tables.init_std=-0.02", "tables.init_std"),
        ("stage.max_steps_per_phase=0", "stage.max_steps_per_phase"),
        ("checkpoint.keep_last=0", "checkpoint.keep_last"),
        ("stage.patience=-1", "stage.patience"),
        ("data.min_steps_per_epoch=0", "data.min_steps_per_epoch"),
        ("data.max_steps_per_epoch=8", "data.max_steps_per_epoch"),  # below the minimum, 16
        ("data.max_batch_growth=0", "data.max_batch_growth"),
        ("softmax.full_max_items=0", "softmax.full_max_items"),
        ("data.num_workers=-1", "data.num_workers"),
        ("run.max_steps=0", "run.max_steps"),
        ("softmax.num_samples=0", "softmax.num_samples"),
        ("softmax.alpha=-1", "softmax.alpha"),
        ("model.lm_scale=0", "model.lm_scale"),  # without model.id_skip
        ("model.lm_scale=-1", "model.lm_scale"),
        ("stage.rows_only_epochs=1", "stage.rows_only_epochs"),  # without model.id_skip
        ("stage.phases=[collaborative_rows]", "stage.phases"),
        ("infer.neighbor_lm_weight=2", "infer.neighbor_lm_weight"),
        ("tables.collab_dims=-1", "tables.collab_dims"),
        ("tables.collab_norm=0", "tables.collab_norm"),
    ],
)
def test_invalid_values_name_the_key(override, key):
    cfg = _compose("pretrain", ["data.dir=/tmp/x", override])
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        validate(cfg)


@pytest.mark.parametrize(
    "override,key,allowed",
    [
        ("model.mode=frozn", "model.mode", "frozen, lora, full"),
        ("model.tiny_init=zeros", "model.tiny_init", "identity, random"),
        ("model.dtype=fp16", "model.dtype", "fp32, bf16"),
        ("model.source=gpt5", "model.source", "tiny, local, smollm2_gguf, debug"),
        ("stage.name=train", "stage.name", "pretrain, finetune, evaluate"),
        (
            "stage.phases=[collaborative,reviews]",
            "stage.phases[1]",
            "collaborative, collaborative_rows, content",
        ),
        ("optim.schedule=step", "optim.schedule", "cosine, linear, constant"),
        ("stage.rec_target=some", "stage.rec_target", "all, heldout"),
        ("softmax.kind=uniform", "softmax.kind", "auto, full, popularity, in_batch"),
        ("tables.optimizer=adam", "tables.optimizer", "rowwise_adagrad"),
        ("predict.split=train", "predict.split", "val, test"),
        ("predict.cold_items=some", "predict.cold_items", "exclude, include"),
        ("infer.method=knn", "infer.method", "text_neighbors, lm, lm_tokens"),
        ("infer.placement=move", "infer.placement", "copy, linear"),
    ],
)
def test_kinds_are_checked_by_omegaconf_at_compose(override, key, allowed):
    """Every kind is an Enum of the schema: a value outside it fails when the config is composed,
    with the key and the allowed values, before validate or any work."""
    with pytest.raises(Exception) as err:
        _compose("pretrain", ["data.dir=/tmp/x", override])
    text = f"{err.value} {err.value.__cause__}"
    assert key in text and allowed in text, text


def test_type_errors_fail_at_compose():
    with pytest.raises(Exception, match="epochs"):
        _compose("pretrain", ["data.dir=/tmp/x", "stage.epochs=many"])


@pytest.mark.parametrize("override", ["model=debug", "model.source=debug"])
def test_the_old_backbone_name_warns_and_runs_tiny(override):
    tiny = _compose("pretrain", ["data.dir=/tmp/x"])
    cfg = _compose("pretrain", ["data.dir=/tmp/x", override])
    with pytest.warns(FutureWarning, match="model.source=debug .* now called tiny"):
        validate(cfg)
    assert OmegaConf.to_container(cfg.model) == OmegaConf.to_container(tiny.model)


def test_a_pretrained_model_picks_up_the_recipe_and_tiny_does_not(monkeypatch):
    monkeypatch.setenv("CLLM4REC_BACKBONE_DIR", "/nonexistent")
    smol = _compose("finetune", ["data.dir=/tmp/x", "model=smollm2"])
    assert smol.model.id_skip and smol.model.lm_scale < 1 and smol.tables.collab_dims > 0
    assert smol.tables.lr == 0.01  # finetune.yaml's table lr comes after the recipe's
    assert smol.stage.rows_only_epochs == 0  # pretraining only
    pre = _compose("pretrain", ["data.dir=/tmp/x", "model=smollm2", "stage.epochs=2"])
    assert pre.stage.rows_only_epochs > 0 and pre.stage.epochs == 2
    validate(pre)
    tiny = _compose("finetune", ["data.dir=/tmp/x"])
    assert not tiny.model.id_skip and tiny.model.lm_scale == 1 and tiny.tables.collab_dims == 0
    assert tiny.model.rec_pool == "last"
