"""Workaround wrapper: run a launcher with the process group created as ``cpu:gloo,cuda:nccl``.

    python -m deepspeed.launcher.runner ... bench/gpu/mixed_backend.py launchers/finetune.py ...

DeepSpeed alone creates an NCCL-only group, on which the trainer's all-reduces of small CPU
tensors (loss statistics, metric sums) fail with "No backend type associated with device type
cpu". ``distributed/env.py`` now makes the mixed group itself on CUDA; should the real launcher
still fail that way, the GPU check says so and reruns through this wrapper, so that the run
still yields its figures: DeepSpeed adopts a group that already exists.
"""

from __future__ import annotations

import os
import runpy
import sys

import torch
import torch.distributed as dist

if __name__ == "__main__":
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="cpu:gloo,cuda:nccl")
    else:  # lets the wrapper itself be tried on a CPU machine
        dist.init_process_group(backend="gloo")
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")
