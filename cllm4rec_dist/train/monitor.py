"""Rank-0 monitoring: TensorBoard scalars, a progress bar, one log line per logged step."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from tqdm import tqdm

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
