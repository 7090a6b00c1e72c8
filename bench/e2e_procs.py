"""Run one stage of bench_e2e as a child process and sample the memory of its process tree.

A stage is a command (``launchers/prepare.py`` with its Ray workers, or ``deepspeed`` with its
launcher process and one Python process per rank). Every ``interval`` seconds a thread walks the
tree with psutil and sums the proportional set size (PSS) of every process in it: the memory the
tree fills, with pages shared between processes (a rank and its forked DataLoader worker, Ray's
object store) counted once rather than once per process as a sum of RSS would. For each process it
also reads ``VmHWM``, the kernel's own high-water mark of its resident set, so a peak between two
samples is not missed. Each rank's CPU seconds (user + system, all its threads) are recorded
with the sample's time, so that a step's cost can be read as CPU time: on a machine shared with
other jobs a rank's wall time per step grows with the load, its CPU time per step much less. Ranks are the tree's processes that run a ``launchers/``
script under the ``RANK`` environment variable the DeepSpeed launcher sets.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil


class StageFailed(RuntimeError):
    pass


@dataclass
class StageRun:
    """What a finished stage measured: wall seconds, peak PSS of the tree, peak RSS of each rank
    and of the largest single process (a Ray worker, a rank, the launcher)."""

    name: str
    wall_s: float
    tree_peak_bytes: int
    process_peak_bytes: int
    rank_peak_bytes: dict[int, int] = field(default_factory=dict)
    # rank -> [(unix time, CPU seconds of the rank so far)], one entry per sample
    rank_cpu: dict[int, list[tuple[float, float]]] = field(default_factory=dict)

    @property
    def peak_rank_bytes(self) -> int:
        return max(self.rank_peak_bytes.values(), default=0)


def _proc_field(pid: int, file: str, key: str) -> int:
    """A ``key: N kB`` field of ``/proc/<pid>/<file>`` in bytes (0 once the process is gone)."""
    try:
        with open(f"/proc/{pid}/{file}") as fh:
            for line in fh:
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _rank_of(proc: psutil.Process) -> int | None:
    """The process's RANK if it is a DeepSpeed rank running a launcher script, else None. The
    DeepSpeed launcher sets RANK for the ranks it starts, not for itself; a rank's DataLoader
    worker is a fork of the rank and inherits RANK, so a rank is a process with RANK whose
    parent has none (the workers are left out here; the tree's sum counts them)."""
    try:
        if not any("launchers/" in part for part in proc.cmdline()):
            return None
        rank, parent = proc.environ().get("RANK"), proc.parent()
        if parent is not None and "RANK" in parent.environ():
            return None
    except (psutil.Error, OSError):
        return None
    return int(rank) if rank is not None and rank.isdigit() else None


class TreeSampler(threading.Thread):
    """Samples the tree under ``root_pid`` until ``stop()``."""

    def __init__(self, root_pid: int, interval: float):
        super().__init__(daemon=True)
        self.root, self.interval = psutil.Process(root_pid), interval
        self.tree_peak = self.process_peak = 0
        self.rank_peak: dict[int, int] = {}
        self.rank_cpu: dict[int, list[tuple[float, float]]] = {}
        self._ranks: dict[int, int] = {}  # pid -> rank, looked up once per process
        self._done = threading.Event()

    def sample(self) -> None:
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return
        total = 0
        for proc in procs:
            total += _proc_field(proc.pid, "smaps_rollup", "Pss:")
            if proc.pid not in self._ranks:
                rank = _rank_of(proc)
                self._ranks[proc.pid] = -1 if rank is None else rank
            rank, hwm = self._ranks[proc.pid], _proc_field(proc.pid, "status", "VmHWM:")
            self.process_peak = max(self.process_peak, hwm)
            if rank >= 0:
                self.rank_peak[rank] = max(self.rank_peak.get(rank, 0), hwm)
                try:
                    cpu = proc.cpu_times()
                except psutil.Error:
                    continue
                self.rank_cpu.setdefault(rank, []).append((time.time(), cpu.user + cpu.system))
        self.tree_peak = max(self.tree_peak, total)

    def run(self) -> None:
        while not self._done.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        self._done.set()
        self.join()


def run_stage(
    name: str, cmd: list[str], log: Path, env: dict[str, str], cwd: Path, interval: float = 0.5
) -> StageRun:
    """Run ``cmd`` with stdout and stderr in ``log``; raises StageFailed (with the log's tail)
    when it exits non-zero."""
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        sampler = TreeSampler(proc.pid, interval)
        sampler.start()
        code = proc.wait()
        sampler.stop()
    wall = time.perf_counter() - start
    if code != 0:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-30:])
        raise StageFailed(f"{name} exited {code}; last lines of {log}:\n{tail}")
    return StageRun(
        name,
        wall,
        sampler.tree_peak,
        sampler.process_peak,
        dict(sorted(sampler.rank_peak.items())),
        sampler.rank_cpu,
    )


def dir_bytes(path: Path) -> int:
    """Bytes of the regular files under ``path`` (what a stage wrote)."""
    if path.is_file():
        return path.stat().st_size
    return sum(
        os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files
    )
