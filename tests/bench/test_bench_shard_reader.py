"""Smoke test of python -m bench.bench_shard_reader on the tiny dataset: every reader, local and
over HTTP, reads every sample, and the last line holds the two ratios."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_bench_reads_every_sample_with_each_reader(tiny_dataset: Path) -> None:
    cmd = [sys.executable, "-m", "bench.bench_shard_reader", "--data", str(tiny_dataset),
           "--repeats", "1"]  # fmt: skip
    run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    lines = run.stdout.strip().splitlines()
    rows = [ln.split() for ln in lines if ln.startswith(("local ", "http "))]
    assert [(r[0], r[1]) for r in rows] == [
        ("local", "ours"),
        ("local", "hand-written"),
        ("local", "webdataset"),
        ("http", "ours"),
        ("http", "webdataset"),
    ]
    assert len({r[-2] for r in rows}) == 1 and int(rows[0][-2]) > 0  # the same sample count
    last = lines[-1].split()
    assert last[0] == "ratio" and float(last[1]) > 0
    assert last[2] == "webdataset" and float(last[3]) > 0
