"""The GPU check's training runs: the real finetune launcher under DeepSpeed's launcher at world
size 1, and the figures read back from what the run wrote (TensorBoard scalars, metrics.json).

Tokens/s and documents/s are the trainer's own ``train/throughput/*`` scalars, one window per
epoch (``run.log_every_steps`` is set past an epoch); the first epoch is warm-up and is dropped.
MFU counts the matmul FLOPs of the non-padding tokens (the padding the batch carries is not
counted, so it is a lower bound):

- backbone, per token and layer: 2 x (q, k, v, o and the 3 MLP projections' weights) forward plus
  attention 4 x T x hidden (T = mean tokens per document); x3 for a fully trained backbone
  (forward, activation and weight gradients), x2 for frozen / LoRA (activation gradients only);
- item head, per document: 3 products of [H] x [H, items] (logits, d hidden, d items) = 6 H I.
"""

from __future__ import annotations

import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
TAGS = ("train/throughput/tokens_per_s", "train/throughput/samples_per_s")
# The error torch raises when a CPU tensor meets a process group created for NCCL only.
CPU_TENSOR_ON_NCCL = "No backend type associated with device type cpu"

# SmolLM2-135M's layer shapes (hidden 576, 30 layers, MLP 1536, 9 heads) with random weights and
# the dataset's small vocabulary; SmolLM2 has 3 KV heads, which the tiny config cannot express.
SMOLLM2_SHAPE = [
    "model.hidden_size=576",
    "model.num_layers=30",
    "model.num_heads=9",
    "model.intermediate_size=1536",
    "model.max_position_embeddings=2048",
]
# What every run shares: bf16, ZeRO-2 over a fully trained backbone (so DeepSpeed has an engine),
# batches of 128 users (ml-100k: 7 steps an epoch), one throughput window per epoch.
COMMON = [
    "stage.init_from=none",  # finetuning from random tables: the check times steps, not quality
    "model.mode=full",
    "model.dtype=bf16",
    "deepspeed=zero2",
    "stage.epochs=4",
    "data.rec_batch_size=128",
    "data.min_steps_per_epoch=1",
    "run.log_every_steps=1000000",
    "run.progress_bar=false",
]
# CPU dry run: the same command, two short epochs of a tiny backbone.
DRY_RUN = [
    "stage.epochs=2",
    "stage.max_steps_per_phase=2",
    "data.rec_batch_size=32",
    "data.eval_batch_size=1024",
    "data.max_items=16",
    "data.num_workers=0",
    "model.hidden_size=32",
    "model.intermediate_size=64",
    "model.num_heads=2",
]


@dataclass
class RunResult:
    name: str
    ok: bool
    seconds: float
    note: str = ""
    tokens_s: float | None = None
    docs_s: float | None = None
    flops_s: float | None = None
    windows: int = 0
    test_ndcg100: float | None = None
    backend: str = ""
    log_tail: str = field(default="", repr=False)


def launch(
    name: str,
    data: Path,
    run_dir: Path,
    overrides: list[str],
    *,
    cuda: bool,
    env: dict[str, str],
    timeout: float,
    wrapper: Path | None = None,
) -> tuple[int, str, float]:
    """``python -m deepspeed.launcher.runner --num_gpus 1 --no_local_rank launchers/finetune.py``
    with ``overrides`` -> (exit status, combined output, seconds)."""
    from cllm4rec_dist.distributed.spawn import free_port

    cmd = [
        sys.executable,
        "-m",
        "deepspeed.launcher.runner",
        "--num_gpus",
        "1",
        "--no_local_rank",
        "--master_port",
        str(free_port()),
        *([str(wrapper)] if wrapper else []),
        "launchers/finetune.py",
        f"data.dir={data}",
        f"run.dir={run_dir}",
        *overrides,
    ]
    run_env = dict(
        os.environ,
        **env,
        DS_ACCELERATOR="cuda" if cuda else "cpu",
        PYTHONUNBUFFERED="1",
        TOKENIZERS_PARALLELISM="false",
        # Prints NCCL's version line when a communicator starts, i.e. when NCCL really ran.
        NCCL_DEBUG="VERSION",
    )
    if not cuda:
        run_env["OMP_NUM_THREADS"] = "1"
    start = time.perf_counter()
    # Its own session, so that a timeout ends the ranks too (they hold the output pipe open).
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        env=run_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        code, out = 124, out + f"\n[gpu_check] {name}: killed after {timeout:.0f} s\n"
    return code, out, time.perf_counter() - start


def throughput(tb_dir: Path) -> tuple[list[float], list[float]]:
    """Per-window tokens/s and documents/s from the run's TensorBoard files, warm-up dropped."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    acc.Reload()
    if not set(TAGS) <= set(acc.Tags()["scalars"]):
        return [], []
    tokens, docs = ([e.value for e in acc.Scalars(tag)] for tag in TAGS)
    drop = 1 if len(tokens) > 1 else 0
    return tokens[drop:], docs[drop:]


def backbone_shape(cfg: dict) -> dict[str, int]:
    """hidden, layers, heads, kv_heads, intermediate of the run's backbone (its config.yaml)."""
    m = cfg["model"]
    if m["source"] == "tiny":
        return dict(
            hidden=m["hidden_size"],
            layers=m["num_layers"],
            heads=m["num_heads"],
            kv_heads=m["num_heads"],
            intermediate=m["intermediate_size"],
        )
    if m["source"] == "local":
        hf = json.loads((Path(m["path"]) / "config.json").read_text())
    else:  # smollm2_gguf: the converted copy in the cache
        hf = json.loads(next(Path(m["cache_dir"]).glob("smollm2-*/config.json")).read_text())
    return dict(
        hidden=hf["hidden_size"],
        layers=hf["num_hidden_layers"],
        heads=hf["num_attention_heads"],
        kv_heads=hf.get("num_key_value_heads") or hf["num_attention_heads"],
        intermediate=hf["intermediate_size"],
    )


def model_flops_per_s(cfg: dict, num_items: int, tokens_s: float, docs_s: float) -> float:
    """Counted FLOP/s of the finetuning step (see the module docstring)."""
    s = backbone_shape(cfg)
    h, layers = s["hidden"], s["layers"]
    kv = h * s["kv_heads"] // s["heads"]
    weights = 2 * h * h + 2 * h * kv + 3 * h * s["intermediate"]
    tokens_per_doc = tokens_s / max(docs_s, 1e-9)
    forward = layers * (2 * weights + 4 * tokens_per_doc * h)
    factor = 3 if cfg["model"]["mode"] == "full" else 2
    return tokens_s * forward * factor + docs_s * 6 * h * num_items


def run_finetune(
    name: str,
    data: Path,
    work: Path,
    overrides: list[str],
    *,
    cuda: bool,
    env: dict[str, str],
    timeout: float,
    wrapper: Path | None = None,
) -> RunResult:
    """One finetuning run and its figures; never raises for a failed run."""
    from cllm4rec_dist.data.manifest import load_manifest

    run_dir = work / name
    code, out, seconds = launch(
        name, data, run_dir, overrides, cuda=cuda, env=env, timeout=timeout, wrapper=wrapper
    )
    result = RunResult(name, code == 0, seconds, log_tail=out[-4_000_000:])
    version = re.search(r"NCCL version [\w.+-]+", out)
    result.backend = version.group(0) if version else ("no-NCCL-collective-ran" if cuda else "gloo")
    if code != 0:
        errors = [line for line in out.splitlines() if "Error" in line or "error" in line]
        result.note = f"exit {code}: {errors[-1].strip() if errors else out.strip()[-300:]}"
        return result
    try:
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
        tokens, docs = throughput(run_dir / "tensorboard")
        metrics = json.loads((run_dir / "metrics.json").read_text())
        num_items = load_manifest(data).num_items
    except (OSError, ValueError, KeyError, StopIteration) as err:
        result.ok, result.note = False, f"run finished but its outputs are unreadable: {err!r}"
        return result
    result.test_ndcg100 = metrics.get("test", {}).get("ndcg@100")
    if tokens:
        result.windows = len(tokens)
        result.tokens_s, result.docs_s = statistics.median(tokens), statistics.median(docs)
        result.flops_s = model_flops_per_s(cfg, num_items, result.tokens_s, result.docs_s)
    else:
        result.ok, result.note = False, "no throughput scalars in the run's TensorBoard files"
    return result
