"""A real one-node Slurm on this machine for the ``real_slurm`` tests: ``munged``, ``slurmctld``
and ``slurmd`` (Debian's ``slurm-wlm`` and ``munge``, which ``.ci/run`` installs) started from a
``slurm.conf`` this module writes into a temp dir, and stopped by their pid files.

The node is this host (its short name must resolve, as the batch scripts rendezvous on it), with
two partitions named as the scripts' ``#SBATCH --partition`` defaults (``gpu``, ``cpu``), so a
submission overrides only what one 2-core node cannot give (nodes, tasks, CPUs, GPUs).
``start()`` raises ``SlurmUnavailable`` with the reason when no Slurm can be started here.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from cllm4rec_dist.distributed.spawn import free_port

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "srun", "scontrol", "squeue", "scancel", "sinfo")
# Job states after which a job runs no more (scontrol's JobState).
FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"}


class SlurmUnavailable(RuntimeError):
    """No one-node Slurm can be started on this machine; the message says why."""


def _conf(root: Path, node: str, cpus: int, memory_mb: int, socket_path: Path) -> str:
    ctld_port, slurmd_port = free_port(), free_port()
    return f"""\
ClusterName=cllm4rec-test
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={socket_path}
StateSaveLocation={root / "state"}
SlurmdSpoolDir={root / "spool"}
SlurmctldPidFile={root / "slurmctld.pid"}
SlurmdPidFile={root / "slurmd.pid"}
SlurmctldLogFile={root / "slurmctld.log"}
SlurmdLogFile={root / "slurmd.log"}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
KillWait=10
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName=gpu Nodes=ALL Default=YES MaxTime=INFINITE State=UP
PartitionName=cpu Nodes=ALL MaxTime=INFINITE State=UP
"""


@dataclass
class OneNodeSlurm:
    """A started cluster: ``env`` is the environment its clients (and jobs) run with."""

    root: Path
    node: str
    env: dict[str, str]
    pid_files: list[Path] = field(default_factory=list)

    def run(self, *cmd: str, check: bool = True, timeout: float = 60) -> str:
        proc = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: exit {proc.returncode}: {proc.stderr.strip()}")
        return proc.stdout

    def sbatch(self, args: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
        """Submit; returns the job id."""
        proc = subprocess.run(
            ["sbatch", "--parsable", *args],
            cwd=cwd,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=60,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"sbatch {args}: exit {proc.returncode}: {proc.stderr.strip()}")
        return proc.stdout.strip().split(";")[0]

    def job(self, job_id: str) -> dict[str, str]:
        """``scontrol show job`` as a dict (JobState, Reason, Restarts, ExitCode, ...)."""
        out = self.run("scontrol", "show", "job", "--oneliner", job_id)
        fields = {}
        for token in out.split():
            key, sep, value = token.partition("=")
            if sep:
                fields.setdefault(key, value)
        return fields

    def wait(self, job_id: str, until=FINAL_STATES.__contains__, timeout: float = 600) -> dict:
        """Poll the job until ``until(state)``; TimeoutError with its last record otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            info = self.job(job_id)
            if until(info.get("JobState", "")):
                return info
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {info.get('JobState')}: {info}")
            time.sleep(0.5)

    def wait_node_idle(self, timeout: float = 120) -> None:
        if not _wait_for(lambda: _node_idle(self), timeout):
            raise TimeoutError(f"node {self.node} not idle after {timeout:.0f} s\n{self.logs()}")

    def logs(self) -> str:
        """The daemons' logs (last lines), for a failing test's message."""
        return "\n".join(
            f"--- {name}\n" + "\n".join(_read(self.root / name).splitlines()[-30:])
            for name in ("slurmctld.log", "slurmd.log")
        )

    def stop(self) -> None:
        """Cancel every job, then SIGTERM each daemon by its pid file and wait for it to exit
        (SIGKILL after 30 s). Leaves no process of this cluster behind."""
        self.run("scancel", "--full", "--user", pwd.getpwuid(os.getuid()).pw_name, check=False)
        for pid_file in reversed(self.pid_files):  # slurmd, slurmctld, munged
            pid = _read_pid(pid_file)
            if pid is None:
                continue
            _signal(pid, signal.SIGTERM)
            if not _wait_gone(pid, 30):
                _signal(pid, signal.SIGKILL)
                _wait_gone(pid, 10)
        shutil.rmtree(self.root, ignore_errors=True)


def start(cpus: int = 2, memory_mb: int = 4000, timeout: float = 60) -> OneNodeSlurm:
    """Start munged, slurmctld and slurmd for one node (this host); SlurmUnavailable if it
    cannot be done here (not root, packages missing, the host name does not resolve, or a
    daemon did not come up: its log is in the message)."""
    missing = [name for name in DAEMONS + CLIENTS if shutil.which(name) is None]
    if missing:
        raise SlurmUnavailable(
            f"{', '.join(missing)} not installed (apt-get install slurm-wlm munge; .ci/run does)"
        )
    if os.geteuid() != 0:
        raise SlurmUnavailable("slurmd runs jobs as root here: the tests must run as root")
    try:
        pwd.getpwnam("munge")
    except KeyError:
        raise SlurmUnavailable("no 'munge' user (the munge package creates it)") from None
    if not Path("/etc/munge/munge.key").is_file():
        raise SlurmUnavailable("/etc/munge/munge.key missing (the munge package creates it)")
    node = socket.gethostname().split(".")[0]
    try:
        socket.gethostbyname(node)
    except OSError as err:
        raise SlurmUnavailable(f"host name {node!r} does not resolve ({err})") from None

    # munged insists that every folder above its socket is searchable by all (pytest's temp
    # root is mode 700), and it runs as the munge user: a world-readable dir under /tmp.
    root = Path(tempfile.mkdtemp(prefix="cllm4rec-slurm-"))
    root.chmod(0o755)
    for sub in ("state", "spool"):
        (root / sub).mkdir()
    munge_dir = root / "munge"
    munge_dir.mkdir(mode=0o755)
    shutil.chown(munge_dir, "munge", "munge")
    socket_path = munge_dir / "munge.socket"
    conf = root / "slurm.conf"
    conf.write_text(_conf(root, node, cpus, memory_mb, socket_path))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_"))}
    env["SLURM_CONF"] = str(conf)
    cluster = OneNodeSlurm(root=root, node=node, env=env)

    steps = [
        (
            munge_dir / "munged.pid",
            [
                "su", "-s", "/bin/sh", "munge", "-c",
                f"munged --socket={socket_path} --pid-file={munge_dir / 'munged.pid'} "
                f"--log-file={munge_dir / 'munged.log'} --seed-file={munge_dir / 'munged.seed'}",
            ],
        ),
        (root / "slurmctld.pid", ["slurmctld", "-f", str(conf)]),
        (root / "slurmd.pid", ["slurmd", "-f", str(conf)]),
    ]  # fmt: skip
    try:
        for pid_file, cmd in steps:
            cluster.pid_files.append(pid_file)
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
            if proc.returncode != 0 or not _wait_for(lambda f=pid_file: _read_pid(f), 15):
                raise SlurmUnavailable(
                    f"{cmd[0] if cmd[0] != 'su' else 'munged'} did not start "
                    f"(exit {proc.returncode}): {proc.stderr.strip()}\n{cluster.logs()}"
                )
        try:
            cluster.wait_node_idle(timeout)
        except TimeoutError as err:
            raise SlurmUnavailable(str(err)) from None
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _node_idle(cluster: OneNodeSlurm) -> bool:
    out = cluster.run("sinfo", "--noheader", "--format=%t", "--nodes", cluster.node, check=False)
    return "idle" in out.split()


def _wait_for(ready, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return True
        time.sleep(0.25)
    return False


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def _read_pid(path: Path) -> int | None:
    text = _read(path).strip()
    return int(text) if text.isdigit() else None


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _wait_gone(pid: int, timeout: float) -> bool:
    def gone() -> bool:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            return True
        # "Z": exited, not yet reaped by its parent (the daemons detach to init, which in a
        # container may never reap them).
        return stat.rsplit(")", 1)[1].split()[0] == "Z"

    return _wait_for(gone, timeout)
