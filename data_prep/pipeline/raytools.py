"""Ray session handling and task fan-out with back-pressure, progress bars and fail-fast errors."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import ray
from tqdm import tqdm

from data_prep.config import RayConfig

log = logging.getLogger(__name__)


TEMP_PREFIX = "ray-prep-"
PID_FILE = "prep.pid"
_CLUSTER_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@contextlib.contextmanager
def loopback_only() -> Iterator[None]:
    """Make a local Ray started inside bind every server to 127.0.0.1.

    On Linux Ray turns a node address of 127.0.0.1 into the machine's external address (its
    ``ENABLE_RAY_CLUSTER`` switch, read from ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER``), and its GCS,
    raylet and worker gRPC servers then listen on every interface. Turning the switch off keeps
    the loopback address, and the servers bind only to it (checked with ``ss -ltnp``).
    """
    from ray._private import ray_constants

    saved_flag, saved_env = ray_constants.ENABLE_RAY_CLUSTER, os.environ.get(_CLUSTER_ENV)
    ray_constants.ENABLE_RAY_CLUSTER = False
    os.environ[_CLUSTER_ENV] = "0"  # the same for Ray's worker processes
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        if saved_env is None:
            os.environ.pop(_CLUSTER_ENV, None)
        else:
            os.environ[_CLUSTER_ENV] = saved_env


def start_local_ray(num_cpus: int, temp_dir: str, object_store_memory: int | None = None) -> None:
    """``ray.init`` of a one-machine Ray that listens on 127.0.0.1 only, without dashboard."""
    with loopback_only():
        ray.init(
            num_cpus=num_cpus,
            include_dashboard=False,
            object_store_memory=object_store_memory,
            _temp_dir=temp_dir,
            _node_ip_address="127.0.0.1",
        )


def remove_stale_temp_dirs(parent: str | None = None) -> list[Path]:
    """Delete ``ray-prep-*`` session directories left by a prep whose process is gone (killed
    with -9: nothing ran its cleanup), and end the Ray processes still using them. A directory
    counts as stale only when its ``prep.pid`` names a process that no longer exists; returns
    the removed directories."""
    removed = []
    for folder in Path(parent or tempfile.gettempdir()).glob(TEMP_PREFIX + "*"):
        try:
            pid = int((folder / PID_FILE).read_text().strip())
        except (OSError, ValueError):
            continue  # not ours, or still being created
        if pid == os.getpid() or _alive(pid):
            continue
        ended = end_processes_using(folder)
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
        log.info("removed stale Ray temp dir %s of a killed prep (ended pids %s)", folder, ended)
    return removed


def end_processes_using(folder: Path, grace_s: float = 3.0) -> list[int]:
    """SIGTERM (then SIGKILL after ``grace_s``) this user's processes with a file open under
    ``folder``. Ray's raylet and GCS die with the driver that started them, but its dashboard
    and runtime-env agents outlive a driver killed with -9 (reparented to init, with their log
    files under the session directory still open); their command line is rewritten
    (``ray::DashboardAgent``), so open files are what identifies them."""
    root = str(folder.resolve()) + os.sep
    found = []
    for proc in psutil.process_iter(["pid", "uids"]):
        if proc.pid == os.getpid() or proc.info["uids"] is None:
            continue
        if proc.info["uids"].real != os.getuid():
            continue
        try:
            if any(f.path.startswith(root) for f in proc.open_files()):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    for proc in found:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()
    _, alive = psutil.wait_procs(found, timeout=grace_s)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    return [proc.pid for proc in found]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


@contextlib.contextmanager
def ray_session(cfg: RayConfig) -> Iterator[None]:
    """Use the running Ray if this process already has one, join ``cfg.address``, or start a local
    one with ``cfg.num_cpus`` CPUs on 127.0.0.1; shut down (and remove the temp dir) only what was
    started here.
    """
    if ray.is_initialized():
        yield
        return
    temp_dir = None
    if cfg.address:
        ray.init(address=cfg.address)
    else:
        # Ray's AF_UNIX socket paths must stay under ~107 bytes, so never nest the session
        # directory under a (possibly long) output path.
        if cfg.temp_dir is None:
            remove_stale_temp_dirs()
            temp_dir = tempfile.mkdtemp(prefix=TEMP_PREFIX)
            (Path(temp_dir) / PID_FILE).write_text(f"{os.getpid()}\n")
        start_local_ray(cfg.num_cpus, cfg.temp_dir or temp_dir, cfg.object_store_memory)
    try:
        yield
    finally:
        ray.shutdown()
        if temp_dir is not None:
            shutil.rmtree(temp_dir, ignore_errors=True)


def cluster_cpus() -> int:
    """CPUs Ray may schedule on (at least 1)."""
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def _get(ref: ray.ObjectRef) -> Any:
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as err:
        # Re-raise as the task's own exception type (ValueError, SchemaError, ...), traceback kept.
        raise err.as_instanceof_cause() from None


class TaskWindow:
    """Submit tasks with at most ``max_in_flight`` running; results come back in submission order.

    Bounds the driver's memory when it feeds tasks from a stream (each pending task holds its
    arguments in the object store).
    """

    def __init__(self, max_in_flight: int, bar: tqdm | None = None, fail_fast: bool = True):
        self.max_in_flight = max_in_flight
        self.bar = bar
        # fail_fast: the first error cancels the rest; otherwise every task runs to its end
        # (finished work is kept, e.g. shards a rerun can skip) and the first error is raised then.
        self.fail_fast = fail_fast
        self._pending: list[tuple[int, ray.ObjectRef]] = []
        self._results: dict[int, Any] = {}
        self._error: BaseException | None = None
        self._next = 0

    def submit(self, ref: ray.ObjectRef) -> None:
        """Add a submitted task; blocks while ``max_in_flight`` tasks are unfinished."""
        self._pending.append((self._next, ref))
        self._next += 1
        while len(self._pending) >= self.max_in_flight:
            self._collect_one()

    def _collect_one(self) -> None:
        ready, _ = ray.wait([ref for _, ref in self._pending], num_returns=1)
        for i, (seq, ref) in enumerate(self._pending):
            if ref == ready[0]:
                del self._pending[i]
                try:
                    self._results[seq] = _get(ref)
                except BaseException as err:
                    if self.fail_fast:
                        self.cancel()
                        raise
                    self._error = self._error or err
                if self.bar is not None:
                    self.bar.update(1)
                return

    def cancel(self) -> None:
        for _, ref in self._pending:
            ray.cancel(ref)
        self._pending.clear()

    def results(self) -> list[Any]:
        """Wait for everything submitted; results in submission order."""
        while self._pending:
            self._collect_one()
        if self._error is not None:
            raise self._error
        return [self._results[i] for i in range(self._next)]


def run_all(
    refs: list[ray.ObjectRef], desc: str, progress: bool, fail_fast: bool = True
) -> list[Any]:
    """Wait for ``refs`` (already submitted) with a progress bar; results in order.

    fail_fast: the first failure cancels the other tasks; else they all finish first.
    """
    with tqdm(total=len(refs), desc=desc, disable=not progress, unit="task") as bar:
        window = TaskWindow(max_in_flight=len(refs) + 1, bar=bar, fail_fast=fail_fast)
        for ref in refs:
            window.submit(ref)
        return window.results()
