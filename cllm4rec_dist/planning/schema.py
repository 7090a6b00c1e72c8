"""The planner's schema: the ``plan`` section of ``launchers/plan.py``'s config (``PlanConfig``)
on top of the training config, and the ``Plan`` it produces (planning/estimate.py makes it,
planning/render.py prints it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from hydra.core.config_store import ConfigStore

from cllm4rec_dist.config import TrainConfig
from cllm4rec_dist.model.sampling import SoftmaxKind
from cllm4rec_dist.planning.memory import Device, MemoryEstimate
from cllm4rec_dist.planning.steptime import StepEstimate, StepPhase


class Launcher(StrEnum):
    """``plan.launcher``: which launcher the printed commands run."""

    pretrain = "pretrain"
    finetune = "finetune"
    evaluate = "evaluate"
    predict = "predict"


class OutputFormat(StrEnum):
    text = "text"
    json = "json"


@dataclass
class PlanConfig:
    """The cluster to plan for; counts default to the prepared dataset under ``data.dir``."""

    nodes: int = 1
    gpus_per_node: int = 8  # ranks per node (GPUs; on CPU, processes)
    device: Device = Device.cuda  # how buffers and attention are allocated, which overhead
    device_memory_gib: float | None = 80.0  # per GPU (cuda), to say whether the estimate fits
    overhead_gib: float | None = None  # null: calibration.yaml's overhead_gib of plan.device
    num_users: int | None = None  # null: the manifest's
    num_items: int | None = None
    vocab_size: int | None = None  # tiny backbone without a dataset: its tokenizer's size
    prompt_tokens: int = 16  # hard-prompt words + ID tokens around a document (upper bound)
    launcher: Launcher = "${stage.name}"  # type: ignore[assignment]  # the stage's launcher
    partition: str | None = None  # sbatch --partition in the printed command
    time: str | None = None  # sbatch --time
    format: OutputFormat = OutputFormat.text
    # Step-time model rates per rank (null: calibration.yaml's rates of plan.device) and the mean
    # train items per user it assumes (null: the manifest's train interactions / users; without a
    # manifest, data.max_items, an upper bound).
    matmul_gflops: float | None = None
    elementwise_gops: float | None = None
    network_gbytes: float | None = None
    step_overhead_s: float | None = None
    mean_items: float | None = None


@dataclass
class PlanRoot(TrainConfig):
    plan: PlanConfig = field(default_factory=PlanConfig)


def register_plan() -> None:
    ConfigStore.instance().store(name="plan_schema", node=PlanRoot)


@dataclass
class Plan:
    """What ``launchers/plan.py`` prints."""

    world_size: int
    nodes: int
    ranks_per_node: int
    num_users: int
    num_items: int
    backbone: dict[str, Any]
    memory: MemoryEstimate
    steps: dict[str, tuple[StepEstimate, StepPhase]]
    commands: dict[str, str]
    device_memory_gib: float | None
    device: Device
    softmax: SoftmaxKind = SoftmaxKind.full  # the item losses' softmax, from the catalog's size
    num_samples: int = 0  # popularity: candidates per step


__all__ = ["Launcher", "OutputFormat", "Plan", "PlanConfig", "PlanRoot", "register_plan"]
