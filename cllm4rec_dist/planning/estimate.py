"""The planner's estimate: a composed plan config (training config + ``plan``) to a ``Plan``,
the world layout, the per-rank memory (planning/memory.py) and step time (planning/steptime.py)
of the stage's phases sized as the trainer sizes them. Calibration constants come from
``calibration.yaml`` beside this module, where each sits with the runs that measured it.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from omegaconf import OmegaConf

from cllm4rec_dist.config import ConfigError, TrainConfig, validate
from cllm4rec_dist.data.phases import Phase as TrainPhase
from cllm4rec_dist.data.phases import PhasePass, plan_pass, stage_phases
from cllm4rec_dist.model.options import ModelSource
from cllm4rec_dist.model.sampling import resolve_kind
from cllm4rec_dist.planning.backbone import backbone_shape
from cllm4rec_dist.planning.memory import (
    DS_MAX_LIVE_PARAMETERS,
    DS_REDUCE_BUCKET_SIZE,
    GiB,
    Phase,
    RunShape,
    estimate,
    shard,
)
from cllm4rec_dist.planning.render import (
    launch_commands,
    render_json,
    render_text,
    training_overrides,
)
from cllm4rec_dist.planning.schema import OutputFormat, Plan, PlanConfig, PlanRoot
from cllm4rec_dist.planning.steptime import Hardware, StepPhase, step_time

CALIBRATION = Path(__file__).with_name("calibration.yaml")
RATE_KEYS = ("matmul_gflops", "elementwise_gops", "network_gbytes", "step_overhead_s")


@cache
def calibration() -> dict[str, Any]:
    """``calibration.yaml``: {"overhead_gib": {device: GiB}, "rates": {device: {key: value}},
    "serving_files": {key: bytes}}, the values without the runs that set them."""
    raw = yaml.safe_load(CALIBRATION.read_text())
    return {
        "serving_files": {
            k: float(raw["serving_files"][k]["value"])
            for k in ("fixed_bytes", "bytes_per_user", "bytes_per_seen_item")
        },
        "overhead_gib": {d: float(e["value"]) for d, e in raw["overhead_gib"].items()},
        "rates": {
            d: {k: float(rates[k]["value"]) for k in RATE_KEYS} for d, rates in raw["rates"].items()
        },
    }


def phase_batch(cfg: TrainConfig, phase: TrainPhase, users: int, world_size: int) -> PhasePass:
    """A phase's per-rank batch and steps per epoch as the trainer sizes them from the catalog
    (data/phases.plan_pass). The content corpus is not counted here: its configured batch,
    0 steps."""
    if phase.corpus == "content":
        return PhasePass(phase, phase.batch_size(cfg.data), 0)
    return plan_pass(phase, shard(users, world_size), cfg.data, cfg.stage.max_steps_per_phase)


def phases(
    cfg: TrainConfig, prompt_tokens: int, users: int, world_size: int
) -> tuple[tuple[Phase, ...], dict[str, int]]:
    """The phases the stage trains, as one rank's step sees them, and their longest sequence."""
    d = cfg.data
    out, seq = [], {}
    for phase in stage_phases(cfg.stage):
        b = phase_batch(cfg, phase, users, world_size).batch_size
        seq[phase.name] = phase.max_length(d, prompt_tokens)
        tokens, main = b * seq[phase.name], b * int(getattr(d, phase.main_length_key))
        tokens *= phase.backbone  # a phase that bypasses the backbone keeps no activations
        if phase.head == "items":
            out.append(Phase(phase.name, tokens, scored_rows=main))
        elif phase.head == "words":
            out.append(Phase(phase.name, tokens, word_logits=main))
        else:
            out.append(Phase(phase.name, tokens, scored_rows=b))
    return tuple(out), seq


def _zero_key(cfg: TrainConfig, key: str, default: int) -> int:
    extra = (
        OmegaConf.to_container(cfg.deepspeed.extra, resolve=True)
        if not isinstance(cfg.deepspeed.extra, dict)
        else cfg.deepspeed.extra
    )
    return int((extra or {}).get("zero_optimization", {}).get(key, default))


class Counts(NamedTuple):
    """What the plan needs of the catalog (plan.* or the manifest under data.dir)."""

    users: int
    items: int
    vocab: int | None  # the tiny backbone's tokenizer vocabulary
    mean_items: float  # mean train items per user
    seen_items: int  # item ids of the serving files (train + val interactions)


def _counts(cfg: PlanRoot) -> Counts:
    """The catalog's counts from plan.* or the manifest under data.dir (read once). Without a
    manifest the seen ids are the train interactions, ``mean x users``."""
    p = cfg.plan
    users, items, vocab, mean = p.num_users, p.num_items, p.vocab_size, p.mean_items
    seen = None
    need_vocab = cfg.model.source == ModelSource.tiny and vocab is None
    if users is None or items is None or need_vocab:
        from cllm4rec_dist.data.manifest import load_manifest

        manifest = load_manifest(cfg.data.dir)
        users = manifest.num_users if users is None else users
        items = manifest.num_items if items is None else items
        inter = manifest.counts.interactions
        seen = inter.get("train", 0) + inter.get("val", 0)
        if mean is None and manifest.num_users:
            mean = inter.get("train", 0) / manifest.num_users
        if need_vocab and manifest.tokenizer is not None:
            from tokenizers import Tokenizer
            from transformers import PreTrainedTokenizerFast

            words = manifest.tokenizer_json()
            vocab = len(PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(words)))
    mean = float(cfg.data.max_items if mean is None else mean)
    seen = round(mean * users) if seen is None else seen
    return Counts(int(users), int(items), vocab, mean, int(seen))


def overhead_gib(plan_cfg: PlanConfig) -> float:
    if plan_cfg.overhead_gib is not None:
        return float(plan_cfg.overhead_gib)
    return calibration()["overhead_gib"][plan_cfg.device]


def check_plan(p: PlanConfig) -> None:
    """ConfigError naming the first plan.* key whose value cannot describe a cluster or catalog
    (non-finite values are refused by ``validate`` for every key; plan.device and plan.format
    are Enums that OmegaConf checks)."""
    positive = ("nodes", "gpus_per_node", "num_users", "num_items", "vocab_size",
                "device_memory_gib", "mean_items", *RATE_KEYS)  # fmt: skip
    for key in positive:
        value = getattr(p, key)
        if value is not None and value <= 0 and not (key == "step_overhead_s" and value == 0):
            raise ConfigError(f"invalid config `plan.{key}`: must be > 0, got {value}")
    for key in ("overhead_gib", "prompt_tokens"):
        if getattr(p, key) is not None and getattr(p, key) < 0:
            raise ConfigError(f"invalid config `plan.{key}`: must be >= 0, got {getattr(p, key)}")


def run_shape(cfg: PlanRoot) -> tuple[RunShape, dict[str, int], Counts]:
    """The numbers ``memory.estimate`` needs, from a composed plan config, and the catalog's
    counts they came from."""
    p = cfg.plan
    check_plan(p)
    counts = _counts(cfg)
    users, items, vocab, _, seen = counts
    serving = calibration()["serving_files"]
    shape = backbone_shape(cfg.model, vocab)
    world = p.nodes * p.gpus_per_node
    run_phases, seq = phases(cfg, p.prompt_tokens, users, world)
    run = RunShape(
        backbone=shape,
        dtype=cfg.model.dtype,
        zero_stage=int(cfg.deepspeed.zero_stage),
        world_size=world,
        num_users=users,
        num_items=items,
        phases=run_phases,
        gradient_checkpointing=bool(cfg.model.gradient_checkpointing),
        device=p.device,
        overhead_bytes=overhead_gib(p) * GiB,
        reduce_bucket_size=_zero_key(cfg, "reduce_bucket_size", DS_REDUCE_BUCKET_SIZE),
        max_live_parameters=_zero_key(cfg, "stage3_max_live_parameters", DS_MAX_LIVE_PARAMETERS),
        softmax=resolve_kind(cfg.softmax.kind, items, cfg.softmax.full_max_items),
        num_samples=cfg.softmax.num_samples,
        seen_items=seen,
        serving_fixed_bytes=serving["fixed_bytes"],
        serving_bytes_per_user=serving["bytes_per_user"],
        serving_bytes_per_seen=serving["bytes_per_seen_item"],
    )
    return run, seq, counts


def rates(p: PlanConfig) -> Hardware:
    d = calibration()["rates"][p.device]
    pick = lambda key: float(d[key] if getattr(p, key) is None else getattr(p, key))  # noqa: E731
    return Hardware(
        pick("matmul_gflops") * 1e9,
        pick("elementwise_gops") * 1e9,
        pick("network_gbytes") * 1e9,
        pick("step_overhead_s"),
    )


def step_phases(cfg: PlanRoot, users: int, mean_items: float) -> list[StepPhase]:
    """Each phase's average step on one rank. Unlike the memory estimate, which must hold for
    the longest documents (data.max_items), a step's time is an average: documents carry the
    mean train items per user, capped at data.max_items (recommendation: minus the dropped
    mask_fraction), the batch as the trainer sizes it (trainer.phases_for)."""
    d, p = cfg.data, cfg.plan
    w = p.nodes * p.gpus_per_node
    items = min(mean_items, float(d.max_items))
    out = []
    for phase in stage_phases(cfg.stage):
        run = phase_batch(cfg, phase, users, w)
        b, steps = run.batch_size, run.steps
        seq = phase.max_length(d, p.prompt_tokens)
        prompts = phase.prompt_blocks * p.prompt_tokens
        if phase.head == "items":
            fed = b * (prompts + items) * phase.backbone  # tokens through the backbone
            out.append(StepPhase(phase.name, b, fed, seq, b * items, steps))
        elif phase.head == "words":
            out.append(StepPhase(phase.name, b, b * seq, seq, 0, steps))
        else:
            fed = items * (1 - cfg.stage.mask_fraction)
            out.append(StepPhase(phase.name, b, b * (prompts + fed), seq, b, steps))
    return out


def make_plan(cfg: PlanRoot, overrides: list[str]) -> Plan:
    """Plan for a composed config; ``overrides`` are the training overrides to launch with.
    Raises ConfigError for values the trainer would reject."""
    validate(cfg)
    run, seq, counts = run_shape(cfg)
    p = cfg.plan
    mem = estimate(run, seq)
    shape = run.backbone
    hw = rates(p)
    steps = {
        ph.name: (
            step_time(
                ph,
                shape,
                run.dtype,
                run.world_size,
                run.head_items(ph.scored_rows),
                hw,
                run.zero_stage,
                run.sampled,
            ),
            ph,
        )
        for ph in step_phases(cfg, run.num_users, counts.mean_items)
    }
    backbone = {
        "source": cfg.model.source,
        "mode": cfg.model.mode,
        "dtype": run.dtype,
        "zero_stage": run.zero_stage,
        "params": shape.params,
        "trainable": shape.trainable,
        "hidden": shape.hidden,
        "layers": shape.layers,
        "vocab": shape.vocab,
        "gradient_checkpointing": run.gradient_checkpointing,
    }
    commands = launch_commands(
        str(p.launcher), overrides, p.nodes, p.gpus_per_node, p.device, p.partition, p.time
    )
    return Plan(
        run.world_size,
        p.nodes,
        p.gpus_per_node,
        run.num_users,
        run.num_items,
        backbone,
        mem,
        steps,
        commands,
        p.device_memory_gib,
        p.device,
        run.softmax,
        run.num_samples,
    )


def run_plan(cfg: PlanRoot) -> None:
    """``launchers/plan.py``: print the plan of a composed config (text or JSON); a bad value
    or a missing dataset is one line, exit 2."""
    from hydra.core.hydra_config import HydraConfig

    from cllm4rec_dist.cli.errors import reported
    from cllm4rec_dist.data.location import RemoteReadError
    from cllm4rec_dist.data.manifest import ManifestError

    with reported(ConfigError, ManifestError, FileNotFoundError, RemoteReadError):
        plan = make_plan(cfg, training_overrides(list(HydraConfig.get().overrides.task)))
    print(render_json(plan) if cfg.plan.format == OutputFormat.json else render_text(plan))


__all__ = [
    "calibration",
    "check_plan",
    "make_plan",
    "overhead_gib",
    "phases",
    "rates",
    "run_plan",
    "run_shape",
    "step_phases",
]
