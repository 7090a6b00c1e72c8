"""The one module of test helpers (on ``sys.path`` through ``tests/conftest.py``'s folder).

Sections: composing configs the way the launchers do (training, data prep) and running the
launchers on 2 CPU ranks; a tiny backbone config and tokenizer; a hand-written prepared dataset
for the readers' tests; CSR lists and multi-rank runs for the collective ops; a simulated Slurm
for the batch scripts. Plain references of the ops are the package's (``cllm4rec_dist/ops/
reference.py``), beside the ops they check.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import webdataset as wds
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from torch import Tensor

from cllm4rec_dist.config import ModelConfig, register
from cllm4rec_dist.distributed.spawn import free_port, run_ranks
from cllm4rec_dist.ops.reference import cross_entropy_reference, multinomial_nll_reference
from data_prep.config import register_configs

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
DEEPSPEED = Path(sys.executable).with_name("deepspeed")
PREPARE = [sys.executable, str(REPO / "launchers" / "prepare.py")]


# --- training configs and launches -----------------------------------------------------------
# Small enough for CPU tests; one epoch of each phase is a handful of steps on the tiny dataset.
TINY = [
    "data.collab_batch_size=4",
    "data.content_batch_size=4",
    "data.rec_batch_size=4",
    "data.eval_batch_size=8",
    "data.max_items=16",
    "data.max_text_tokens=24",
    "model.hidden_size=32",
    "model.num_layers=2",
    "model.num_heads=2",
    "model.intermediate_size=64",
    "run.progress_bar=false",
    "run.log_every_steps=1",
    # Batches collated on the training thread: a worker process per phase only adds start-up
    # time at these sizes (tests/data/test_loader.py checks that workers give the same batches).
    "data.num_workers=0",
    "data.min_steps_per_epoch=1",  # the tiny catalog keeps its batch of 4
]

register()


def compose_train(root: str, overrides: list[str]):
    """The config ``launchers/<root>.py`` would run with these overrides (tiny sizes first)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name=root, overrides=TINY + overrides)


def launch(
    script: str, overrides: list[str], timeout: int = 600, kill_at_step: int | None = None
) -> subprocess.CompletedProcess:
    """``launchers/<script>.py`` on 2 CPU ranks; with ``kill_at_step``, rank 1 SIGKILLs itself
    after that global step (tests/train/fault_launcher.py)."""
    env = dict(os.environ, DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    entry = [f"launchers/{script}.py"]
    if kill_at_step is not None:
        env["KILL_AT_STEP"] = str(kill_at_step)
        entry = [str(REPO / "tests" / "train" / "fault_launcher.py"), script]
    port = free_port()
    cmd = [
        str(DEEPSPEED),
        "--num_gpus",
        "2",
        "--no_local_rank",
        "--master_port",
        str(port),
        *entry,
        *TINY,
        *overrides,
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    # DeepSpeed's CPU shm all-reduce names its segments after the port and never unlinks them
    # (distributed/env.import_deepspeed switches it off); one left behind means it came back.
    leaked = sorted(Path("/dev/shm").glob(f"deepspeed_allreduce_buffer_*_{port}_*"))
    assert not leaked, f"DeepSpeed left shared-memory segments behind: {leaked}"
    return proc


# --- data-prep configs ----------------------------------------------------------------------
# A synthetic dataset small enough for a few seconds per run, big enough for 2 RNG chunks,
# several buckets and several samples per shard.
TINY_SYNTHETIC = [
    "source.num_users=300",
    "source.num_items=120",
    "source.mean_interactions=10",
    "source.users_per_block=256",
    "staging.buckets=4",
    "layout.users_per_sample=16",
    "layout.docs_per_sample=32",
    "layout.samples_per_shard=2",
    "tokenizer.vocab_size=300",
    "progress=false",
]


# Small shards so a 40-user table makes a valid dataset in a few seconds.
SMALL = [
    "staging.buckets=2",
    "layout.users_per_sample=4",
    "layout.docs_per_sample=4",
    "layout.samples_per_shard=2",
    "layout.shard_multiple=2",
    "tokenizer.vocab_size=280",
    "progress=false",
]


def compose_prep(overrides: list[str]) -> DictConfig:
    """The prepare.py config with Hydra command-line ``overrides`` applied."""
    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "configs" / "data_prep"), version_base=None):
        return compose(config_name="config", overrides=overrides)


# --- a tiny backbone and its tokenizer --------------------------------------------------------
CORPUS = [
    "has interacted with, will interact with",
    "writes the following review for the item: great product, works well.",
    "The description of this item is: a small red lamp for the desk.",
    "The description of this user is: likes lamps, books and music.",
    "Terrible battery. Would not buy again. The screen is bright and sharp.",
    "A fine book about the history of music, easy to read and well written.",
]


def tiny_model_cfg(**overrides) -> ModelConfig:
    """A tiny backbone config: hidden 32, 2 layers, fp32, frozen (override any field)."""
    base = ModelConfig(
        source="tiny",
        hidden_size=32,
        num_layers=2,
        num_heads=4,
        intermediate_size=64,
        max_position_embeddings=256,
        cache_dir="/nonexistent",
    )
    return replace(base, **overrides)


def write_tokenizer(path: Path, vocab_size: int = 400) -> Path:
    """Train a byte-level BPE with <pad>, <eos>, <unk> on CORPUS and save it as tokenizer.json."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<eos>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    tok.save(str(path))
    return path


# --- a hand-written prepared dataset (architecture.md §1) --------------------------------------
NUM_USERS = 23
NUM_ITEMS = 40
NUM_DOCUMENTS = 17
NUM_SHARDS = 4  # the last shard of every corpus is an empty pad shard
BLOCK_ROWS = 3


def user_items(user: int) -> np.ndarray:
    """The collaborative history of a fixture user (1 to 5 items)."""
    return (np.arange(user % 5 + 1, dtype=np.int64) * 7 + user) % NUM_ITEMS


def user_splits(user: int) -> dict[str, np.ndarray]:
    """The recommendation train/val/test items of a fixture user (val may be empty)."""
    items = user_items(user)
    return {"train": items, "val": items[:1] if user % 2 else items[:0], "test": items[-1:] + 1}


def document(doc: int) -> dict:
    """Content document ``doc``: kind cycles review / item / user description."""
    kind = doc % 3
    return {
        "kind": kind,
        "user": doc % NUM_USERS if kind != 1 else -1,
        "item": doc % NUM_ITEMS if kind != 2 else -1,
        "text": f"document {doc} ünïcode",
    }


def _csr(arrays: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(a) for a in arrays])
    values = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int64)
    return offsets, values.astype(np.int64)


def _block(corpus: str, ids: list[int]) -> dict:
    if corpus == "collaborative":
        offsets, items = _csr([user_items(u) for u in ids])
        return {
            "users.npy": np.array(ids, np.int64),
            "items_offsets.npy": offsets,
            "items.npy": items,
        }
    if corpus == "recommendation":
        sample = {"users.npy": np.array(ids, np.int64)}
        for split in ("train", "val", "test"):
            offsets, items = _csr([user_splits(u)[split] for u in ids])
            sample |= {f"{split}_offsets.npy": offsets, f"{split}_items.npy": items}
        return sample
    docs = [document(d) for d in ids]
    return {
        "kinds.npy": np.array([d["kind"] for d in docs], np.int64),
        "users.npy": np.array([d["user"] for d in docs], np.int64),
        "items.npy": np.array([d["item"] for d in docs], np.int64),
        "texts.json": [d["text"] for d in docs],
    }


def _write_corpus(root: Path, corpus: str, num_rows: int) -> dict:
    (root / corpus).mkdir()
    # Uneven shards (so skipping by counts is exercised), the last one empty padding.
    bounds = np.linspace(0, num_rows, NUM_SHARDS, dtype=int)
    bounds[1] -= 2
    row_key = "documents" if corpus == "content" else "users"
    shards = []
    for index in range(NUM_SHARDS):
        ids = list(range(bounds[index], bounds[index + 1])) if index < NUM_SHARDS - 1 else []
        rel = f"{corpus}/shard-{index:06d}.tar"
        blocks = [ids[i : i + BLOCK_ROWS] for i in range(0, len(ids), BLOCK_ROWS)]
        with wds.TarWriter(str(root / rel)) as sink:
            for b, block_ids in enumerate(blocks):
                sink.write({"__key__": f"b{index:06d}{b:06d}"} | _block(corpus, block_ids))
        data = (root / rel).read_bytes()
        shards.append(
            {
                "path": rel,
                "samples": len(blocks),
                row_key: len(ids),
                "sha256": hashlib.sha256(data).hexdigest(),
                "bytes": len(data),
            }
        )
    return {"shards": shards, "num_shards": NUM_SHARDS}


def write_dataset(root: Path) -> Path:
    """Write manifest.json and the three corpora under ``root``; returns ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    corpora = {
        "collaborative": _write_corpus(root, "collaborative", NUM_USERS),
        "recommendation": _write_corpus(root, "recommendation", NUM_USERS),
        "content": _write_corpus(root, "content", NUM_DOCUMENTS),
    }
    manifest = {
        "schema_version": 1,
        "source": {"name": "fixture", "path": "none"},
        "config": {"shard_multiple": NUM_SHARDS},
        "seed": 0,
        "counts": {
            "users": NUM_USERS,
            "items": NUM_ITEMS,
            "interactions": {"train": 60, "val": 11, "test": 23},
            "evaluated_users": {"val": 11, "test": 23},
            "documents": {"review": 6, "item": 6, "user": 5},
        },
        "prompts": {"collaborative": "<user> has interacted with"},
        "corpora": corpora,
        "rejected": {"bad_json": 1},
        "tokenizer": "tokenizer/tokenizer.json",
        "created_by": "cllm4rec_dist test fixture",
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return root


# --- collective ops ---------------------------------------------------------------------------
def csr(lists: list[list[int]]) -> tuple[Tensor, Tensor]:
    """Python lists of item ids -> (offsets [len+1], items [nnz]) int64."""
    counts = torch.tensor([len(x) for x in lists], dtype=torch.int64)
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(counts, 0)])
    items = torch.tensor([i for x in lists for i in x], dtype=torch.int64)
    return offsets, items


def run_ranks_serialized(fn, world_size: int = 2) -> list:
    """``run_ranks`` made safe for tests that also compute in the parent process.

    - Each rank first sets one intra-op thread: ranks are forked, and a child forked from a parent
      that already ran an OpenMP parallel region hangs in its first parallel region otherwise.
    - Results travel as ``torch.save`` bytes: tensors put on a multiprocessing queue are shared
      through file descriptors once ``torch.multiprocessing`` is imported, and the rank has
      exited by the time the parent unpickles them (FileNotFoundError).
    """

    def rank_fn(rank: int, ws: int) -> bytes:
        torch.set_num_threads(1)
        buf = io.BytesIO()
        torch.save(fn(rank, ws), buf)
        return buf.getvalue()

    return [torch.load(io.BytesIO(b), weights_only=False) for b in run_ranks(rank_fn, world_size)]


class DenseScorer:
    """Single-process item scorer over a whole item table (the reference for the sharded one)."""

    def __init__(self, table):
        self.table = table

    def cross_entropy(self, hidden: Tensor, targets: Tensor) -> Tensor:
        return cross_entropy_reference(hidden, self.table.weight, targets)

    def multinomial_nll(self, hidden: Tensor, offsets: Tensor, targets: Tensor) -> Tensor:
        return multinomial_nll_reference(hidden, self.table.weight, offsets, targets)


# --- a simulated Slurm -------------------------------------------------------------------------
_COMMON = r'''
import json, os, sys

def record(tool, **extra):
    with open(os.environ["SLURM_STUB_LOG"], "a") as f:
        f.write(json.dumps({"tool": tool, "argv": sys.argv[1:], **extra}) + "\n")

def parse(args, flags_with_values):
    """Split srun/sbatch style options from the command; returns (options, rest)."""
    opts, i = {}, 0
    while i < len(args) and args[i].startswith("-"):
        arg = args[i]
        if "=" in arg:
            key, value = arg.lstrip("-").split("=", 1)
        elif arg in flags_with_values:
            key, value = flags_with_values[arg], args[i + 1]
            i += 1
        else:
            key, value = arg.lstrip("-"), "1"
        opts[key] = value
        i += 1
    return opts, args[i:]
'''

SBATCH = (
    _COMMON
    + r"""
import shutil, tempfile

opts, rest = parse(sys.argv[1:], {"-N": "nodes", "-J": "job-name"})
script, args = rest[0], rest[1:]
defaults = {}
for line in open(script):
    if line.startswith("#!") or not line.strip():
        continue
    if not line.startswith("#"):
        break
    if line.startswith("#SBATCH "):
        d, _ = parse(line.split()[1:], {})
        defaults.update(d)
cfg = {**defaults, **opts}
nodes = int(cfg.get("nodes", 1))
per_node = int(cfg.get("ntasks-per-node", 1))
hosts = os.environ["SLURM_STUB_HOSTS"].split(",")[:nodes]
assert len(hosts) == nodes, f"SLURM_STUB_HOSTS has fewer than {nodes} hosts"
job_id = os.environ.get("SLURM_STUB_JOB_ID", "4242")
record("sbatch", options=cfg)
env = dict(os.environ,
           SLURM_JOB_ID=job_id, SLURM_JOBID=job_id,
           SLURM_JOB_NAME=cfg.get("job-name", os.path.basename(script)),
           SLURM_JOB_NUM_NODES=str(nodes), SLURM_NNODES=str(nodes),
           SLURM_NTASKS=str(nodes * per_node), SLURM_NTASKS_PER_NODE=str(per_node),
           SLURM_CPUS_PER_TASK=cfg.get("cpus-per-task", "1"),
           SLURM_JOB_NODELIST=",".join(hosts), SLURM_SUBMIT_DIR=os.getcwd(),
           SLURM_RESTART_COUNT=os.environ.get("SLURM_STUB_RESTART_COUNT", "0"))
spool = tempfile.mkdtemp(prefix=f"slurmd-job{job_id}-", dir=os.environ.get("SLURM_STUB_SPOOL"))
copy = os.path.join(spool, "slurm_script")
shutil.copy(script, copy)
os.execvpe("bash", ["bash", copy, *args], env)
"""
)

SRUN = (
    _COMMON
    + r"""
import signal, subprocess, time

opts, cmd = parse(sys.argv[1:], {"-N": "nodes", "-n": "ntasks", "-w": "nodelist"})
hosts = os.environ["SLURM_JOB_NODELIST"].split(",")
if "nodelist" in opts:
    hosts = opts["nodelist"].split(",")
elif "exclude" in opts:
    hosts = [h for h in hosts if h not in opts["exclude"].split(",")]
nodes = int(opts.get("nodes", len(hosts)))
hosts = hosts[:nodes]
if "ntasks" in opts:
    ntasks = int(opts["ntasks"])
    per_node = int(opts.get("ntasks-per-node", -(-ntasks // nodes)))
else:
    per_node = int(opts.get("ntasks-per-node", os.environ.get("SLURM_NTASKS_PER_NODE", 1)))
    ntasks = nodes * per_node
record("srun", options=opts, ntasks=ntasks)
procs = []
for task in range(ntasks):
    env = dict(os.environ, SLURM_PROCID=str(task), SLURM_LOCALID=str(task % per_node),
               SLURM_NODEID=str(task // per_node), SLURM_NTASKS=str(ntasks),
               SLURM_STEP_NUM_TASKS=str(ntasks), SLURMD_NODENAME=hosts[task // per_node])
    procs.append(subprocess.Popen(cmd, env=env))

def forward(signum, frame):
    record("srun-signal", signal=signal.Signals(signum).name)
    for p in procs:
        if p.poll() is None:
            p.send_signal(signum)

for sig in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM, signal.SIGINT):
    signal.signal(sig, forward)
kill_on_bad_exit = opts.get("kill-on-bad-exit", "0") != "0"
while any(p.poll() is None for p in procs):
    if kill_on_bad_exit and any(p.poll() not in (None, 0) for p in procs):
        for p in procs:
            if p.poll() is None:
                p.terminate()
    time.sleep(0.1)
codes = [p.returncode if p.returncode >= 0 else 128 - p.returncode for p in procs]
sys.exit(max(codes))
"""
)

SCONTROL = (
    _COMMON
    + r"""
record("scontrol")
if sys.argv[1:3] == ["show", "hostnames"]:
    nodelist = sys.argv[3] if len(sys.argv) > 3 else os.environ["SLURM_JOB_NODELIST"]
    print("\n".join(nodelist.split(",")))
elif sys.argv[1] != "requeue":
    sys.exit(f"scontrol stub: unsupported {sys.argv[1:]}")
"""
)


def install_stubs(bin_dir: Path) -> Path:
    """Write ``sbatch``, ``srun`` and ``scontrol`` into ``bin_dir`` (run by this interpreter)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name, body in (("sbatch", SBATCH), ("srun", SRUN), ("scontrol", SCONTROL)):
        path = bin_dir / name
        path.write_text(f"#!{sys.executable}\n{body}")
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return bin_dir


def read_log(log: Path) -> list[dict]:
    """The recorded calls, in order."""
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def slurm_env(tmp: Path, hosts: list[str], **extra: str) -> dict[str, str]:
    """Environment of a simulated submission: stubs first on PATH, the stub log and hosts."""
    bin_dir = install_stubs(tmp / "bin")
    spool = tmp / "spool"
    spool.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{env['PATH']}",
        SLURM_STUB_LOG=str(tmp / "calls.jsonl"),
        SLURM_STUB_HOSTS=",".join(hosts),
        SLURM_STUB_SPOOL=str(spool),
        DS_ACCELERATOR="cpu",
        OMP_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
        CLLM4REC_PYTHON=sys.executable,
        CLLM4REC_RUNS=str(tmp / "runs"),
    )
    env.update(extra)
    return env
