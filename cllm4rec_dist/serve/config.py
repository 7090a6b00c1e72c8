"""Typed schema of ``launchers/serve.py`` (registered in the ConfigStore as ``serve_schema``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


class ServeBackend(StrEnum):
    local = "local"  # uvicorn in this process, a micro-batcher (serve/local.py)
    ray = "ray"  # Ray Serve: replicas, or a deployment on an existing Ray cluster (serve/app.py)


@dataclass
class ServeOptions:
    backend: ServeBackend = ServeBackend.local
    host: str = "127.0.0.1"  # loopback by default: expose it on purpose (0.0.0.0)
    port: int = 8000
    replicas: int = 1  # backend=ray: each replica holds the whole model (tables, backbone)
    cpus_per_replica: float = 1.0  # backend=ray
    # Dynamic batching (the micro-batcher, or Ray's @serve.batch): requests arriving within the
    # wait share one top-K pass over the items, which is what bounds a request's cost at 1M items.
    max_batch_size: int = 32
    batch_wait_timeout_s: float = 0.002
    # backend=ray: requests a replica holds at once (Ray Serve's max_ongoing_requests, whose
    # default of 5 would cap every batch at 5): null = 2 x max_batch_size, one batch computing
    # while the next one fills.
    max_ongoing_requests: int | None = None
    # recommend's two-pass top-K over a bf16 copy of the item head (api/recommender.py): null =
    # where bf16 products run in hardware (AVX512-BF16); the ranking is the fp32 kernel's.
    prefilter: bool | None = None
    max_body_bytes: int = 1_000_000  # larger request bodies get 413
    max_queries: int = 1000  # users / histories / items in one request (422 above)
    max_k: int = 1000


@dataclass
class RayOptions:
    # backend=ray only. null: start a local Ray; "auto" or host:port joins a cluster
    address: str | None = None
    num_cpus: int | None = None  # a local Ray's CPUs (null: the machine's)


@dataclass
class ServeConfig:
    """``launchers/serve.py``: answer HTTP JSON with the recommendations of an export."""

    init_from: str = MISSING  # an export directory (<run>/best, <run>/export, save_pretrained)
    serve: ServeOptions = field(default_factory=ServeOptions)
    ray: RayOptions = field(default_factory=RayOptions)


def register_serve() -> None:
    ConfigStore.instance().store(name="serve_schema", node=ServeConfig)


__all__ = ["RayOptions", "ServeBackend", "ServeConfig", "ServeOptions", "register_serve"]
