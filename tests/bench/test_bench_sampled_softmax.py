"""bench/bench_sampled_softmax.py starts and prints its figures at a tiny size (no timing asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.distributed
def test_bench_sampled_softmax_runs_small():
    cmd = [sys.executable, "-m", "bench.bench_sampled_softmax", "--items", "5000", "--batch", "16"]
    cmd += ["--targets", "3", "--samples", "64", "--steps", "2"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, check=True)
    lines = out.stdout.strip().splitlines()
    for mode in ("full", "popularity", "in_batch"):
        assert any(line.startswith(mode) and "peak rss per rank" in line for line in lines), mode
    assert lines[-1].startswith("ratio ") and float(lines[-1].split()[1]) > 0
