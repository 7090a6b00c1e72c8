"""``launchers/<stage>.py`` with a fault injected, for tests of recovery.

    deepspeed ... tests/train/fault_launcher.py <stage> <overrides>

with ``KILL_AT_STEP=n`` in the environment: rank ``KILL_RANK`` (default 1) SIGKILLs itself right
after global step n (after that step's checkpoint, if one is due). The hook goes on every Trainer
through its ``step_hooks``, so the library carries no fault-injection code.
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
from pathlib import Path

from cllm4rec_dist.train.trainer import Trainer

REPO = Path(__file__).resolve().parents[2]


def kill_after(step: int, rank: int):
    def hook(trainer: Trainer) -> None:
        if trainer.state.global_step == step and trainer.rank == rank:
            os.kill(os.getpid(), signal.SIGKILL)

    return hook


def main() -> None:
    stage = sys.argv.pop(1)
    hook = kill_after(int(os.environ["KILL_AT_STEP"]), int(os.environ.get("KILL_RANK", "1")))
    init = Trainer.__init__

    def init_with_fault(self: Trainer, *args, **kwargs) -> None:
        init(self, *args, **kwargs)
        self.step_hooks.append(hook)

    Trainer.__init__ = init_with_fault
    runpy.run_path(str(REPO / "launchers" / f"{stage}.py"), run_name="__main__")


if __name__ == "__main__":
    main()
