"""Fixtures of the model tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from model_testkit import tiny_model_cfg, write_tokenizer

from cllm4rec_dist.model.loading import load_tokenizer


@pytest.fixture(scope="session")
def tokenizer_file(tmp_path_factory) -> Path:
    return write_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer.json")


@pytest.fixture(scope="session")
def tokenizer(tokenizer_file):
    return load_tokenizer(tiny_model_cfg(), tokenizer_file)
