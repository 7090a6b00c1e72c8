"""Fixtures of the hostile-input suite: one loopback Ray for the whole folder, tiny raw files."""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "data_prep"))  # compose_config of the data-prep tests

from data_prep.pipeline.raytools import start_local_ray  # noqa: E402


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
