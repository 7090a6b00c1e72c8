"""Monitoring: the values of a logged step (reduced over ranks), and on rank 0 TensorBoard
scalars, a progress bar and one log line per logged step."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from cllm4rec_dist.distributed import env

log = logging.getLogger(__name__)


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


class Monitor:
    def __init__(self, run_dir: Path, enabled: bool, progress: bool = True):
        self.enabled, self.progress_enabled = enabled, enabled and progress
        self.writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    def scalars(self, prefix: str, values: dict[str, Any], step: int) -> None:
        if not self.enabled:
            return
        for name, value in values.items():
            if isinstance(value, (int, float)):
                self.writer.add_scalar(f"{prefix}/{name}", value, step)
        self.writer.flush()
        if prefix == "train":
            shown = " ".join(f"{k}={v:.4g}" for k, v in values.items() if k.startswith("loss/"))
            log.info("step %d %s", step, shown)

    def progress(self, total: int, initial: int, desc: str) -> Any:
        if not self.progress_enabled:
            return _NoBar()
        return tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, leave=False)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class Throughput:
    """Tokens and samples this rank processed since the last logged step, and the time taken."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.tokens, self.samples, self.start = 0.0, 0.0, time.perf_counter()

    def add(self, tokens: int, samples: int) -> None:
        self.tokens += tokens
        self.samples += samples

    def elapsed(self) -> float:
        return time.perf_counter() - self.start


def step_scalars(phase: str, out: Any, window: Throughput) -> dict[str, float]:
    """Collective. The logged values of a step: its loss and loss terms averaged over ranks, and
    tokens/s and samples/s of all ranks together since ``window`` started."""
    stats = torch.tensor(
        [float(out.loss.detach())]
        + [float(v.detach()) for v in out.terms.values()]
        + [window.tokens, window.samples],
        dtype=torch.float64,
    )
    env.all_reduce_sum(stats)
    n = env.world_size()
    values = {f"loss/{phase}": stats[0].item() / n}
    for i, name in enumerate(out.terms):
        values[f"loss/{phase}_{name}"] = stats[1 + i].item() / n
    elapsed = max(window.elapsed(), 1e-9)
    values["throughput/tokens_per_s"] = stats[-2].item() / elapsed
    values["throughput/samples_per_s"] = stats[-1].item() / elapsed
    return values
