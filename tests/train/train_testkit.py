"""Shared pieces of the training tests: composing configs the way the launchers do."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from cllm4rec_dist.config import register
from cllm4rec_dist.testing.multiprocess import free_port

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"
DEEPSPEED = Path(sys.executable).with_name("deepspeed")
# Small enough for CPU tests; one epoch of each phase is a handful of steps on the tiny dataset.
TINY = [
    "data.collab_batch_size=4",
    "data.content_batch_size=4",
    "data.rec_batch_size=4",
    "data.eval_batch_size=8",
    "data.max_items=16",
    "data.max_text_tokens=24",
    "model.hidden_size=32",
    "model.num_layers=2",
    "model.num_heads=2",
    "model.intermediate_size=64",
    "run.progress_bar=false",
    "run.log_every_steps=1",
    # Batches collated on the training thread: a worker process per phase only adds start-up
    # time at these sizes (tests/data/test_loader.py checks that workers give the same batches).
    "data.num_workers=0",
    "data.min_steps_per_epoch=1",  # the tiny catalog keeps its batch of 4
]

register()


def compose_train(root: str, overrides: list[str]):
    """The config ``launchers/<root>.py`` would run with these overrides (tiny sizes first)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name=root, overrides=TINY + overrides)


def launch(
    script: str, overrides: list[str], timeout: int = 600, kill_at_step: int | None = None
) -> subprocess.CompletedProcess:
    """``launchers/<script>.py`` on 2 CPU ranks; with ``kill_at_step``, rank 1 SIGKILLs itself
    after that global step (tests/train/fault_launcher.py)."""
    env = dict(os.environ, DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    entry = [f"launchers/{script}.py"]
    if kill_at_step is not None:
        env["KILL_AT_STEP"] = str(kill_at_step)
        entry = [str(Path(__file__).with_name("fault_launcher.py")), script]  # tests/train/
    port = free_port()
    cmd = [
        str(DEEPSPEED),
        "--num_gpus",
        "2",
        "--no_local_rank",
        "--master_port",
        str(port),
        *entry,
        *TINY,
        *overrides,
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    # DeepSpeed's CPU shm all-reduce names its segments after the port and never unlinks them
    # (distributed/env.import_deepspeed switches it off); one left behind means it came back.
    leaked = sorted(Path("/dev/shm").glob(f"deepspeed_allreduce_buffer_*_{port}_*"))
    assert not leaked, f"DeepSpeed left shared-memory segments behind: {leaked}"
    return proc
