"""Fixtures of the data tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import write_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A read-only fixture dataset shared by the tests of one module."""
    return write_dataset(tmp_path_factory.mktemp("prepared"))
