"""The backbone's options, spelled once: the config schema, its validation, the loader and the
memory planner all read them from here."""

from __future__ import annotations

from typing import Literal, get_args

# tiny: the random-init Llama of configs/model/tiny.yaml; "debug" is its old name, accepted with a
# warning (config.validate turns it into tiny before anything reads it).
ModelSource = Literal["tiny", "local", "smollm2_gguf", "debug"]
Dtype = Literal["fp32", "bf16"]
BackboneMode = Literal["frozen", "lora", "full"]  # frozen: the paper's setting
TinyInit = Literal["identity", "random"]  # the tiny backbone's weights (loading._tiny_lm)

SOURCES: tuple[str, ...] = get_args(ModelSource)
SOURCE_ALIASES = {"debug": "tiny"}  # old name -> name
DTYPES: tuple[str, ...] = get_args(Dtype)
MODES: tuple[str, ...] = get_args(BackboneMode)
TINY_INITS: tuple[str, ...] = get_args(TinyInit)
# Bytes per element of each dtype (the loader's torch dtypes have these itemsizes).
DTYPE_BYTES: dict[str, int] = {"fp32": 4, "bf16": 2}


def one_of(values: tuple[str, ...]) -> str:
    """``a, b, c``: for messages naming the allowed values."""
    return ", ".join(values)
