"""The one source of rank, world size and device, valid with or without torch.distributed initialised.

Every layer asks here (the tables and collectives in ``distributed/``, the readers in ``data/``,
evaluation, the trainer); without a process group a job is rank 0 of 1.
"""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist

Group = dist.ProcessGroup | None


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank(group: Group = None) -> int:
    return dist.get_rank(group) if is_dist() else 0


def world_size(group: Group = None) -> int:
    return dist.get_world_size(group) if is_dist() else 1


def launcher_rank() -> int:
    """This process's global rank as the launcher set it (``RANK``; 0 when absent), readable
    before the process group exists (log set-up)."""
    return int(os.environ.get("RANK", "0"))


def world(group: Group = None) -> tuple[int, int]:
    """(rank, world_size) in ``group``; (0, 1) when no process group is initialised."""
    return rank(group), world_size(group)


def init_distributed() -> None:
    """Join the process group the launcher describes (deepspeed, torchrun or srun env vars).

    Single-process runs (no WORLD_SIZE in the environment) stay un-initialised on CPU. On CUDA
    the group is always made here, as ``cpu:gloo,cuda:nccl`` (see ``_init_cuda_group``).
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
        if torch.cuda.is_available():
            _init_cuda_group()
        return
    if torch.cuda.is_available():
        _init_cuda_group()
    import_deepspeed().init_distributed(verbose=False)  # adopts the group made above, if any


def import_deepspeed():
    """DeepSpeed, with its CPU shared-memory all-reduce switched off; every use goes through here.

    DeepSpeed's torch backend JIT-compiles that kernel on first use (``deepspeed_shm_comm``) and
    maps a 66 MB ``/dev/shm`` segment per rank that it never unlinks. Both break long-lived
    machines: a process killed mid-compile leaves torch's build ``lock`` file behind, and every
    later DeepSpeed process on that home directory then waits on it forever (no error, no
    output); and the segments fill ``/dev/shm``, which is RAM, by one per rank per run. The
    kernel only serves ``inference_all_reduce``, which this project never calls: training
    reduces through torch.distributed. DeepSpeed reads its op table on each backend start and
    keeps edits to it, so marking the op incompatible is enough.
    """
    import deepspeed
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    return deepspeed


def _init_cuda_group() -> None:
    """One group that carries CPU tensors over gloo and CUDA tensors over NCCL.

    DeepSpeed on CUDA makes an NCCL-only group, but the trainer, evaluation and prediction also
    all-reduce small CPU tensors (loss statistics, metric sums, host-side counts), which NCCL
    refuses ("No backend type associated with device type cpu"). DeepSpeed adopts a group that
    already exists, so making it here first is enough.
    """
    torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="cpu:gloo,cuda:nccl")


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if is_dist():
        dist.all_reduce(t)
    return t


def barrier() -> None:
    if is_dist():
        dist.barrier()


def device() -> torch.device:
    """This rank's compute device: its GPU when CUDA is present, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")
