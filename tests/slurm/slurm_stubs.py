"""A simulated Slurm for the batch scripts: ``sbatch``, ``srun`` and ``scontrol`` stand-ins that
record their arguments (one JSON line per call in ``$SLURM_STUB_LOG``) and start local processes.

- ``sbatch [--key=value ...] SCRIPT ARGS``: reads the script's ``#SBATCH`` defaults, applies the
  command-line options, sets the ``SLURM_*`` variables of the allocation (hosts from
  ``$SLURM_STUB_HOSTS``, comma-separated), copies the script to a spool directory as Slurm does and
  *execs* bash on it: the job runs in the foreground and its pid is the batch shell's.
- ``srun [options] CMD``: starts the step's tasks as local processes with ``SLURM_PROCID`` /
  ``SLURM_LOCALID`` / ``SLURM_NODEID`` / ``SLURM_NTASKS``, forwards USR1/USR2/TERM/INT to them (as
  srun does), kills the rest when one fails (``--kill-on-bad-exit``) and exits with the highest
  task status.
- ``scontrol show hostnames`` prints the allocation's hosts; ``scontrol requeue ID`` only records.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

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
