"""Shared pieces of the training tests: composing configs the way the launchers do."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from cllm4rec_dist.config import register

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
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
