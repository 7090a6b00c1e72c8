"""``launchers/serve.py``: answer until SIGTERM or Ctrl-C, then stop what this command started.
``serve.backend=local`` (the default) serves from this process (serve/local.py);
``serve.backend=ray`` starts (or joins) Ray and runs the deployment (serve/app.py), then stops
the application, and Serve and Ray when it started them (joined to a cluster, it removes only
its application and disconnects)."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import OmegaConf

from cllm4rec_dist.cli.errors import UserError, reported
from cllm4rec_dist.export import ExportError, read_assets, read_meta
from cllm4rec_dist.serve.config import ServeBackend

if TYPE_CHECKING:
    from cllm4rec_dist.serve.config import ServeConfig

APP = "cllm4rec"


def check(cfg: ServeConfig) -> None:
    """UserError naming the key or file before a server starts: the export must load its
    serving files, the sizes be positive, and replicas or a cluster ask for the Ray backend."""
    if OmegaConf.is_missing(cfg, "init_from"):
        raise UserError("invalid config `init_from`: serve needs an export (init_from=<run>/best)")
    s = cfg.serve
    for key in ("port", "replicas", "max_batch_size", "max_body_bytes", "max_queries", "max_k"):
        if getattr(s, key) < (0 if key == "port" else 1):
            raise UserError(f"invalid config `serve.{key}`: {getattr(s, key)}")
    if s.max_ongoing_requests is not None and s.max_ongoing_requests < 1:
        raise UserError(f"invalid config `serve.max_ongoing_requests`: {s.max_ongoing_requests}")
    if not 0 <= s.batch_wait_timeout_s <= 10 or s.cpus_per_replica <= 0:
        raise UserError("invalid config `serve.batch_wait_timeout_s` or `serve.cpus_per_replica`")
    if s.backend == ServeBackend.local and (s.replicas != 1 or cfg.ray.address is not None):
        raise UserError(
            "invalid config `serve.backend`: serve.replicas > 1 and ray.address need "
            "serve.backend=ray (local serves one replica from this process)"
        )
    if not Path(cfg.init_from).is_dir():
        raise UserError(f"init_from={cfg.init_from}: not an export directory")
    read_assets(cfg.init_from, read_meta(cfg.init_from))


def announce(cfg: ServeConfig, how: str) -> None:
    """The line that says the server is up, where, and how to stop it."""
    s = cfg.serve
    print(
        f"serving {cfg.init_from} on http://{s.host}:{s.port} ({how}): "
        "POST /recommend, POST /similar, GET /healthz; Ctrl-C stops",
        flush=True,
    )


def serve_local_forever(cfg: ServeConfig) -> None:
    """serve.backend=local: uvicorn in this process until SIGTERM or SIGINT."""
    from cllm4rec_dist.serve.local import serve_local

    announce(cfg, "one process")
    serve_local(cfg.init_from, OmegaConf.to_object(cfg.serve))
    print("stopped", flush=True)


def serve_forever(cfg: ServeConfig) -> None:
    """serve.backend=ray: run until SIGTERM or SIGINT, then stop what it started."""
    import ray
    from ray import serve

    from cllm4rec_dist.serve.app import RecommenderServer

    local = cfg.ray.address is None
    # Serve restarts a proxy that is not ready within 5 s, which on a busy machine is shorter
    # than its start (seen at a load of 6 on 2 cores); a local Ray's processes inherit these.
    for key, seconds in (("READY_CHECK", "60"), ("HEALTH_CHECK", "30")):
        os.environ.setdefault(f"RAY_SERVE_PROXY_{key}_TIMEOUT_S", seconds)
    if local:  # "local": a new Ray of its own, even when another runs on this machine
        ray.init(
            address="local", num_cpus=cfg.ray.num_cpus, include_dashboard=False,
            log_to_driver=False,
        )  # fmt: skip
    else:
        ray.init(address=cfg.ray.address, log_to_driver=False)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        s = cfg.serve
        try:
            serve.start(http_options={"host": s.host, "port": s.port})
        except TimeoutError as err:  # Serve waits a fixed 60 s for its proxy; it goes on starting
            print(f"warning: {err}; still starting (a busy machine?)", file=sys.stderr, flush=True)
        ongoing = s.max_ongoing_requests or 2 * s.max_batch_size
        app = RecommenderServer.options(
            num_replicas=s.replicas,
            max_ongoing_requests=ongoing,
            ray_actor_options={"num_cpus": s.cpus_per_replica},
        ).bind(str(Path(cfg.init_from).resolve()), OmegaConf.to_container(cfg.serve))
        serve.run(app, name=APP, route_prefix="/", blocking=False)
        announce(cfg, f"{s.replicas} replica(s)")
        stop.wait()
    finally:
        if local:
            serve.shutdown()
        else:
            serve.delete(APP)
        ray.shutdown()
        print("stopped", flush=True)


def run_serve(cfg: ServeConfig) -> None:
    with reported(ExportError, FileNotFoundError):
        check(cfg)
    if cfg.serve.backend == ServeBackend.local:
        serve_local_forever(cfg)
    else:
        serve_forever(cfg)


__all__ = ["check", "run_serve", "serve_forever", "serve_local_forever"]
