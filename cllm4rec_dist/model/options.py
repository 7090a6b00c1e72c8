"""The backbone's options, spelled once: the config schema, its validation, the loader and the
memory planner all read them from here."""

from __future__ import annotations

from typing import Literal, get_args

ModelSource = Literal["debug", "local", "smollm2_gguf"]
Dtype = Literal["fp32", "bf16"]
BackboneMode = Literal["frozen", "lora", "full"]  # frozen: the paper's setting
DebugInit = Literal["identity", "random"]  # the debug backbone's weights (loading._debug_lm)

SOURCES: tuple[str, ...] = get_args(ModelSource)
DTYPES: tuple[str, ...] = get_args(Dtype)
MODES: tuple[str, ...] = get_args(BackboneMode)
DEBUG_INITS: tuple[str, ...] = get_args(DebugInit)
# Bytes per element of each dtype (the loader's torch dtypes have these itemsizes).
DTYPE_BYTES: dict[str, int] = {"fp32": 4, "bf16": 2}


def one_of(values: tuple[str, ...]) -> str:
    """``a, b, c``: for messages naming the allowed values."""
    return ", ".join(values)
