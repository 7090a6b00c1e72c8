"""bench/bench_trainer.py: its step model, and a run at a tiny size (no timing asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.bench_trainer import VARIANTS, step_model

ROOT = Path(__file__).resolve().parents[2]


def _row(users: int, fixed_ms: float, per_user_ms: float) -> dict:
    ms = fixed_ms + users * per_user_ms
    return {
        "users_s": users / ms * 1e3,
        "ms_step": ms,
        "users_step": users,
        "ms_user_at_peak": 0.05,
    }


def test_step_model_recovers_the_line_and_its_bounds():
    line = step_model(_row(16, 15.0, 0.4), _row(128, 15.0, 0.4), old_users_s=500.0)
    assert "15.0 ms per step + 0.400 ms per user" in line, line
    # ceiling 1000 / (0.4 * 500) = 5.00; 5x at 128 users: 1000 / 2500 - 15 / 128 = 0.283
    assert "ratio at most 5.00 at any batch size" in line, line
    assert "needs <= 0.283 ms per user; its counted FLOPs take 0.050 ms" in line, line


def test_step_model_checks_the_5x_figure_it_prints():
    # A per-user cost exactly at the printed bound gives 5x the old loop's users/s.
    old_users_s, fixed = 700.0, 12.0
    needed = 1e3 / (5 * old_users_s) - fixed / 128
    at_bound = _row(128, fixed, needed)["users_s"] / old_users_s
    assert at_bound == pytest.approx(5.0)
    line = step_model(_row(16, fixed, 0.3), _row(128, fixed, 0.3), old_users_s)
    assert f"needs <= {needed:.3f} ms per user" in line, line


def test_step_model_says_when_the_rows_do_not_fit_a_line():
    bad = {"users_s": 9000, "ms_step": 10, "users_step": 90, "ms_user_at_peak": 0.05}
    assert "not identifiable" in step_model(_row(16, 30.0, 0.5), bad, old_users_s=500.0)


def test_bench_trainer_runs_small(tmp_path):
    cmd = [sys.executable, "-m", "bench.bench_trainer", "--work", str(tmp_path), "--users", "400"]
    cmd += ["--items", "150", "--steps", "2", "--warmup", "1"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, check=True)
    lines = out.stdout.strip().splitlines()
    for variant in VARIANTS:
        for phase in ("recommendation", "collaborative"):
            assert any(ln.startswith(f"{variant:10s} {phase}") for ln in lines), (variant, lines)
    assert lines[-2].startswith("step model"), lines
    words = lines[-1].split()
    assert words[0] == "ratio" and float(words[1]) > 0 and words[2] == "mfu", lines
