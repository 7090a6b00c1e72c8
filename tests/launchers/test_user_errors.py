"""Training launchers: a user error (no prepared dataset, a bad value) is one line naming the
culprit and exit status 2, not a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "override,culprit",
    [
        ("data.dir=/nonexistent/dataset", "/nonexistent/dataset/manifest.json"),
        ("run.log_every_steps=0", "run.log_every_steps"),
    ],
)
def test_user_errors_are_one_line(tmp_path, override, culprit):
    data = "data.dir=/nonexistent/dataset"
    args = [override] if override.startswith("data.dir") else [data, override]
    env = {**os.environ, "DS_ACCELERATOR": "cpu"}
    env.pop("CLLM4REC_DEBUG", None)
    proc = subprocess.run(
        [sys.executable, "launchers/pretrain.py", *args, f"run.dir={tmp_path / 'run'}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out[-2000:]
    assert culprit in out
    assert "Traceback" not in out
