"""bench/bench_item_head.py starts and prints its figures at a tiny size (no timing asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_item_head_runs_small():
    cmd = [sys.executable, "-m", "bench.bench_item_head", "--items", "3000", "--rows", "8", "512"]
    cmd += ["--chunks", "1024", "--repeats", "2"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, check=True)
    lines = out.stdout.strip().splitlines()
    # 8 rows take the whole width; 512 rows a cache-sized block (2**18 // 512 = 512 -> 1,024).
    assert any(line.startswith("rows     8  rule (16384 wide)") for line in lines), lines
    assert any(line.startswith("rows   512  rule ( 1024 wide)") for line in lines), lines
    assert lines[-1].startswith("ratio ") and float(lines[-1].split()[1]) > 0
