"""The larger-backbone configs (model=gpt2_local / llama_local, the ZeRO-3 experiments) on tiny
random models of each family saved as local HF directories: the planner's meta-device parameter
counts equal the built backbones', and the experiments train for real (one process, CPU)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from cllm4rec_dist.distributed.spawn import free_port
from cllm4rec_dist.planning.backbone import backbone_shape
from cllm4rec_dist.planning.schema import register_plan

REPO = Path(__file__).resolve().parents[2]
register_plan()


@pytest.fixture(scope="module")
def hf_dirs(tiny_dataset, tmp_path_factory) -> dict[str, Path]:
    """Tiny random GPT-2 and Llama directories with the dataset's tokenizer."""
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(
        tokenizer_file=str(tiny_dataset / "tokenizer" / "tokenizer.json"),
        pad_token="<pad>",
        eos_token="<eos>",
        unk_token="<unk>",
    )
    configs = {
        "llama": LlamaConfig(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            max_position_embeddings=256,
            tie_word_embeddings=True,
        ),
        "gpt2": GPT2Config(
            vocab_size=len(tok),
            n_embd=32,
            n_layer=2,
            n_head=2,
            n_positions=256,
            bos_token_id=tok.eos_token_id,
            eos_token_id=tok.eos_token_id,
        ),
    }
    root = tmp_path_factory.mktemp("hf")
    for name, config in configs.items():
        AutoModelForCausalLM.from_config(config).save_pretrained(root / name)
        tok.save_pretrained(root / name)
    return {"gpt2": root / "gpt2", "llama": root / "llama"}


def _env(hf_dirs) -> dict[str, str]:
    return {"CLLM4REC_GPT2_DIR": str(hf_dirs["gpt2"]), "CLLM4REC_LLAMA_DIR": str(hf_dirs["llama"])}


@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize("mode", ["frozen", "lora", "full"])
def test_planner_counts_equal_the_built_backbone(hf_dirs, monkeypatch, family, mode):
    from cllm4rec_dist.model.loading import build_backbone

    for key, value in _env(hf_dirs).items():
        monkeypatch.setenv(key, value)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose(
            config_name="plan",
            overrides=["data.dir=/tmp/x", f"model={family}_local", f"model.mode={mode}"],
        )
    built = build_backbone(cfg.model)
    planned = backbone_shape(cfg.model)
    assert planned.params == sum(p.numel() for p in built.parameters())
    assert planned.trainable == sum(p.numel() for p in built.parameters() if p.requires_grad)
    assert (planned.hidden, planned.vocab) == (built.hidden_size, built.vocab_size)
    assert (planned.trainable > 0) == (mode != "frozen")


@pytest.mark.distributed
@pytest.mark.parametrize(
    "experiment",
    # The Llama path is the tiny backbone's, trained by every other test: opt-in here.
    ["gpt2_zero3_full", pytest.param("llama_zero3_lora", marks=pytest.mark.slow)],
)
def test_zero3_experiments_train(hf_dirs, tiny_dataset, tmp_path, experiment):
    # A one-rank process group from the environment: DeepSpeed otherwise looks for MPI.
    env = dict(
        os.environ,
        **_env(hf_dirs),
        DS_ACCELERATOR="cpu",
        OMP_NUM_THREADS="1",
        RANK="0",
        WORLD_SIZE="1",
        LOCAL_RANK="0",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(free_port()),
    )
    cmd = [
        sys.executable,
        "launchers/pretrain.py",
        f"experiment={experiment}",
        f"data.dir={tiny_dataset}",
        f"run.dir={tmp_path}",
        "data.collab_batch_size=4",
        "data.content_batch_size=4",
        "data.max_items=16",
        "data.max_text_tokens=24",
        "run.progress_bar=false",
        "stage.epochs=1",
        "stage.content_warmup_epochs=0",
        "stage.max_steps_per_phase=2",
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    resolved = (tmp_path / "config.yaml").read_text()
    assert "zero_stage: 3" in resolved and "gradient_checkpointing: true" in resolved
    assert (tmp_path / "export" / "backbone" / "state.safetensors").exists()
