"""Training checkpoints: backbone (DeepSpeed), partitioned tables (per-rank row files), trainer state.

Layout under ``<run.dir>/checkpoints/``::

    step00000120/
        backbone/ds/...           DeepSpeed engine checkpoint (absent when the backbone is frozen)
        tables/...                per-rank table rows + row-wise optimizer state (any world size)
        trainer_rank{r}.pt        TrainerState + rank r's RNG states
        COMPLETE                  written last, after every rank finished writing
    latest                        name of the newest COMPLETE checkpoint (atomic rename)

A checkpoint without COMPLETE (a rank was killed while writing) is never resumed from.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from cllm4rec_dist.distributed.table_checkpoint import load_tables, save_tables
from cllm4rec_dist.train import dist_env
from cllm4rec_dist.train.state import TrainerState, load_state, save_state

KEEP_LAST = 2


def checkpoint_root(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    root = checkpoint_root(run_dir)
    pointer = root / "latest"
    if not pointer.exists():
        return None
    path = root / pointer.read_text().strip()
    return path if (path / "COMPLETE").exists() else None


def save_checkpoint(
    run_dir: str | Path, state: TrainerState, engine: Any, tables: dict, table_optimizer: Any
) -> Path:
    """Collective: every rank writes its part; rank 0 publishes it as ``latest``."""
    root = checkpoint_root(run_dir)
    path = root / f"step{state.global_step:08d}"
    rank, world = dist_env.rank(), dist_env.world_size()
    if rank == 0 and path.exists():  # a half-written attempt at the same step
        shutil.rmtree(path)
    dist_env.barrier()
    path.mkdir(parents=True, exist_ok=True)
    if engine is not None:
        engine.save_checkpoint(str(path / "backbone"), tag="ds", save_latest=False)
    save_tables(path / "tables", tables, table_optimizer, rank, world)
    save_state(path / f"trainer_rank{rank}.pt", state)
    dist_env.barrier()
    if rank == 0:
        (path / "COMPLETE").write_text("ok\n")
        tmp = root / "latest.tmp"
        tmp.write_text(path.name + "\n")
        tmp.replace(root / "latest")
        _prune(root, keep={path.name, state.best_checkpoint})
    dist_env.barrier()
    return path


def _prune(root: Path, keep: set) -> None:
    done = sorted(p for p in root.glob("step*") if (p / "COMPLETE").exists())
    for old in done[:-KEEP_LAST]:
        if old.name not in keep:
            shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(path: Path, engine: Any, tables: dict, table_optimizer: Any) -> TrainerState:
    """Restore everything saved by ``save_checkpoint``; the world size may differ for the tables.

    The trainer state file of this rank is used when it exists, else rank 0's (then RNG streams
    restart from rank 0's state: positions are still exact, dropout noise may differ).
    """
    if engine is not None:
        load_path, _ = engine.load_checkpoint(str(path / "backbone"), tag="ds")
        if load_path is None:
            raise FileNotFoundError(f"no DeepSpeed checkpoint under {path / 'backbone'}")
    load_tables(path / "tables", tables, table_optimizer)
    own = path / f"trainer_rank{dist_env.rank()}.pt"
    return load_state(own if own.exists() else path / "trainer_rank0.pt")
