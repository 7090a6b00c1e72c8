"""Fixtures of the hostile-input suite: one loopback Ray for the whole folder, tiny raw files."""

from __future__ import annotations

from pathlib import Path

import pytest
from reliability_kit import SMALL, compose_prep

from data_prep.pipeline.runner import run_prepare


@pytest.fixture(scope="session")
def prepare_table(ray_session):
    """``prepare_table(csv_path, output_dir, *overrides) -> manifest``, in-process."""

    def run(path: Path, output: Path, *overrides: str) -> dict:
        cfg = compose_prep(
            ["source=table", f"source.path={path}", f"output_dir={output}", *SMALL, *overrides]
        )
        return run_prepare(cfg)

    return run
