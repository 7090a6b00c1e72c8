"""Fixtures shared across test folders."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cllm4rec_dist.testing.catalogs import TINY_CATALOG

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def prepare(output_dir: Path, overrides: list[str]) -> Path:
    """Run ``launchers/prepare.py`` in a subprocess; fail the test with its output on error."""
    cmd = [
        sys.executable,
        str(REPO / "launchers" / "prepare.py"),
        *overrides,
        f"output_dir={output_dir}",
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"prepare.py failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return output_dir


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """A prepared tiny synthetic dataset directory (shared by the whole session, read-only)."""
    return prepare(tmp_path_factory.mktemp("tiny") / "data", list(TINY_CATALOG))


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """One local Ray (127.0.0.1 only) for every test that runs the pipeline in-process (the
    pipeline reuses a running session)."""
    import ray

    from data_prep.pipeline.raytools import start_local_ray

    if ray.is_initialized():
        yield
        return
    temp_dir = tempfile.mkdtemp(prefix="ray-test-")
    start_local_ray(num_cpus=2, temp_dir=temp_dir)
    yield
    ray.shutdown()
    shutil.rmtree(temp_dir, ignore_errors=True)
