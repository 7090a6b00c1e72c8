"""Fixtures shared across test folders."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import SMALL, compose_prep, tiny_model_cfg, write_tokenizer

from cllm4rec_dist.model.loading import load_tokenizer
from data_prep.presets import TINY_CATALOG, prepare_dataset

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """A prepared tiny synthetic dataset directory (shared by the whole session, read-only)."""
    return prepare_dataset(tmp_path_factory.mktemp("tiny") / "data", list(TINY_CATALOG))


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


@pytest.fixture(scope="session")
def tokenizer_file(tmp_path_factory) -> Path:
    """A tiny byte-level BPE like data_prep's (tests/helpers.py: write_tokenizer)."""
    return write_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer.json")


@pytest.fixture(scope="session")
def tokenizer(tokenizer_file):
    return load_tokenizer(tiny_model_cfg(), tokenizer_file)


@pytest.fixture(scope="session")
def prepare_table(ray_session):
    """``prepare_table(csv_path, output_dir, *overrides) -> manifest``, in-process."""
    from data_prep.pipeline.runner import run_prepare

    def run(path: Path, output: Path, *overrides: str) -> dict:
        cfg = compose_prep(
            ["source=table", f"source.path={path}", f"output_dir={output}", *SMALL, *overrides]
        )
        return run_prepare(cfg)

    return run
