"""Shared fixtures of the data-prep tests: one Ray session, config composition, tiny runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from data_prep.config import register_configs
from data_prep.pipeline.runner import run_prepare

REPO = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO / "configs" / "data_prep"

# A synthetic dataset small enough for a few seconds per run, big enough for 2 RNG chunks,
# several buckets and several samples per shard.
TINY_SYNTHETIC = [
    "source.num_users=300",
    "source.num_items=120",
    "source.mean_interactions=10",
    "source.users_per_block=256",
    "staging.buckets=4",
    "layout.users_per_sample=16",
    "layout.docs_per_sample=32",
    "layout.samples_per_shard=2",
    "tokenizer.vocab_size=300",
    "progress=false",
]


def compose_config(overrides: list[str]) -> DictConfig:
    """The prepare.py config with Hydra command-line ``overrides`` applied."""
    register_configs()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return compose(config_name="config", overrides=overrides)


@pytest.fixture(scope="session")
def compose_cfg():
    """``compose(overrides) -> DictConfig`` of configs/data_prep/config.yaml (no Ray needed)."""
    return compose_config


@pytest.fixture(scope="session")
def tiny_overrides() -> list[str]:
    """Overrides of the tiny synthetic dataset (``TINY_SYNTHETIC``)."""
    return list(TINY_SYNTHETIC)


@pytest.fixture(scope="session")
def prepare(ray_session: None):
    """Run the pipeline in-process: ``prepare(output_dir, *overrides) -> manifest``."""

    def run(output_dir: Path, *overrides: str) -> dict:
        return run_prepare(compose_config([f"output_dir={output_dir}", *overrides]))

    return run


@pytest.fixture(scope="session")
def tiny(tmp_path_factory, prepare) -> tuple[Path, dict]:
    """(directory, manifest) of one run on the tiny synthetic dataset, shared by all tests."""
    out = tmp_path_factory.mktemp("tiny")
    return out, prepare(out, *TINY_SYNTHETIC)
