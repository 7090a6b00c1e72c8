"""bench/bench_e2e.py at a tiny size: every stage runs in order and leaves its outputs, the
metrics are finite, the predictions cover every user, and the last line parses."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[2]
STAGES = ("prepare", "pretrain", "finetune", "predict", "popularity", "ease-sample")


@pytest.mark.distributed
def test_bench_e2e_chain(tmp_path):
    work = tmp_path / "e2e"
    cmd = [sys.executable, "-m", "bench.bench_e2e", "--users", "1000", "--items", "300"]
    cmd += ["--work", str(work), "--keep", "--sample-users", "500", "--sample-items", "200"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    # Stage rows start at column 0; the metric tables' rows are indented.
    rows = [line.split()[0] for line in lines if line[:1].strip() and line.split()[0] in STAGES]
    assert tuple(rows) == STAGES

    data = work / "data"
    manifest = json.loads((data / "manifest.json").read_text())
    assert (work / "pretrain" / "export" / "tables").is_dir()
    assert (work / "finetune" / "best" / "tables").is_dir()
    test = json.loads((work / "finetune" / "metrics.json").read_text())["test"]
    assert test["users"] == manifest["counts"]["evaluated_users"]["test"]
    assert all(math.isfinite(v) for v in test.values())
    pop = json.loads((work / "popularity.json").read_text())["test"]
    assert all(math.isfinite(v) for v in pop.values())
    sample = json.loads((work / "logs" / "ease-sample.log").read_text())
    for who in ("cllm4rec", "ease", "popularity"):
        assert all(math.isfinite(v) for v in sample["test"][who].values())

    parts = sorted((work / "predict" / "predictions").glob("part-*.parquet"))
    users = [u for p in parts for u in pq.read_table(p, columns=["user"]).column(0).to_pylist()]
    assert len(users) == len(set(users)) == manifest["counts"]["users"]

    assert any(line.startswith("  pretrain  step time") for line in lines)
    assert any(line.startswith("  finetune  peak memory rank 1") for line in lines)
    last = re.fullmatch(r"total wall (\d+) s peak rank rss (\d+\.\d) GB", lines[-1])
    assert last and int(last.group(1)) > 0 and float(last.group(2)) > 0
