"""Process-group facts the trainer needs, valid with or without torch.distributed initialised."""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_dist() else 0


def world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def init_distributed() -> None:
    """Join the process group the launcher describes (deepspeed, torchrun or srun env vars).

    Single-process runs (no WORLD_SIZE in the environment) stay un-initialised.
    """
    if is_dist():
        return
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        # One process: a DeepSpeed engine (trainable backbone) still creates a process group,
        # and without these variables deepspeed.initialize goes looking for MPI.
        for key, value in (
            ("RANK", "0"),
            ("LOCAL_RANK", "0"),
            ("WORLD_SIZE", "1"),
            ("MASTER_ADDR", "127.0.0.1"),
        ):
            os.environ.setdefault(key, value)
        if "MASTER_PORT" not in os.environ:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                os.environ["MASTER_PORT"] = str(s.getsockname()[1])
        return
    import deepspeed

    deepspeed.init_distributed(verbose=False)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if is_dist():
        dist.all_reduce(t)
    return t


def any_rank(flag: bool) -> bool:
    """True on every rank if ``flag`` is true on any rank (so all ranks take the same branch)."""
    t = torch.tensor([1.0 if flag else 0.0])
    return bool(all_reduce_sum(t).item() > 0)


def barrier() -> None:
    if is_dist():
        dist.barrier()


def device() -> torch.device:
    """This rank's compute device: its GPU when CUDA is present, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")
