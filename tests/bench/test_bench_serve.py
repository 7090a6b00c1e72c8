"""bench/bench_serve.py at a tiny size: the server starts on a synthetic export, both kinds of
requests and the FAISS peer are measured, and the last line parses."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.distributed
def test_bench_serve_tiny(tmp_path):
    cmd = [sys.executable, "-m", "bench.bench_serve", "--items", "2000", "--users", "100"]
    cmd += ["--seconds", "2", "--clients", "4", "--work", str(tmp_path)]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    for name in ("local: user requests", "local: history requests", "FAISS IndexFlatIP"):
        assert any(line.strip().startswith(name) for line in lines), name
    assert any(re.match(r"\s+ratio \d+\.\d\d", line) for line in lines)
    last = re.fullmatch(r"serve qps ([\d.]+) p50 ([\d.]+) ms p99 ([\d.]+) ms", lines[-1])
    assert last and float(last[1]) > 0 and float(last[2]) <= float(last[3])
    assert not any(tmp_path.iterdir())  # the exports went with their temporary directory
