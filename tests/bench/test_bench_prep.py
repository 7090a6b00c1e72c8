"""Smoke test of bench/bench_prep.py (python -m bench.bench_prep) at a tiny size (the 1M-user run is documented, not tested)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_bench_runs_and_both_implementations_agree(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "bench.bench_prep", "--users", "500",
           "--items", "150", "--mean-interactions", "12", "--num-cpus", "1",
           "--workdir", str(tmp_path)]  # fmt: skip
    run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = run.stdout
    assert "outputs agree with the baseline (counts and split sets): True" in out
    for label in ("ours, table reader", "baseline (1 process)", "peak RSS GB", "base/ours"):
        assert label in out
    last = out.strip().splitlines()[-1].split()
    assert last[0] == "ratio" and float(last[1]) > 0
    assert (tmp_path / "baseline" / "tokenizer" / "tokenizer.json").is_file()
    assert (tmp_path / "ours-table" / "manifest.json").is_file()
