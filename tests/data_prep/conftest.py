"""Fixtures of the data-prep tests: config composition, tiny runs in-process on one loopback Ray."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import TINY_SYNTHETIC, compose_prep

from data_prep.pipeline.runner import run_prepare


@pytest.fixture(scope="session")
def compose_cfg():
    """``compose(overrides) -> DictConfig`` of configs/data_prep/config.yaml (no Ray needed)."""
    return compose_prep


@pytest.fixture(scope="session")
def tiny_overrides() -> list[str]:
    """Overrides of the tiny synthetic dataset (``TINY_SYNTHETIC``)."""
    return list(TINY_SYNTHETIC)


@pytest.fixture(scope="session")
def prepare(ray_session: None):
    """Run the pipeline in-process: ``prepare(output_dir, *overrides) -> manifest``."""

    def run(output_dir: Path, *overrides: str) -> dict:
        return run_prepare(compose_prep([f"output_dir={output_dir}", *overrides]))

    return run


@pytest.fixture(scope="session")
def tiny(tmp_path_factory, prepare) -> tuple[Path, dict]:
    """(directory, manifest) of one run on the tiny synthetic dataset, shared by all tests."""
    out = tmp_path_factory.mktemp("tiny")
    return out, prepare(out, *TINY_SYNTHETIC)
