"""Fixtures of the hostile-input suite: one loopback Ray for the whole folder, tiny raw files."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
from reliability_kit import SMALL, compose_prep

from data_prep.pipeline.raytools import start_local_ray
from data_prep.pipeline.runner import run_prepare


@pytest.fixture(scope="session")
def loopback_ray() -> Iterator[None]:
    """One local Ray (127.0.0.1 only) shared by every test that runs the pipeline in-process."""
    if ray.is_initialized():
        yield
        return
    temp_dir = tempfile.mkdtemp(prefix="ray-test-")
    start_local_ray(num_cpus=2, temp_dir=temp_dir)
    yield
    ray.shutdown()
    shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def prepare_table(loopback_ray):
    """``prepare_table(csv_path, output_dir, *overrides) -> manifest``, in-process."""

    def run(path: Path, output: Path, *overrides: str) -> dict:
        cfg = compose_prep(
            ["source=table", f"source.path={path}", f"output_dir={output}", *SMALL, *overrides]
        )
        return run_prepare(cfg)

    return run
