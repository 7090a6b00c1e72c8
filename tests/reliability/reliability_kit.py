"""Shared helpers of the hostile-input suite (a module, not conftest: test folders share the
name ``conftest``)."""

from __future__ import annotations

import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from data_prep.config import register_configs

REPO = Path(__file__).resolve().parents[2]
PREPARE = [sys.executable, str(REPO / "launchers" / "prepare.py")]
# Small shards so a 40-user table makes a valid dataset in a few seconds.
SMALL = [
    "staging.buckets=2",
    "layout.users_per_sample=4",
    "layout.docs_per_sample=4",
    "layout.samples_per_shard=2",
    "layout.shard_multiple=2",
    "tokenizer.vocab_size=280",
    "progress=false",
]


def compose_prep(overrides: list[str]) -> DictConfig:
    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "configs" / "data_prep"), version_base=None):
        return compose(config_name="config", overrides=overrides)
