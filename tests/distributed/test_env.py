"""distributed/env.init_distributed: which process group a launch gets.

On CUDA the group must carry CPU tensors too (the trainer and evaluation all-reduce small host
tensors), so it is made as ``cpu:gloo,cuda:nccl`` before DeepSpeed, which adopts it. The CUDA
calls are recorded rather than made: this checks the wiring on a CPU machine; the GPU check
(bench/gpu/) runs the real thing.
"""

from __future__ import annotations

import types

import pytest
import torch
import torch.distributed as dist

from cllm4rec_dist.distributed import env


@pytest.fixture
def recorded(monkeypatch):
    calls: list[tuple[str, object]] = []
    monkeypatch.setattr(env, "is_dist", lambda: False)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(("set_device", d)))
    monkeypatch.setattr(
        dist, "init_process_group", lambda backend: calls.append(("process_group", backend))
    )
    fake_ds = types.SimpleNamespace(
        init_distributed=lambda verbose: calls.append(("deepspeed", None))
    )
    monkeypatch.setattr(env, "import_deepspeed", lambda: fake_ds)
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    return calls


@pytest.mark.parametrize("world", ["1", "2"])
def test_cuda_gets_a_group_for_cpu_and_cuda_tensors(recorded, monkeypatch, world):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("WORLD_SIZE", world)
    monkeypatch.setenv("LOCAL_RANK", "1" if world == "2" else "0")
    env.init_distributed()
    expected = [("set_device", int(world) - 1), ("process_group", "cpu:gloo,cuda:nccl")]
    if world == "2":
        expected.append(("deepspeed", None))  # after the group exists: DeepSpeed adopts it
    assert recorded == expected


def test_cpu_single_process_stays_without_a_group(recorded, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    env.init_distributed()
    assert recorded == []
    assert env.world() == (0, 1)


def test_cpu_ranks_join_through_deepspeed(recorded, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    env.init_distributed()
    assert recorded == [("deepspeed", None)]


def test_deepspeed_comes_without_its_shm_allreduce():
    """The kernel is JIT-compiled under a lock file that a killed compile leaves behind (every
    later launch then hangs) and leaks a /dev/shm segment per rank; the backend must not build it."""
    deepspeed = env.import_deepspeed()
    from deepspeed.comm.torch import build_shm_op

    assert build_shm_op() is None
    assert deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] is False
