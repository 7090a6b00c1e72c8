"""The quality-run path of issue #6 in miniature: ``experiments/run.py`` on the session's tiny
synthetic catalog (prepared once by the real data-prep job, see conftest) runs both baselines,
pretrains and finetunes on one rank and collects every row with finite metrics;
``experiments/plot_curves.py`` turns the runs' TensorBoard scalars into a PNG. One rank and one
variant keep it short: each stage is a fresh process whose start-up dominates at this size."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ROWS = ("popularity", "ease", "cllm4rec")


def test_tiny_experiment_end_to_end(tmp_path, tiny_dataset):
    out = tmp_path / "tiny"
    cmd = [
        sys.executable,
        "-m",
        "experiments.run",
        "tiny",
        "--out",
        str(out),
        "--ranks",
        "1",
        "--data-dir",
        str(tiny_dataset),
        "--variants",
        "cllm4rec",
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    results = json.loads((out / "results.json").read_text())
    assert set(ROWS) <= set(results["rows"])
    for name in ROWS:
        row = results["rows"][name]
        for split in ("test", "val"):
            for metric in ("recall@20", "recall@40", "ndcg@100"):
                value = row[split][metric]["mean"]
                assert math.isfinite(value) and 0.0 <= value <= 1.0, (name, split, metric)
    assert results["rows"]["cllm4rec"]["per_seed"][0]["commands"][1].count("finetune.py") == 1

    png = tmp_path / "curves.png"
    runs = results["rows"]["cllm4rec"]["per_seed"][0]["run_dirs"]
    subprocess.run(
        [sys.executable, "experiments/plot_curves.py", *runs, "--out", str(png)],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert 0 < png.stat().st_size < 200_000


def test_mixing_probe_runs_each_map(tiny_dataset):
    """experiments/mixing_probe.py (the docs' evidence for tiny_init=identity) trains and reports
    finite validation metrics with each fixed map."""
    for mix in ("none", "orth", "gauss"):
        cmd = [sys.executable, "experiments/mixing_probe.py", "--data", str(tiny_dataset)]
        cmd += ["--mix", mix, "--epochs", "2"]
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-3000:]
        last = proc.stdout.strip().splitlines()[-1]
        assert last.startswith(f"best mix={mix} ")
        ndcg = float(last.rsplit("ndcg@100 ", 1)[1])
        assert 0.0 < ndcg <= 1.0 and math.isfinite(ndcg)
