"""Preemption: SIGUSR1 / SIGTERM ask the step loop to checkpoint and exit with a requeue status.

Slurm sends ``--signal=USR1@…`` before the time limit, and SIGTERM on preemption; the batch
scripts (``slurm/lib.sh``) requeue the job when the trainer exits with ``PREEMPTED_EXIT_CODE``
or leaves ``PREEMPTED_MARKER`` in ``run.dir``.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

# EX_TEMPFAIL: the Slurm scripts requeue the job when the trainer exits with it.
PREEMPTED_EXIT_CODE = 75
PREEMPTED_MARKER = "PREEMPTED"  # in run.dir: the checkpoint a preempted run saved


class Preempted(Exception):
    """SIGUSR1/SIGTERM arrived (Slurm preemption or time limit): checkpoint, then exit 75."""


class PreemptionSignal:
    """Records SIGUSR1 / SIGTERM for the step loop (which all-reduces the flag, so every rank
    stops at the same step)."""

    def __init__(self) -> None:
        self.requested = False
        for sig in (signal.SIGUSR1, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True


def clear_marker(run_dir: Path) -> None:
    (run_dir / PREEMPTED_MARKER).unlink(missing_ok=True)


def write_marker(run_dir: Path, checkpoint: Path) -> None:
    """The batch script requeues on this marker too: with --kill-on-bad-exit, srun may report a
    rank that was still shutting down as killed rather than exit 75."""
    (run_dir / PREEMPTED_MARKER).write_text(checkpoint.name + "\n")
