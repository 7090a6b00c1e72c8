"""One learning-rate schedule for every optimizer of a stage: the backbone's (DeepSpeed) and the
ID tables' (row-wise Adagrad).

The factor is a pure function of the global step and the stage's total steps (known from the
manifest before the first step), so a resumed run continues on the same curve. Linear warm-up
over ``warmup_fraction`` of the steps, then ``cosine`` / ``linear`` decay to zero, or
``constant``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from enum import StrEnum

import torch


class Schedule(StrEnum):
    """``optim.schedule``: the decay after warm-up."""

    cosine = "cosine"
    linear = "linear"
    constant = "constant"


def lr_factor(step: int, total: int, *, schedule: Schedule, warmup_fraction: float) -> float:
    """Multiplier in (0, 1] of the base learning rate for 0-based ``step`` of ``total``."""
    schedule = Schedule(schedule)
    total = max(int(total), 1)
    warm = int(round(warmup_fraction * total))
    if step < warm:
        return (step + 1) / warm
    if schedule == Schedule.constant:
        return 1.0
    # Decay over the steps after warm-up; the last step keeps a small positive rate.
    progress = min((step - warm + 1) / max(total - warm + 1, 1), 1.0)
    if schedule == Schedule.linear:
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizers: Iterable[tuple[torch.optim.Optimizer, float]], factor: float) -> None:
    """Set every param group of each (optimizer, base lr) pair to base lr × factor."""
    for optimizer, base in optimizers:
        for group in optimizer.param_groups:
            group["lr"] = base * factor


class LRSchedule:
    """Owns the stage's schedule: sets every optimizer's learning rate for a global step and
    reports the rates that are logged (as torchtitan's LRSchedulersContainer).

    ``optimizers``: (name, optimizer, base lr) triples; ``total``: the stage's optimizer steps.
    """

    def __init__(
        self,
        optimizers: list[tuple[str, torch.optim.Optimizer, float]],
        total: int,
        *,
        schedule: Schedule,
        warmup_fraction: float,
    ):
        self.optimizers, self.total = optimizers, total
        self.schedule, self.warmup_fraction = schedule, warmup_fraction

    def step(self, global_step: int) -> None:
        """Rates of 0-based ``global_step``: base lr x ``lr_factor``, for every optimizer."""
        factor = lr_factor(
            global_step, self.total, schedule=self.schedule, warmup_fraction=self.warmup_fraction
        )
        set_lr([(opt, base) for _, opt, base in self.optimizers], factor)

    def rates(self) -> dict[str, float]:
        """``{"lr/<name>": current rate}`` of every optimizer, for the log."""
        return {f"lr/{name}": opt.param_groups[0]["lr"] for name, opt, _ in self.optimizers}


__all__ = ["LRSchedule", "Schedule", "lr_factor", "set_lr"]
