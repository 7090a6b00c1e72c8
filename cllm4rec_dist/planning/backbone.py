"""The backbone's size, from its Hugging Face config alone: the model is built on the ``meta``
device, so a 7 B backbone is counted in a second without reading (or having) its weights."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig

from cllm4rec_dist.model.loading import inject_lora, tiny_config
from cllm4rec_dist.model.options import MODES, SOURCES, one_of
from cllm4rec_dist.planning.memory import BackboneShape

if TYPE_CHECKING:
    from cllm4rec_dist.config import ModelConfig


def hf_config(model_cfg: ModelConfig, vocab_size: int | None) -> PretrainedConfig:
    """The HF config ``model_cfg`` (the training config's ``model`` section) would build.

    debug: the random Llama of cllm4rec_dist.model.loading (same fields), with ``vocab_size`` the
    dataset tokenizer's; local: ``<model.path>/config.json`` (weights need not exist);
    smollm2_gguf: the converted cache's config.json (run one training or ``smollm2_cache`` first).
    """
    if model_cfg.source == "tiny":
        if vocab_size is None:
            raise ValueError(
                "a tiny backbone's vocabulary is the dataset tokenizer's: give "
                "data.dir (a prepared dataset) or plan.vocab_size"
            )
        return tiny_config(model_cfg, vocab_size)
    if model_cfg.source == "local":
        path = Path(str(model_cfg.path))
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"model.path {path} has no config.json")
        return AutoConfig.from_pretrained(path)
    if model_cfg.source == "smollm2_gguf":
        from cllm4rec_dist.model.loading import smollm2_cache

        return AutoConfig.from_pretrained(smollm2_cache(model_cfg.cache_dir))
    raise ValueError(f"model.source {model_cfg.source!r} is not one of {one_of(SOURCES)}")


def _lora_params(lm: torch.nn.Module, model_cfg: ModelConfig) -> int:
    inject_lora(lm, model_cfg.lora)
    return sum(p.numel() for name, p in lm.named_parameters() if "lora_" in name)


def backbone_shape(model_cfg: ModelConfig, vocab_size: int | None = None) -> BackboneShape:
    """Parameter counts (all, trainable under ``model.mode``) and layer sizes of the backbone."""
    config = hf_config(model_cfg, vocab_size)
    if model_cfg.mode not in MODES:
        raise ValueError(f"model.mode {model_cfg.mode!r} is not one of {one_of(MODES)}")
    with torch.device("meta"):
        lm = AutoModelForCausalLM.from_config(config)
        # Shared (tied) tensors are yielded once by parameters().
        params = sum(p.numel() for p in lm.parameters())
        trainable = {"frozen": 0, "full": params}.get(model_cfg.mode)
        if trainable is None:
            trainable = _lora_params(lm, model_cfg)
            params += trainable
    text = config.get_text_config()
    hidden = int(text.hidden_size)
    return BackboneShape(
        params=params,
        trainable=trainable,
        hidden=hidden,
        layers=int(text.num_hidden_layers),
        heads=int(text.num_attention_heads),
        intermediate=int(
            getattr(text, "intermediate_size", None) or getattr(text, "n_inner", None) or 4 * hidden
        ),
        vocab=int(lm.get_input_embeddings().num_embeddings),
    )


__all__ = ["backbone_shape", "hf_config"]
