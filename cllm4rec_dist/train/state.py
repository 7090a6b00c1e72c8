"""Where the trainer is, saved with every checkpoint so a resumed run continues exactly.

Data order is a pure function of (seed, epoch, phase, rank) and the number of rows already
consumed, and the collators draw from a generator seeded by (seed, epoch, phase, rank, step), so
the position below plus the RNG states is all that resume needs.

The file is plain JSON (``trainer_rank{r}.json``): the TrainerState fields and the torch, numpy
and Python RNG states as lists of integers. Nothing in it is unpickled, so a checkpoint planted in
a shared run directory cannot run code when it is resumed. Files of the old pickle format
(``trainer_rank{r}.pt``) are refused, never loaded.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT = "cllm4rec_dist.trainer_state/1"


class TrainerStateError(ValueError):
    """A trainer state file is unreadable, truncated, of another format, or a pickle."""


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
    """This process's torch, numpy and Python RNG states as JSON-ready lists."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state().tolist(),
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "python": [version, list(internal), gauss],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the states returned by ``rng_state``."""
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def save_state(path: Path, state: TrainerState) -> None:
    """Per-rank file: trainer position (identical on all ranks) and this rank's RNG states."""
    blob = {"format": FORMAT, "trainer": asdict(state), "rng": rng_state()}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(blob))
    os.replace(tmp, path)


def load_state(path: Path) -> TrainerState:
    """Read a ``save_state`` file, restore its RNG states and return the TrainerState.

    Raises TrainerStateError naming the file when it is not this JSON format (a pickle, a
    truncated write, another format) or lacks a field; a pickle is never unpickled.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:1] == b"\x80" or raw[:4] == b"PK\x03\x04":  # pickle protocol >= 2 / torch zip
        raise TrainerStateError(
            f"{path}: a pickle / torch.save file; trainer state is read only as JSON, because "
            "unpickling a file from a shared run directory can run arbitrary code. Delete this "
            "checkpoint (or start a fresh run.dir)"
        )
    try:
        blob = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise TrainerStateError(f"{path}: truncated or corrupt trainer state ({err})") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        found = blob.get("format") if isinstance(blob, dict) else type(blob).__name__
        raise TrainerStateError(f"{path}: format {found!r}, expected {FORMAT!r}")
    trainer, names = blob.get("trainer"), {f.name for f in fields(TrainerState)}
    if not isinstance(trainer, dict) or set(trainer) - names:
        raise TrainerStateError(f"{path}: 'trainer' must be an object with keys {sorted(names)}")
    try:
        set_rng_state(blob["rng"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise TrainerStateError(f"{path}: bad 'rng' entry ({type(err).__name__}: {err})") from None
    return TrainerState(**trainer)
