"""The benches' one timing and report harness.

Every bench times what it compares in interleaved rounds (each round runs every method once, so
a load that changes on a shared machine hits them all alike), states the machine and its load,
reports ours against the named peer measured in the same run as a ratio, and ends with one
machine-readable line (``final_line``: ``ratio 1.30`` or ``ratio 2.79 mfu 76.1%``), which the
bench tests parse. Run a bench from the repository root as a module: ``python -m bench.<name>``.
"""

from __future__ import annotations

import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from cllm4rec_dist.cli.errors import reported
from cllm4rec_dist.cli.outputs import check_output_dir, claim_output_dir
from cllm4rec_dist.distributed.spawn import free_port

CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


def fresh_work_dir(path: Path, bench: str) -> Path:
    """``path`` emptied and marked as ``bench``'s (cli/outputs.py, as every command's output
    directory), or one line and exit 2 when it holds anything ``bench`` did not write: a bench's
    ``--work`` must never delete a user's files."""
    with reported():
        check_output_dir(path, bench)
    if path.exists():
        shutil.rmtree(path)
    return claim_output_dir(path, bench)


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, ``0.52 0.61 0.70``."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def cpu_model() -> str:
    """The CPU's model name and widest SIMD (a matmul-bound ratio depends on both)."""
    try:
        with open("/proc/cpuinfo") as fh:
            info = fh.read().splitlines()
    except OSError:
        info = []
    model = next((ln.split(":", 1)[1].strip() for ln in info if ln.startswith("model name")), None)
    flags = next((ln for ln in info if ln.startswith("flags")), "")
    simd = "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else "other"
    return f"{model or platform.processor() or '?'} ({simd})"


def machine_line() -> str:
    """``cpu: <model> (<simd>), N cores; torch X, T threads; load average a b c``."""
    return (
        f"cpu: {cpu_model()}, {os.cpu_count()} cores; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; load average {load_average()}"
    )


def interleaved(
    fns: dict[str, Callable[[], object]],
    rounds: int,
    *,
    warmup: int = 1,
    clock: Callable[[], float] = time.perf_counter,
    sync: Callable[[], None] = lambda: None,
    self_timed: bool = False,
) -> dict[str, list[float]]:
    """Seconds of each function in each of ``rounds`` rounds, after ``warmup`` untimed rounds.
    A round runs every function once, in order. ``sync`` waits for queued device work (CUDA)
    before a clock is read; ``clock`` is wall time or this process's CPU time (all threads).
    ``self_timed``: each function returns its own seconds (a step that must leave its set-up
    out of the time)."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for round_ in range(warmup + rounds):
        for name, fn in fns.items():
            sync()
            start = clock()
            result = fn()
            sync()
            took = float(result) if self_timed else clock() - start
            if round_ >= warmup:
                times[name].append(took)
    return times


def best(times: dict[str, list[float]]) -> dict[str, float]:
    return {name: min(t) for name, t in times.items()}


def median(times: dict[str, list[float]]) -> dict[str, float]:
    return {name: statistics.median(t) for name, t in times.items()}


def peer_ratio(peer_seconds: float, ours_seconds: float) -> float:
    """How many times faster ours is than the peer (> 1: ours is faster)."""
    return peer_seconds / ours_seconds


def peak_rss_bytes() -> int:
    """This process's peak resident set size (Linux VmHWM; ru_maxrss elsewhere)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def final_line(**figures: float | str) -> str:
    """The last line a bench prints: ``key value`` pairs, floats with two decimals."""
    return " ".join(
        f"{key} {value:.2f}" if isinstance(value, float) else f"{key} {value}"
        for key, value in figures.items()
    )


@contextmanager
def serve_directory(directory: str | Path, timeout: float = 30) -> Iterator[str]:
    """A real HTTP peer (``python -m http.server`` on 127.0.0.1, a free port) serving
    ``directory``; yields its base URL and stops it on exit. The URL-reading benches and tests
    (tests/data/test_remote_data.py, tests/train/test_launcher.py) read datasets through it."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=directory,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(base + "/", timeout=5):
                    break
            except (urllib.error.URLError, ConnectionError) as err:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"http.server on port {port} did not start: {err}") from None
                time.sleep(0.1)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)


__all__ = [
    "CLOCKS",
    "best",
    "cpu_model",
    "final_line",
    "interleaved",
    "load_average",
    "machine_line",
    "median",
    "peak_rss_bytes",
    "peer_ratio",
    "serve_directory",
]
