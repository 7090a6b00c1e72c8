"""Every stage end to end on a synthetic catalog, on 2 CPU ranks, with the default recipe.

    python -m bench.bench_e2e --users 1000000 --items 100000     # the reference run
    python -m bench.bench_e2e --users 1000 --items 300           # about the make-test size

Stages, each a child process launched the way README.md does (``DS_ACCELERATOR=cpu deepspeed
--num_gpus 2 --no_local_rank launchers/...``), with no preset and no recipe override beyond the
epoch counts:

1. ``launchers/prepare.py source=synthetic`` (Ray) with ``--users`` x ``--items``;
2. pretraining, one epoch (partitioned tables, item-parallel head: the defaults);
3. finetuning, one epoch, validation over every user, then the test of the best epoch over
   every user, full ranking over all items;
4. ``launchers/predict.py predict.k=20`` for every user to Parquet;
5. ``launchers/baseline.py method=popularity`` on the same split;
6. ``bench/e2e_sample.py``: EASE on a user x item sample, beside CLLM4Rec and popularity on the
   same users (EASE's dense item x item matrix does not fit at 100k items);
7. ``launchers/plan.py`` for both training stages, its memory and step-time predictions beside
   the measured ones, with the rates of this machine measured right after data prep.

Per stage it prints wall time, throughput (read from the run's TensorBoard scalars and log
timestamps, bench/e2e_readout.py), peak RSS per rank, of the largest process and of the whole
process tree (bench/e2e_procs.py samples the tree every ``--interval`` s), and the bytes the stage
wrote. The last line is ``total wall N s peak rank rss X.X GB``: the largest per-process peak of
any stage (DeepSpeed ranks; Ray's and the baselines' processes).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.e2e_procs import StageRun, dir_bytes, run_stage
from bench.e2e_readout import cpu_step_seconds, read_log, tensorboard_rates
from bench.harness import fresh_work_dir, load_average
from cllm4rec_dist.data.manifest import load_manifest
from cllm4rec_dist.distributed.item_parallel import CHUNK_ITEMS, block_columns

REPO = Path(__file__).resolve().parents[1]
GB = 1e9
GIB = 2**30
RANKS = 2
PHASE_OF = {"pretrain": "collaborative", "finetune": "recommendation"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure_rates(rows: int, dim: int, cols: int) -> dict[str, float]:
    """One torch thread (a rank's setting), at the item head's shape: the [rows, dim] x
    [dim, cols] product's FLOP/s and the element-wise rate of ``a.sub_(b).exp_()`` (two ops,
    in place, as the item heads run them) over as many logits, in CPU time of this thread (best
    of 5), as the steps are measured. These are the planner's matmul and element-wise rates."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a, w = torch.randn(rows, dim), torch.randn(cols, dim)
        logits, shift = torch.empty(rows, cols), torch.randn(rows, 1)
        buf = torch.empty(rows, cols)

        def best(fn) -> float:
            fn()
            times = []
            for _ in range(5):
                t = time.thread_time()
                fn()
                times.append(time.thread_time() - t)
            return min(times)

        mm = best(lambda: torch.mm(a, w.T, out=logits))
        # Into a buffer already touched, as the heads' in-place passes write their logits.
        ew = best(lambda: torch.sub(logits, shift, out=buf).exp_())
    finally:
        torch.set_num_threads(threads)
    return {
        "matmul_gflops": 2 * rows * cols * dim / mm / 1e9,
        "elementwise_gops": 2 * rows * cols / ew / 1e9,
    }


class Bench:
    """Runs the stages in the work dir and prints one row per stage as it finishes."""

    def __init__(self, args: argparse.Namespace):
        self.args, self.work = args, args.work
        self.logs = self.work / "logs"
        self.env = {
            **os.environ,
            "DS_ACCELERATOR": "cpu",
            "OMP_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled"),
            "PYTHONUNBUFFERED": "1",
        }
        self.python = sys.executable
        self.deepspeed = str(Path(sys.executable).with_name("deepspeed"))
        self.runs: dict[str, StageRun] = {}

    def run(self, name: str, cmd: list[str]) -> StageRun:
        self.runs[name] = run_stage(name, cmd, self.log(name), self.env, REPO, self.args.interval)
        return self.runs[name]

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def row(self, name: str, rate: str, written: Path) -> None:
        r = self.runs[name]
        ranks = " ".join(f"{b / GB:.2f}" for b in r.rank_peak_bytes.values()) or "-"
        print(
            f"{name:<12}{r.wall_s:8.1f}  {rate:<50}{ranks:>11}{r.process_peak_bytes / GB:9.2f}"
            f"{r.tree_peak_bytes / GB:8.2f}{dir_bytes(written) / GB:9.3f}",
            flush=True,
        )

    def ds(self, launcher: str, *overrides: str) -> list[str]:
        return [
            self.deepspeed, "--num_gpus", str(RANKS), "--no_local_rank",
            "--master_port", str(free_port()), f"launchers/{launcher}.py", *overrides,
            "run.progress_bar=false",
        ]  # fmt: skip


def training_rate(run_dir: Path, log: Path, interactions: int) -> str:
    """Train interactions/s over the training phase (log timestamps), users/s and tokens/s as
    TensorBoard logged them (median window)."""
    tl, tb = read_log(log), tensorboard_rates(run_dir)
    train = tl.train_seconds()
    return (
        (f"{interactions / train:,.0f} inter/s " if train else "? inter/s ")
        + f"{tb.get('samples_per_s', float('nan')):,.0f} users/s "
        + f"{tb.get('tokens_per_s', float('nan')):,.0f} tok/s"
    )


def plan(bench: Bench, data: Path, stage: str, rates: dict[str, float]) -> dict:
    cmd = [
        bench.python, "launchers/plan.py", f"data.dir={data}", "plan.device=cpu",
        "plan.nodes=1", f"plan.gpus_per_node={RANKS}", "plan.format=json",
        *(f"plan.{k}={v:.6g}" for k, v in rates.items()),
    ] + (["stage=finetune"] if stage == "finetune" else [])  # fmt: skip
    out = subprocess.run(cmd, cwd=REPO, env=bench.env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def metrics_table(title: str, rows: dict[str, dict[str, float]]) -> list[str]:
    names = [n for n in next(iter(rows.values())) if n != "users"]
    lines = [f"{title}", f"  {'':<22}" + "".join(f"{n:>12}" for n in names)]
    for who, values in rows.items():
        lines.append(f"  {who:<22}" + "".join(f"{values[n]:12.4f}" for n in names))
    return lines


def run_stages(bench: Bench, args: argparse.Namespace) -> dict:
    """Stages 1-6; prints the stage table. Returns what the summary needs."""
    w = args.work
    data, pre, ft, pred = w / "data", w / "pretrain", w / "finetune", w / "predict"
    print(
        f"{'stage':<12}{'wall s':>8}  {'throughput':<50}{'rank GB':>11}{'proc GB':>9}"
        f"{'tree GB':>8}{'wrote GB':>9}"
    )
    # Ray's socket paths must stay under 108 bytes: its session lives in a short /tmp path.
    ray_tmp = tempfile.mkdtemp(prefix="e2e-ray-")
    try:
        bench.run("prepare", [
            bench.python, "launchers/prepare.py", "source=synthetic",
            f"source.num_users={args.users}", f"source.num_items={args.items}",
            f"output_dir={data}", f"ray.temp_dir={ray_tmp}", "progress=false", *args.prep,
        ])  # fmt: skip
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    manifest = load_manifest(data)
    inter = manifest.counts.interactions
    total, train = sum(inter.values()), inter["train"]
    wall = bench.runs["prepare"].wall_s
    bench.row(
        "prepare", f"{total / wall:,.0f} inter/s {manifest.num_users / wall:,.0f} users/s", data
    )
    plans = planner_forecast(bench, data)

    bench.run(
        "pretrain", bench.ds("pretrain", f"data.dir={data}", f"run.dir={pre}", "stage.epochs=1")
    )
    bench.row("pretrain", training_rate(pre, bench.log("pretrain"), train), pre)
    bench.run("finetune", bench.ds(
        "finetune", f"data.dir={data}", f"run.dir={ft}", "stage.epochs=1",
        f"stage.init_from={pre}/export",
    ))  # fmt: skip
    bench.row("finetune", training_rate(ft, bench.log("finetune"), train), ft)
    ft_log = read_log(bench.log("finetune"))
    val, test, train_s = (
        ft_log.eval_seconds("val"),
        ft_log.eval_seconds("test"),
        ft_log.train_seconds(),
    )
    for name, ev in (("validation", val), ("test", test)):
        if ev:
            print(f"  {name:<10}{ev[0]:8.1f}  {ev[1] / ev[0]:,.0f} users/s ({ev[1]:,} users)")

    bench.run("predict", bench.ds(
        "predict", f"data.dir={data}", f"run.dir={pred}", f"stage.init_from={ft}/best",
        "predict.k=20",
    ))  # fmt: skip
    pred_manifest = json.loads((pred / "predictions" / "manifest.json").read_text())
    built = read_log(bench.log("predict")).built
    took = (pred / "predictions" / "manifest.json").stat().st_mtime - built if built else 0
    rate = f"{pred_manifest['users'] / took:,.0f} users/s after building" if took > 0 else ""
    bench.row("predict", rate, pred)

    pop_json = w / "popularity.json"
    bench.run("popularity", [bench.python, "launchers/baseline.py", f"data_dir={data}",
                             "method=popularity", f"output={pop_json}"])  # fmt: skip
    pop = json.loads(pop_json.read_text())
    evaluated = pop["val"]["users"] + pop["test"]["users"]
    bench.row(
        "popularity",
        f"{evaluated / bench.runs['popularity'].wall_s:,.0f} users/s (val + test)",
        pop_json,
    )
    bench.run("ease-sample", [
        bench.python, "-m", "bench.e2e_sample", f"--data={data}",
        f"--predictions={pred / 'predictions'}", f"--users={args.sample_users}",
        f"--items={min(args.sample_items, args.items)}",
    ])  # fmt: skip
    sample = json.loads(bench.log("ease-sample").read_text())
    bench.row(
        "ease-sample",
        f"{sample['users']:,} users x {sample['items']:,} items",
        bench.log("ease-sample"),
    )
    return {
        "manifest": manifest, "train": train, "pop": pop["test"], "sample": sample,
        "model": json.loads((ft / "metrics.json").read_text())["test"],
        "val_fraction": (val[0], train_s) if val and train_s else None, "plans": plans,
    }  # fmt: skip


def planner_forecast(bench: Bench, data: Path) -> dict:
    """Measures this machine's rates at the item head's shape, runs launchers/plan.py for both
    training stages with them, and prints the stage time it implies (steps x step time)."""
    # The shape of the collaborative step's item head, as the planner sees it: every rank's
    # scored rows against one block of the local item shard (full softmax), or against the
    # rank's share of the step's candidates (sampled softmax, scored at once).
    first = plan(bench, data, "pretrain", {})
    step = first["step_time_s"]["collaborative"]
    rows = RANKS * round(step["scored_rows"])
    cols = math.ceil(step["head_items"] / RANKS)
    if first["softmax"] == "full":
        cols = min(block_columns(rows, CHUNK_ITEMS, "cpu"), cols)
    dim = first["backbone"]["hidden"]
    rates = measure_rates(rows, dim, cols)
    print(
        f"  planner rates, measured here (one thread, CPU time): matmul "
        f"{rates['matmul_gflops']:.1f} GFLOP/s at [{rows}, {dim}] x [{dim}, {cols}], element-wise "
        f"{rates['elementwise_gops']:.2f} G/s; network: the planner's CPU default",
        flush=True,
    )
    plans = {"rates": rates}
    for stage, phase in PHASE_OF.items():
        p = plans[stage] = plan(bench, data, stage, rates)
        step = p["step_time_s"][phase]
        n = step["steps_per_epoch"]
        print(
            f"  planner forecast {stage}: {n:,} steps of {step['batch']} users x "
            f"{step['total']:.4f} s = {n * step['total']:,.1f} s of {phase} per rank; "
            f"softmax {p['softmax_description']}",
            flush=True,
        )
    return plans


def planner_check(bench: Bench, plans: dict) -> None:
    """Stage 7: launchers/plan.py's memory and step time beside the measured ones."""
    print(f"planner check (launchers/plan.py plan.device=cpu plan.gpus_per_node={RANKS})")
    for stage in ("pretrain", "finetune"):
        p = plans[stage]
        measured = bench.runs[stage].rank_peak_bytes
        for rank, key in ((0, "rank0"), (1, "other_ranks")):
            est, got = p["process_peak_bytes"][key], measured.get(rank, 0)
            print(
                f"  {stage:<9} peak memory rank {rank}: predicted {est / GIB:6.2f} GiB  measured "
                f"{got / GIB:6.2f} GiB  ratio {est / got if got else float('nan'):.2f}"
            )
        phase, log = PHASE_OF[stage], read_log(bench.log(stage))
        est_s = p["step_time_s"][phase]["total"]
        cpu_s = cpu_step_seconds(log, bench.runs[stage].rank_cpu)
        wall_s = log.step_seconds()
        print(
            f"  {stage:<9} step time ({phase}): predicted {est_s:.4f} s  measured "
            f"{cpu_s or float('nan'):.4f} CPU s (wall {wall_s or float('nan'):.4f} s)  ratio "
            f"{est_s / cpu_s if cpu_s else float('nan'):.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_e2e"))
    parser.add_argument("--prep", action="append", default=[], help="extra prepare.py override")
    parser.add_argument("--sample-users", type=int, default=20_000)
    parser.add_argument("--sample-items", type=int, default=10_000)
    parser.add_argument("--interval", type=float, default=0.5, help="memory sampling, seconds")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (default: removed)")
    args = parser.parse_args()
    start = time.perf_counter()
    fresh_work_dir(args.work, "bench_e2e")
    bench = Bench(args)
    bench.logs.mkdir(parents=True)
    print(
        f"bench_e2e: {args.users:,} users x {args.items:,} items, {RANKS} CPU ranks, default recipe"
    )
    print(f"load average at start: {load_average()}", flush=True)
    out = run_stages(bench, args)
    if out["val_fraction"]:
        val_s, train_s = out["val_fraction"]
        print(
            f"full-ranking validation: {val_s:.1f} s of the finetune epoch's {train_s + val_s:.1f} s "
            f"(training {train_s:.1f} s + validation) = {100 * val_s / (train_s + val_s):.1f} %"
        )
    n, items = int(out["model"]["users"]), out["manifest"].num_items
    print("\n".join(metrics_table(
        f"test, all {n:,} evaluated users, full ranking over {items:,} items",
        {"cllm4rec (finetune)": out["model"], "popularity": out["pop"]},
    )))  # fmt: skip
    s = out["sample"]
    print("\n".join(metrics_table(
        f"test on a sample: {s['users']:,} users (every {s['user_step']}th), EASE over the "
        f"{s['items']:,} most frequent items of their train rows ({100 * s['test_items_in_sample']:.1f} "
        f"% of their test items), lambda={s['ease_lambda']:g} picked on validation",
        s["test"],
    )))  # fmt: skip
    planner_check(bench, out["plans"])
    print(f"load average at end: {load_average()}")
    if not args.keep:
        shutil.rmtree(args.work, ignore_errors=True)
    peak = max(r.process_peak_bytes for r in bench.runs.values())
    print(f"total wall {time.perf_counter() - start:.0f} s peak rank rss {peak / GB:.1f} GB")


if __name__ == "__main__":
    main()
