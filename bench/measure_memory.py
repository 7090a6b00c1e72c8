"""Planner estimate vs measured peak memory, on 2 CPU ranks under the real DeepSpeed launcher.

    python -m bench.measure_memory [--work-dir DIR] [--only NAME ...] [--json OUT]

For each configuration below it prepares the dataset it needs (Ray, cached under the work dir),
computes the planner's per-rank estimate (``plan.device=cpu``: one process holds building,
training and rank 0's export), runs ``launchers/pretrain.py`` on 2 ranks with the same overrides,
each rank wrapped by this script's ``probe`` mode, which records the rank's peak resident set
(``ru_maxrss``) at exit, and prints estimate, measured and their ratio per rank.

``calibrate`` runs a model too small to matter: its measured peak is the per-process runtime
overhead the planner assumes on CPU (``planning/calibration.yaml``, ``overhead_gib.cpu``).
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import resource
import runpy
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from cllm4rec_dist.distributed import env
from data_prep.presets import TINY_CATALOG

REPO = Path(__file__).resolve().parents[1]
RANKS = 2
PROBE_DIR_ENV = "CLLM4REC_PROBE_DIR"

# 250k users: the two user tables dominate (125k rows x 1024 fp32 each per rank).
USERS_PREP = [
    "source=synthetic", "source.num_users=250000", "source.num_items=2000",
    "source.mean_interactions=6", "source.min_interactions=4", "source.user_text_fraction=0",
    "source.review_fraction=0", "source.text_min_words=4", "source.text_max_words=8",
    "tokenizer.vocab_size=300", "ray.num_cpus=1", "progress=false",
]  # fmt: skip
SHORT = [
    "stage.epochs=1", "stage.content_warmup_epochs=0", "stage.max_steps_per_phase=3",
    "data.collab_batch_size=4", "data.content_batch_size=4", "data.max_items=16",
    "data.max_text_tokens=24", "run.progress_bar=false", "run.log_every_steps=1",
]  # fmt: skip
# One 3072-wide layer with an 8192-wide MLP: 114 M parameters in matrices above glibc's largest
# dynamic mmap threshold (32 MiB), so freed tensors go back to the OS and RSS tracks live memory.
WIDE = ["model.hidden_size=3072", "model.num_layers=1", "model.num_heads=24",
        "model.intermediate_size=8192", "model.mode=full"]  # fmt: skip


@dataclass(frozen=True)
class Case:
    name: str
    dataset: str  # key of DATASETS
    overrides: tuple[str, ...]
    what: str


DATASETS = {"tiny": list(TINY_CATALOG), "users250k": USERS_PREP}
CASES = (
    Case(
        "calibrate",
        "tiny",
        (
            "model.hidden_size=32",
            "model.num_layers=1",
            "model.num_heads=2",
            "model.intermediate_size=64",
        ),
        "tiny backbone of 0.03 M parameters, 30 items, 48 users: runtime overhead only",
    ),
    Case(
        "tables",
        "users250k",
        (
            "model.hidden_size=1024",
            "model.num_layers=2",
            "model.num_heads=8",
            "model.intermediate_size=1024",
        ),
        "250,000 users x d=1024: frozen backbone (paper setting), ID tables dominate",
    ),
    Case(
        "zero1",
        "tiny",
        (*WIDE, "deepspeed=zero1"),
        "full-mode 114 M-parameter backbone, fp32, ZeRO-1",
    ),
    Case("zero3", "tiny", (*WIDE, "deepspeed=zero3"), "the same backbone under ZeRO-3"),
)


def probe(argv: list[str]) -> None:
    """Run ``argv[0]`` (a launcher script) as __main__ with ``argv[1:]``; at exit, write this
    rank's peak RSS to ``$CLLM4REC_PROBE_DIR/rank<RANK>.json``."""
    out = Path(os.environ[PROBE_DIR_ENV])

    def record() -> None:
        peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        rank = env.launcher_rank()
        (out / f"rank{rank}.json").write_text(json.dumps({"peak_bytes": peak_kib * 1024}))

    atexit.register(record)
    sys.argv = list(argv)
    runpy.run_path(argv[0], run_name="__main__")


def prepare(work: Path, name: str) -> Path:
    data = work / "data" / name
    if (data / "manifest.json").exists():
        return data
    cmd = [
        sys.executable,
        str(REPO / "launchers" / "prepare.py"),
        *DATASETS[name],
        f"output_dir={data}",
    ]
    subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    return data


def estimate(case: Case, data: Path) -> dict[int, float]:
    """The planner's per-rank process peak (bytes) for this case on 2 CPU ranks."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from cllm4rec_dist.planning.estimate import make_plan
    from cllm4rec_dist.planning.schema import register_plan

    register_plan()
    train = [f"data.dir={data}", *SHORT, *case.overrides]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose(
            config_name="plan",
            overrides=[*train, "plan.device=cpu", "plan.nodes=1", f"plan.gpus_per_node={RANKS}"],
        )
    mem = make_plan(cfg, train).memory
    return {rank: mem.process_peak(rank) for rank in range(RANKS)}


def measure(case: Case, data: Path, work: Path) -> tuple[dict[int, float], float]:
    """Run the case on 2 ranks; (peak RSS per rank in bytes, wall seconds)."""
    from cllm4rec_dist.distributed.spawn import free_port

    probe_dir = work / "probe" / case.name
    run_dir = work / "runs" / case.name
    for d in (probe_dir, run_dir):
        subprocess.run(["rm", "-rf", str(d)], check=True)
    probe_dir.mkdir(parents=True)
    env = dict(
        os.environ,
        DS_ACCELERATOR="cpu",
        OMP_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
        TOKENIZERS_PARALLELISM="false",
        RAY_AUTH_MODE="disabled",
        **{PROBE_DIR_ENV: str(probe_dir)},
    )
    deepspeed = Path(sys.executable).with_name("deepspeed")
    cmd = [
        str(deepspeed),
        "--num_gpus",
        str(RANKS),
        "--no_local_rank",
        "--master_port",
        str(free_port()),
        str(Path(__file__).resolve()),
        "probe",
        "launchers/pretrain.py",
        f"data.dir={data}",
        f"run.dir={run_dir}",
        *SHORT,
        *case.overrides,
    ]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(
            f"{case.name} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    peaks = {
        r: json.loads((probe_dir / f"rank{r}.json").read_text())["peak_bytes"] for r in range(RANKS)
    }
    return peaks, seconds


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["probe"]:
        probe(argv[1:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-dir", type=Path, default=Path("bench_out/memory"))
    parser.add_argument("--only", nargs="*", choices=[c.name for c in CASES])
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    work = args.work_dir.resolve()
    gib = 2**30
    results = []
    print(f"{'case':<10} {'rank':>4} {'estimate GiB':>13} {'measured GiB':>13} {'ratio':>6}  what")
    for case in CASES:
        if args.only and case.name not in args.only:
            continue
        data = prepare(work, case.dataset)
        est = estimate(case, data)
        got, seconds = measure(case, data, work)
        for rank in range(RANKS):
            ratio = est[rank] / got[rank]
            print(
                f"{case.name:<10} {rank:>4} {est[rank] / gib:>13.2f} {got[rank] / gib:>13.2f} "
                f"{ratio:>6.2f}  {case.what if rank == 0 else ''}",
                flush=True,
            )
            results.append(
                {
                    "case": case.name,
                    "rank": rank,
                    "estimate_bytes": est[rank],
                    "measured_bytes": got[rank],
                    "ratio": ratio,
                    "seconds": seconds,
                    "overrides": list(case.overrides),
                    "what": case.what,
                }
            )
        if case.name == "calibrate":
            from cllm4rec_dist.planning.estimate import calibration

            cpu_overhead = calibration()["overhead_gib"]["cpu"]
            derived = [(got[r] - est[r]) / gib + cpu_overhead for r in range(RANKS)]
            print(
                f"{'':<10} runtime overhead = measured - modelled terms: "
                + ", ".join(f"rank {r} {v:.2f} GiB" for r, v in enumerate(derived))
                + f" (calibration.yaml overhead_gib.cpu = {cpu_overhead})",
                flush=True,
            )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
