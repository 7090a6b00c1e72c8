"""Trainer step throughput: today's default loop against the new defaults, in one run.

A Beauty-sized synthetic catalog (22,363 users x 12,101 items by default; prepared once with
``launchers/prepare.py source=synthetic``) is trained at world size 1 through the real parts of
the trainer: the phase loader (``data/loader.py``: rows read and collated, in a worker process
when ``data.num_workers`` > 0), the model's losses (ID-table lookup + backbone + item head),
backward and the row-wise Adagrad step. Each part is timed on its own (the loader part is the
time the training thread waits for the next batch), so the shares add up to the step.

Variants (Hydra overrides of the finetune/pretrain configs):

- ``old d=64``: the defaults when the issue was filed: batch 16 per phase, no loader worker,
  a tiny backbone of 2 layers x 4 heads.
- ``new d=64``: the current defaults (hundreds of users per step, one loader worker).
- ``new b=16``: the current defaults at the old batch size, for the step model below.
- ``new d=256``: the current defaults with a medium tiny backbone (hidden 256, 4 layers).

For each variant and phase (recommendation = finetuning, collaborative = pretraining) it prints
users/s, tokens/s (non-padding), the share of step time per part and the model-FLOPs
utilisation (MFU): counted FLOPs (backbone matmuls and attention over the padded grid, x2 for
a frozen backbone's backward of activations only, plus the item head's three [N, H] x [H, I]
products) over the step time, against the fp32 matmul rate measured in the same run with the same
thread count. The line before the last fits step time = fixed cost + cost per user to the new
defaults' finetuning at two batch sizes (``step_model``): it says how far the users/s ratio can
go by batch size alone and what per-user cost a 5x ratio needs. The last line is
``ratio X.XX mfu YY.Y%``: finetuning users/s of ``new d=64`` over ``old d=64``, and the MFU of
``new d=256``'s finetuning step.

    .venv/bin/python -m bench.bench_trainer [--work /tmp/bench_trainer] [--steps 20]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from bench.harness import final_line, machine_line
from cllm4rec_dist.config import register
from cllm4rec_dist.data.loader import PhasePosition, phase_loader
from cllm4rec_dist.data.phases import PHASES
from cllm4rec_dist.data.shards import rows_per_rank
from cllm4rec_dist.distributed import env
from cllm4rec_dist.train.builder import build

REPO = Path(__file__).resolve().parents[1]
PARTS = ("loader", "forward", "backward", "optimizer")
VARIANTS = {
    "old d=64": [
        "model.num_layers=2",
        "model.num_heads=4",
        "data.rec_batch_size=16",
        "data.collab_batch_size=16",
        "data.content_batch_size=16",
        "data.num_workers=0",
    ],
    "new d=64": [],
    "new b=16": ["data.rec_batch_size=16", "data.collab_batch_size=16"],
    "new d=256": [
        "model.hidden_size=256",
        "model.intermediate_size=1024",
        "model.num_layers=4",
        "model.num_heads=4",
    ],
}
STAGE_OF = {"recommendation": "finetune", "collaborative": "pretrain"}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--work", default="/tmp/bench_trainer", help="where the catalog is prepared")
    p.add_argument("--users", type=int, default=22363)
    p.add_argument("--items", type=int, default=12101)
    p.add_argument("--mean-interactions", type=float, default=9.0)
    p.add_argument("--steps", type=int, default=20, help="timed steps per variant and phase")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads (as OMP_NUM_THREADS)")
    return p.parse_args()


def prepare(args: argparse.Namespace) -> Path:
    data = Path(args.work) / f"synthetic-{args.users}x{args.items}"
    if (data / "manifest.json").exists():
        return data
    cmd = [
        sys.executable,
        str(REPO / "launchers/prepare.py"),
        "source=synthetic",
        f"source.num_users={args.users}",
        f"source.num_items={args.items}",
        f"source.mean_interactions={args.mean_interactions}",
        "source.min_interactions=3",
        "progress=false",
        f"output_dir={data}",
    ]
    subprocess.run(cmd, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    return data


def matmul_flops(threads: int) -> float:
    """Measured fp32 matmul FLOP/s (median of 5 products of 1024 x 1024 x 1024)."""
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    for _ in range(2):
        a @ b
    times = []
    for _ in range(5):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * 1024**3 / sorted(times)[2]


def step_flops(cfg, batch, scored_rows: int, num_items: int) -> float:
    """Counted FLOPs of one training step (see the module docstring)."""
    m = cfg.model
    h, ff, layers = m.hidden_size, m.intermediate_size, m.num_layers
    rows, width = batch.input_ids.shape
    grid = rows * width
    linear = 2 * (4 * h * h + 3 * h * ff) * grid * layers
    attention = 4 * rows * width * width * h * layers
    backbone = (linear + attention) * (3 if m.mode == "full" else 2)
    head = 3 * 2 * scored_rows * h * num_items
    return backbone + head


def bench_phase(cfg, built, phase: str, steps: int, warmup: int, peak: float) -> dict:
    manifest = built.manifest
    batch_size = PHASES[phase].batch_size(cfg.data)
    rows = rows_per_rank(manifest, PHASES[phase].corpus, 1)[0]
    steps = min(steps, rows // batch_size - warmup)
    position = PhasePosition(
        cfg.data.dir, phase, 0, 1, 0, 0, cfg.run.seed, cfg.data.shuffle_buffer, batch_size, 0,
        steps + warmup,
    )  # fmt: skip
    loader = iter(
        phase_loader(position, partial(built.collate_host, PHASES[phase]), cfg.data.num_workers)
    )
    totals = dict.fromkeys(PARTS, 0.0)
    users = tokens = flops = 0.0
    for i in range(steps + warmup):
        t0 = time.perf_counter()
        batch = next(loader).to(built.device)
        t1 = time.perf_counter()
        out = built.loss(PHASES[phase], batch)
        t2 = time.perf_counter()
        out.loss.backward()
        t3 = time.perf_counter()
        built.table_optimizer.step()
        built.table_optimizer.zero_grad()
        t4 = time.perf_counter()
        if i < warmup:
            continue
        for part, dt in zip(PARTS, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            totals[part] += dt
        users += batch.num_documents
        tokens += out.tokens
        scored = batch.num_documents if phase == "recommendation" else batch.target_items.numel()
        flops += step_flops(cfg, batch, scored, manifest.num_items)
    total = sum(totals.values())
    return {
        "steps": steps,
        "users_s": users / total,
        "tokens_s": tokens / total,
        "shares": {p: totals[p] / total for p in PARTS},
        "mfu": flops / total / peak,
        "ms_user_at_peak": 1000 * flops / users / peak,
        "ms_step": 1000 * total / steps,
        "users_step": users / steps,
    }


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    env.init_distributed()
    register()
    data = prepare(args)
    peak = matmul_flops(args.threads)
    print(machine_line())
    print(f"catalog {data} ({args.users} users x {args.items} items)")
    print(f"measured fp32 matmul: {peak / 1e9:.1f} GFLOP/s")
    results = {}
    for name, overrides in VARIANTS.items():
        for phase, stage in STAGE_OF.items():
            with initialize_config_dir(str(REPO / "configs"), version_base="1.3"):
                cfg = compose(
                    stage, [f"data.dir={data}", "run.dir=/tmp/bench_trainer/run", *overrides]
                )
            built = build(cfg)
            r = bench_phase(cfg, built, phase, args.steps, args.warmup, peak)
            results[(name, phase)] = r
            shares = " ".join(f"{p} {100 * s:4.1f}%" for p, s in r["shares"].items())
            print(
                f"{name:10s} {phase:15s} {r['users_s']:8.0f} users/s {r['tokens_s']:9.0f} "
                f"tokens/s {r['ms_step']:7.1f} ms/step  mfu {100 * r['mfu']:5.1f}%  [{shares}]",
                flush=True,
            )
    rec = {name: results[(name, "recommendation")] for name in VARIANTS}
    ratio = rec["new d=64"]["users_s"] / rec["old d=64"]["users_s"]
    print(step_model(rec["new b=16"], rec["new d=64"], rec["old d=64"]["users_s"]))
    print(final_line(ratio=ratio, mfu=f"{100 * rec['new d=256']['mfu']:.1f}%"))


def step_model(small: dict, large: dict, old_users_s: float) -> str:
    """Fit step time = F + c * users to the new defaults at two batch sizes and say what it bounds.

    At B users per step the new loop runs B / (F + B c) users/s, so its ratio over the old loop
    is at most 1 / (c * old users/s) at any batch size, and a 5x ratio at the default batch
    needs c <= 1 / (5 * old users/s) - F / B. ``ms_user_at_peak``: the default step's counted
    FLOPs per user at the measured matmul rate, a floor under c for this model.
    """
    b_small, b_large = small["users_step"], large["users_step"]
    c = (large["ms_step"] - small["ms_step"]) / (b_large - b_small)
    fixed = small["ms_step"] - b_small * c
    if c <= 0 or fixed <= 0:
        return f"step model: not identifiable from this run (F {fixed:.1f} ms, c {c:.3f} ms/user)"
    ceiling = 1e3 / (c * old_users_s)
    needed = max(1e3 / (5 * old_users_s) - fixed / b_large, 0.0)
    return (
        f"step model (new d=64 finetuning): {fixed:.1f} ms per step + {c:.3f} ms per user; "
        f"ratio at most {ceiling:.2f} at any batch size; 5x at {b_large:.0f} users per step "
        f"needs <= {needed:.3f} ms per user; its counted FLOPs take "
        f"{large['ms_user_at_peak']:.3f} ms per user at the measured matmul rate"
    )


if __name__ == "__main__":
    main()
