"""What a stage's own records say about it: bench_e2e reads throughput and timings from the
files the trainer writes instead of re-deriving them.

- TensorBoard (``<run>/tensorboard``): ``train/throughput/tokens_per_s`` and ``samples_per_s``,
  all ranks together, one value per logged window (``run.log_every_steps`` steps).
- The stage's log (rank 0's lines carry millisecond timestamps): when the model was built, each
  logged step, and when validation and test finished. Step time is the median time between
  logged steps over the steps between them; validation's cost is the time from the epoch's last
  logged step to the validation line (validation starts right after the last step).
- bench/e2e_procs.py's samples of each rank's CPU time: CPU seconds per step over the same
  steps.
"""

from __future__ import annotations

import bisect
import re
import statistics
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \[rank 0\] \w+ (\S+): (.*)$")
_STEP = re.compile(r"^step (\d+) ")
_EVAL = re.compile(r"^(val|test) \((\d+) users\)")


@dataclass
class StageLog:
    """Rank 0's timeline of one training (or predict) stage, in seconds since the epoch."""

    built: float | None = None
    steps: list[tuple[float, int]] = field(default_factory=list)  # (time, global step)
    evals: list[tuple[float, str, int]] = field(default_factory=list)  # (time, split, users)
    test_start: float | None = None

    def step_seconds(self) -> float | None:
        """Median seconds per step between logged steps, the first window (warm-up) left out."""
        pairs = list(zip(self.steps, self.steps[1:]))[1:] or list(zip(self.steps, self.steps[1:]))
        rates = [(t1 - t0) / (s1 - s0) for (t0, s0), (t1, s1) in pairs if s1 > s0]
        return statistics.median(rates) if rates else None

    def train_seconds(self) -> float | None:
        """From the model being built to the last logged step."""
        if self.built is None or not self.steps:
            return None
        return self.steps[-1][0] - self.built

    def eval_seconds(self, split: str) -> tuple[float, int] | None:
        """(seconds, users) of the first ``split`` evaluation."""
        for t, name, users in self.evals:
            if name != split:
                continue
            if split == "val":
                before = [ts for ts, _ in self.steps if ts <= t]
                return (t - before[-1], users) if before else None
            return (t - self.test_start, users) if self.test_start else None
        return None


def cpu_step_seconds(log: StageLog, series: dict[int, list[tuple[float, float]]]) -> float | None:
    """CPU seconds per step of the ranks (mean over ranks) between the second and the last
    logged step, from bench/e2e_procs.py's samples of each rank's CPU time (interpolated)."""
    if len(log.steps) < 3 or not series:
        return None
    (t0, s0), (t1, s1) = log.steps[1], log.steps[-1]
    per_rank = []
    for samples in series.values():
        times, cpu = [t for t, _ in samples], [c for _, c in samples]
        if len(times) < 2 or times[0] > t0 or times[-1] < t1:
            continue
        per_rank.append((_interp(t1, times, cpu) - _interp(t0, times, cpu)) / (s1 - s0))
    return statistics.mean(per_rank) if per_rank else None


def _interp(x: float, xs: list[float], ys: list[float]) -> float:
    i = bisect.bisect_left(xs, x)
    if i == 0:
        return ys[0]
    if i == len(xs):
        return ys[-1]
    f = (x - xs[i - 1]) / max(xs[i] - xs[i - 1], 1e-9)
    return ys[i - 1] + f * (ys[i] - ys[i - 1])


def read_log(path: Path) -> StageLog:
    out = StageLog()
    for line in path.read_text(errors="replace").splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        when = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        logger, msg = m.group(2), m.group(3)
        if logger.endswith("builder") and out.built is None:
            out.built = when
        elif step := _STEP.match(msg):
            out.steps.append((when, int(step.group(1))))
        elif ev := _EVAL.match(msg):
            out.evals.append((when, ev.group(1), int(ev.group(2))))
        elif msg.startswith("testing the best"):
            out.test_start = when
    return out


def tensorboard_rates(run_dir: Path) -> dict[str, float]:
    """Median tokens/s and samples/s over the logged windows, the first (warm-up) left out."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    out = {}
    for key in ("tokens_per_s", "samples_per_s"):
        tag = f"train/throughput/{key}"
        if tag in acc.Tags()["scalars"]:
            values = [e.value for e in acc.Scalars(tag)]
            out[key] = statistics.median(values[1:] or values)
    return out
