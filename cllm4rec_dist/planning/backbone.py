"""The backbone's size, from its Hugging Face config alone: the model is built on the ``meta``
device, so a 7 B backbone is counted in a second without reading (or having) its weights."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig

from cllm4rec_dist.model.loading import inject_lora, pretrained_dir, tiny_config
from cllm4rec_dist.model.options import BackboneMode, ModelSource
from cllm4rec_dist.planning.memory import BackboneShape

if TYPE_CHECKING:
    from cllm4rec_dist.config import ModelConfig


def hf_config(model_cfg: ModelConfig, vocab_size: int | None) -> PretrainedConfig:
    """The HF config ``model_cfg`` (the training config's ``model`` section) would build.

    tiny: the random Llama of cllm4rec_dist.model.loading (same fields), with ``vocab_size`` the
    dataset tokenizer's; local: ``<model.path>/config.json`` (weights need not exist);
    smollm2_gguf: the converted cache's config.json (run one training or ``smollm2_cache`` first).
    """
    if model_cfg.source == ModelSource.tiny:
        if vocab_size is None:
            raise ValueError(
                "a tiny backbone's vocabulary is the dataset tokenizer's: give "
                "data.dir (a prepared dataset) or plan.vocab_size"
            )
        return tiny_config(model_cfg, vocab_size)
    return AutoConfig.from_pretrained(pretrained_dir(model_cfg))


def _lora_params(lm: torch.nn.Module, model_cfg: ModelConfig) -> int:
    inject_lora(lm, model_cfg.lora)
    return sum(p.numel() for name, p in lm.named_parameters() if "lora_" in name)


def backbone_shape(model_cfg: ModelConfig, vocab_size: int | None = None) -> BackboneShape:
    """Parameter counts (all, trainable under ``model.mode``) and layer sizes of the backbone."""
    config = hf_config(model_cfg, vocab_size)
    with torch.device("meta"):
        lm = AutoModelForCausalLM.from_config(config)
        # Shared (tied) tensors are yielded once by parameters().
        params = sum(p.numel() for p in lm.parameters())
        trainable = {BackboneMode.frozen: 0, BackboneMode.full: params}.get(model_cfg.mode)
        if model_cfg.mode == BackboneMode.lora:
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
