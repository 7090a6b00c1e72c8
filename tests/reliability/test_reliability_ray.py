"""Local Ray listens on loopback only; temp dirs of a prep killed with -9 are removed later."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys

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
