"""Config checks every command shares: no float value may be NaN or infinite (``inf`` parses as a
float, and a learning rate of inf trains to NaN, a memory budget of nan "fits")."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf


def non_finite_values(cfg: DictConfig, skip: tuple[str, ...] = ()) -> list[tuple[str, float]]:
    """(dotted key, value) of every NaN or infinite float in ``cfg`` (a DictConfig, a dataclass
    or a plain mapping; list elements as ``key[i]``). Keys under a prefix in ``skip`` (free-form sections
    handed to another library as they are) are not looked at."""
    tree = cfg
    if isinstance(cfg, DictConfig | ListConfig):
        tree = OmegaConf.to_container(cfg, resolve=True)
    elif dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        tree = dataclasses.asdict(cfg)
    found: list[tuple[str, float]] = []

    def walk(value: Any, key: str) -> None:
        if key and any(key == s or key.startswith(s + ".") for s in skip):
            return
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{key}.{k}" if key else str(k))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, f"{key}[{i}]")
        elif isinstance(value, float) and not math.isfinite(value):
            found.append((key, value))

    walk(tree, "")
    return found


def non_finite_problem(cfg: DictConfig, skip: tuple[str, ...] = ()) -> str | None:
    """One line naming the first non-finite key and its value (None: every float is finite)."""
    found = non_finite_values(cfg, skip)
    if not found:
        return None
    (key, value), rest = found[0], [k for k, _ in found[1:4]]
    more = f" (so is {', '.join(rest)})" if rest else ""
    return f"invalid config `{key}`: {value} is not a finite number{more}"
