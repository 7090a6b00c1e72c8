"""Local Ray listens on loopback only; what a prep killed with -9 leaves (Ray temp dirs, Ray
agent processes) is removed at the next start."""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from data_prep.pipeline.raytools import PID_FILE, remove_stale_temp_dirs


def test_local_ray_listens_on_loopback_only(ray_session):
    import ray

    @ray.remote
    def ping() -> int:
        return 1

    assert ray.get(ping.remote()) == 1  # a worker process exists and has its servers up
    procs = [psutil.Process(), *psutil.Process().children(recursive=True)]
    listening = []
    for proc in procs:
        try:
            conns = proc.net_connections(kind="inet")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        listening += [(proc.name(), c.laddr.ip) for c in conns if c.status == psutil.CONN_LISTEN]
    assert listening, "found no Ray listener to check"
    exposed = [
        (name, ip)
        for name, ip in listening
        if not ipaddress.ip_address(ip.removeprefix("::ffff:")).is_loopback
    ]
    assert not exposed, f"Ray servers listening beyond loopback: {exposed}"


def test_stale_temp_dirs_of_dead_preps_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    folders = {}
    for name, pid in (("dead", dead.pid), ("alive", os.getppid()), ("foreign", None)):
        folders[name] = tmp_path / f"ray-prep-{name}"
        folders[name].mkdir()
        if pid is not None:
            (folders[name] / PID_FILE).write_text(f"{pid}\n")
    assert remove_stale_temp_dirs(str(tmp_path)) == [folders["dead"]]
    assert not folders["dead"].exists()
    assert folders["alive"].exists() and folders["foreign"].exists()


_PREP_THAT_HANGS = """
import time
import ray
from data_prep.config import RayConfig
from data_prep.pipeline.raytools import ray_session
with ray_session(RayConfig(num_cpus=1)):
    ray.get(ray.remote(lambda: 1).remote())
    print("ready", flush=True)
    time.sleep(300)
"""


def _using(folder) -> list[psutil.Process]:
    root = str(folder) + os.sep
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.status() != psutil.STATUS_ZOMBIE and any(
                f.path.startswith(root) for f in proc.open_files()
            ):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_ray_processes_of_a_prep_killed_with_9_are_ended_at_the_next_start():
    # A short parent: Ray's socket paths under it must stay below ~107 bytes.
    parent = Path(tempfile.mkdtemp(prefix="rk", dir="/tmp"))
    env = {**os.environ, "TMPDIR": str(parent)}
    prep = subprocess.Popen(
        [sys.executable, "-c", _PREP_THAT_HANGS], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert prep.stdout.readline().strip() == "ready"
        (folder,) = parent.glob("ray-prep-*")
        prep.kill()
        prep.wait()
        time.sleep(2)
        # What kill -9 leaves: Ray's agents still running with files open in the session dir.
        left = _using(folder)
        assert left, "expected Ray agents to outlive the killed driver"
        assert remove_stale_temp_dirs(str(parent)) == [folder]
        assert not folder.exists()
        # (Processes already exiting when the cleanup looked, such as the raylet, get a moment.)
        deadline = time.monotonic() + 10
        while [p for p in left if _running(p)] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [p.pid for p in left if _running(p)]
    finally:
        prep.kill()
        shutil.rmtree(parent, ignore_errors=True)
