"""Where the trainer is, saved with every checkpoint so a resumed run continues exactly.

Data order is a pure function of (seed, epoch, phase, rank) and the number of rows already
consumed, and the collators draw from a generator seeded by (seed, epoch, phase, rank, step), so
the position below plus the torch RNG state is all that resume needs.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch


@dataclass
class TrainerState:
    stage: str = "pretrain"
    epoch: int = 0  # current epoch (0-based)
    phase_index: int = 0  # index into the epoch's phase list
    step_in_phase: int = 0  # optimizer steps already done in the current phase
    global_step: int = 0
    best_metric: float = float("-inf")
    best_epoch: int = -1
    best_checkpoint: str | None = None  # checkpoint directory name of the best validation epoch
    finished: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)  # validation metrics per epoch

    def position(self) -> tuple[int, int, int]:
        return (self.epoch, self.phase_index, self.step_in_phase)


def rng_state() -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def save_state(path: Path, state: TrainerState) -> None:
    """Per-rank file: trainer position (identical on all ranks) and this rank's RNG states."""
    tmp = path.with_suffix(".tmp")
    torch.save({"trainer": asdict(state), "rng": rng_state()}, tmp)
    tmp.replace(path)


def load_state(path: Path) -> TrainerState:
    blob = torch.load(path, weights_only=False)
    set_rng_state(blob["rng"])
    return TrainerState(**blob["trainer"])
