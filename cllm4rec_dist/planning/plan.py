"""Dry-run planner: the world layout, a per-rank memory estimate and the launch commands of a
training config, before anything is allocated.

The config is the training config of ``launchers/<stage>.py`` (same groups, same overrides) plus a
``plan`` section (``PlanConfig``) describing the cluster. ``launchers/plan.py`` prints it.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import asdict, dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from cllm4rec_dist.config import ConfigError, StageName, TrainConfig, validate
from cllm4rec_dist.data.phases import Phase as TrainPhase
from cllm4rec_dist.data.phases import PhasePass, plan_pass, stage_phases
from cllm4rec_dist.model.sampling import resolve_kind
from cllm4rec_dist.planning.backbone import backbone_shape
from cllm4rec_dist.planning.memory import (
    DS_MAX_LIVE_PARAMETERS,
    DS_REDUCE_BUCKET_SIZE,
    GiB,
    MemoryEstimate,
    Phase,
    RunShape,
    estimate,
    shard,
)
from cllm4rec_dist.planning.steptime import Hardware, StepEstimate, StepPhase, step_time

# Peak RSS of a trainer rank minus its modelled terms, for a model too small to matter
# (bench/measure_memory.py's `calibrate` case: 2 ranks, tiny backbone of 0.03 M parameters):
# Python, torch, DeepSpeed, transformers, Hydra, gloo. Two calibration runs gave 0.41-0.45 GiB per rank (torch 2.13 CPU,
# DeepSpeed 0.19.8, 2-core VM); the larger is used. Re-measure with
# `python bench/measure_memory.py --only calibrate`.
CPU_OVERHEAD_GIB = 0.45
# NOT measured in this project (no GPU was available): a planning margin for the CUDA context,
# NCCL buffers and caching-allocator fragmentation. Measure it on your GPUs (peak of
# `nvidia-smi` minus torch.cuda.max_memory_allocated) and pass plan.overhead_gib.
CUDA_OVERHEAD_GIB = 2.0
LAUNCHERS = (*StageName, "predict")
# Rates of the step-time model (planning/steptime.py) when plan.* does not give them. NOT measured
# on a GPU in this project: CUDA is an H100/H200-class guess (bf16 products at ~40 % of a 989
# TFLOP/s peak, element-wise at half of 4.8 TB/s over 8 bytes an element, 200 Gb/s InfiniBand per
# GPU). CPU is one torch thread of the 2-core development VM (bench/bench_e2e.py measures the
# first two in its run and passes them; docs/scale-out.md §10). step_overhead_s, the fixed cost
# of a step: on CPU calibrated as the measured CPU time per step minus the other terms at 100k
# users x 10k items (0.065 s collaborative, 0.051 s recommendation; bench_e2e, docs/scale-out.md
# §10), on CUDA assumed (kernel launches of ~1,000 operators), not measured.
DEFAULT_RATES = {
    "cuda": {
        "matmul_gflops": 400_000.0,
        "elementwise_gops": 300.0,
        "network_gbytes": 25.0,
        "step_overhead_s": 0.01,
    },
    "cpu": {
        "matmul_gflops": 40.0,
        "elementwise_gops": 0.5,
        "network_gbytes": 2.0,
        "step_overhead_s": 0.06,
    },
}


@dataclass
class PlanConfig:
    """The cluster to plan for; counts default to the prepared dataset under ``data.dir``."""

    nodes: int = 1
    gpus_per_node: int = 8  # ranks per node (GPUs; on CPU, processes)
    device: str = "cuda"  # cuda | cpu: how buffers and attention are allocated, which overhead
    device_memory_gib: float | None = 80.0  # per GPU (cuda), to say whether the estimate fits
    overhead_gib: float | None = None  # null: CPU_OVERHEAD_GIB / CUDA_OVERHEAD_GIB
    num_users: int | None = None  # null: the manifest's
    num_items: int | None = None
    vocab_size: int | None = None  # tiny backbone without a dataset: its tokenizer's size
    prompt_tokens: int = 16  # hard-prompt words + ID tokens around a document (upper bound)
    launcher: str = "${stage.name}"  # pretrain | finetune | evaluate | predict
    partition: str | None = None  # sbatch --partition in the printed command
    time: str | None = None  # sbatch --time
    format: str = "text"  # text | json
    # Step-time model rates per rank (null: DEFAULT_RATES of plan.device) and the mean train
    # items per user it assumes (null: the manifest's train interactions / users; without a
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
    device: str
    softmax: str = "full"  # the item losses' softmax, resolved from the catalog's size
    num_samples: int = 0  # popularity: candidates per step


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


def _counts(cfg: PlanRoot) -> tuple[int, int, int | None, float]:
    """(users, items, debug-tokenizer vocabulary, mean train items per user) from plan.* or the
    manifest under data.dir."""
    p = cfg.plan
    users, items, vocab, mean = p.num_users, p.num_items, p.vocab_size, p.mean_items
    need_vocab = cfg.model.source == "tiny" and vocab is None
    if users is None or items is None or need_vocab:
        from cllm4rec_dist.data.manifest import load_manifest

        manifest = load_manifest(cfg.data.dir)
        users = manifest.num_users if users is None else users
        items = manifest.num_items if items is None else items
        if mean is None and manifest.num_users:
            mean = manifest.counts.interactions.get("train", 0) / manifest.num_users
        if need_vocab and manifest.tokenizer_path is not None:
            from transformers import PreTrainedTokenizerFast

            vocab = len(PreTrainedTokenizerFast(tokenizer_file=str(manifest.tokenizer_path)))
    mean = float(cfg.data.max_items if mean is None else mean)
    return int(users), int(items), vocab, mean


def overhead_gib(plan_cfg: PlanConfig) -> float:
    if plan_cfg.overhead_gib is not None:
        return float(plan_cfg.overhead_gib)
    return CPU_OVERHEAD_GIB if plan_cfg.device == "cpu" else CUDA_OVERHEAD_GIB


def check_plan(p: PlanConfig) -> None:
    """ConfigError naming the first plan.* key whose value cannot describe a cluster or catalog
    (non-finite values are refused by ``validate`` for every key)."""
    positive = ("nodes", "gpus_per_node", "num_users", "num_items", "vocab_size",
                "device_memory_gib", "mean_items", *DEFAULT_RATES["cpu"])  # fmt: skip
    for key in positive:
        value = getattr(p, key)
        if value is not None and value <= 0 and not (key == "step_overhead_s" and value == 0):
            raise ConfigError(f"invalid config `plan.{key}`: must be > 0, got {value}")
    for key in ("overhead_gib", "prompt_tokens"):
        if getattr(p, key) is not None and getattr(p, key) < 0:
            raise ConfigError(f"invalid config `plan.{key}`: must be >= 0, got {getattr(p, key)}")
    if p.device not in ("cuda", "cpu"):
        raise ConfigError(f"invalid config `plan.device`: {p.device!r} is not cuda or cpu")
    if p.format not in ("text", "json"):
        raise ConfigError(f"invalid config `plan.format`: {p.format!r} is not text or json")


def run_shape(cfg: PlanRoot) -> tuple[RunShape, dict[str, int]]:
    """The numbers ``memory.estimate`` needs, from a composed plan config."""
    p = cfg.plan
    check_plan(p)
    users, items, vocab, _ = _counts(cfg)
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
    )
    return run, seq


def rates(p: PlanConfig) -> Hardware:
    d = DEFAULT_RATES[p.device]
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
            out.append(StepPhase(phase.name, b, b * (prompts + items), seq, b * items, steps))
        elif phase.head == "words":
            out.append(StepPhase(phase.name, b, b * seq, seq, 0, steps))
        else:
            fed = items * (1 - cfg.stage.mask_fraction)
            out.append(StepPhase(phase.name, b, b * (prompts + fed), seq, b, steps))
    return out


def launch_commands(
    launcher: str,
    overrides: list[str],
    nodes: int,
    ranks_per_node: int,
    device: str,
    partition: str | None = None,
    time: str | None = None,
) -> dict[str, str]:
    """The one-node ``deepspeed`` command and the cluster ``sbatch`` line for these overrides."""
    if launcher not in LAUNCHERS:
        raise ConfigError(
            f"invalid config `plan.launcher`: {launcher!r} is not one of {', '.join(LAUNCHERS)}"
        )
    args = " ".join(shlex.quote(o) for o in overrides)
    prefix = "DS_ACCELERATOR=cpu " if device == "cpu" else ""
    one_node = (
        f"{prefix}deepspeed --num_gpus {ranks_per_node} --no_local_rank "
        f"launchers/{launcher}.py {args}"
    ).rstrip()
    opts = [f"--nodes={nodes}", f"--ntasks-per-node={ranks_per_node}"]
    if device == "cuda":
        opts.append(f"--gpus-per-node={ranks_per_node}")
    if partition:
        opts.append(f"--partition={partition}")
    if time:
        opts.append(f"--time={time}")
    cluster = f"sbatch {' '.join(opts)} slurm/{launcher}.sbatch {args}".rstrip()
    return {"one_node": one_node, "cluster": cluster}


def make_plan(cfg: PlanRoot, overrides: list[str]) -> Plan:
    """Plan for a composed config; ``overrides`` are the training overrides to launch with.
    Raises ConfigError for values the trainer would reject."""
    validate(cfg)
    run, seq = run_shape(cfg)
    p = cfg.plan
    mem = estimate(run, seq)
    shape = run.backbone
    hw, (_, _, _, mean_items) = rates(p), _counts(cfg)
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
            ),
            ph,
        )
        for ph in step_phases(cfg, run.num_users, mean_items)
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


def _gib(n: float) -> str:
    return f"{n / GiB:9.2f}"


def describe_softmax(plan: Plan) -> str:
    extra = f", {plan.num_samples:,} candidates per step" if plan.softmax == "popularity" else ""
    return plan.softmax + extra


def render_text(plan: Plan) -> str:
    """The human-readable report."""
    m, bb, w = plan.memory, plan.backbone, plan.world_size
    unit = "GPU" if plan.device == "cuda" else "rank"
    lines = [
        f"world     {w} ranks = {plan.nodes} node(s) x {plan.ranks_per_node} {unit}s; data "
        f"parallel backbone, ID tables and item head row-partitioned {w} ways",
        f"backbone  {bb['source']} {bb['mode']} {bb['dtype']} ZeRO-{bb['zero_stage']}: "
        f"{bb['params']:,} params ({bb['trainable']:,} trainable), hidden {bb['hidden']}, "
        f"{bb['layers']} layers, vocab {bb['vocab']:,}"
        + (", activation checkpointing" if bb["gradient_checkpointing"] else ""),
        f"tables    {plan.num_users:,} users, {plan.num_items:,} items, dim {bb['hidden']}: "
        f"{shard(plan.num_users, w):,} user / {shard(plan.num_items, w):,} item rows per rank",
        f"softmax   {describe_softmax(plan)} (training's item losses; evaluation ranks every item)",
        "",
        f"per-rank {'device' if plan.device == 'cuda' else 'process'} memory (GiB)",
    ]

    def block(title: str, terms) -> None:
        lines.append(f"  {title}")
        for t in terms:
            lines.append(f"    {t.name:<44}{_gib(t.bytes)}  {t.note}".rstrip())

    block("static", m.static)
    for name in m.transient:
        block(
            f"step transient: {name}" + (" (largest)" if name == m.peak_phase else ""),
            m.transient[name],
        )
    lines.append(
        f"  {m.overhead.name:<46}{_gib(m.overhead.bytes)}  "
        f"{'calibrated (CPU)' if plan.device == 'cpu' else 'assumed, not measured'}"
    )
    total = m.training_peak()
    verdict = ""
    if plan.device == "cuda" and plan.device_memory_gib:
        fits = total <= plan.device_memory_gib * GiB
        verdict = f"  of {plan.device_memory_gib:g} GiB: " + ("fits" if fits else "DOES NOT FIT")
    lines.append(f"  {'training peak per rank':<46}{_gib(total)}{verdict}")
    if m.host_separate:
        block("building (host memory of each rank)", m.build)
        per_node = plan.ranks_per_node * sum(t.bytes for t in m.build)
        lines.append(
            f"  {'host memory per node while building':<46}{_gib(per_node)}  "
            f"{plan.ranks_per_node} ranks"
        )
        block("export at the end (host memory of rank 0)", m.export)
    else:
        block("building", m.build)
        block("export at the end (rank 0, on top of the static state)", m.export)
        lines.append(
            f"  {'process peak, rank 0 (build/train/export)':<46}{_gib(m.process_peak(0))}"
        )
        lines.append(f"  {'process peak, other ranks (build/train)':<46}{_gib(m.process_peak(1))}")
    lines += ["", "step time per rank (model: planning/steptime.py; lower bound, see there)"]
    for name, (est, ph) in plan.steps.items():
        per_epoch = f", {ph.steps_per_epoch:,} steps per epoch" if ph.steps_per_epoch else ""
        lines.append(f"  {name}: {est.seconds:.4f} s per step, batch {ph.documents}{per_epoch}")
        for t in est.terms:
            lines.append(f"    {t.name:<44}{t.bytes:9.4f}  {t.note}".rstrip())
    lines += [
        "",
        "launch",
        f"  one node:  {plan.commands['one_node']}",
        f"  cluster:   {plan.commands['cluster']}",
    ]
    return "\n".join(lines)


def render_json(plan: Plan) -> str:
    m = plan.memory
    out = {
        "world_size": plan.world_size,
        "nodes": plan.nodes,
        "ranks_per_node": plan.ranks_per_node,
        "num_users": plan.num_users,
        "num_items": plan.num_items,
        "backbone": plan.backbone,
        "softmax": plan.softmax,
        "softmax_description": describe_softmax(plan),
        "memory_bytes": {
            "static": [asdict(t) for t in m.static],
            "transient": {k: [asdict(t) for t in v] for k, v in m.transient.items()},
            "build": [asdict(t) for t in m.build],
            "export": [asdict(t) for t in m.export],
            "overhead": m.overhead.bytes,
            "peak_phase": m.peak_phase,
            "training_peak": m.training_peak(),
        },
        "step_time_s": {
            name: {
                "total": est.seconds,
                "batch": ph.documents,
                "steps_per_epoch": ph.steps_per_epoch,
                "scored_rows": ph.scored_rows,
                "head_items": est.head_items,
                **{t.name: t.bytes for t in est.terms},
            }
            for name, (est, ph) in plan.steps.items()
        },
        "commands": plan.commands,
    }
    build = sum(t.bytes for t in m.build)
    if m.host_separate:  # GPUs: building and the export use host memory
        out["host_bytes"] = {
            "build_per_rank": build,
            "build_per_node": plan.ranks_per_node * build,
            "export_rank0": sum(t.bytes for t in m.export),
        }
    else:  # one process holds everything
        out["process_peak_bytes"] = {"rank0": m.process_peak(0), "other_ranks": m.process_peak(1)}
    return json.dumps(out, indent=2)


def run_plan(cfg: PlanRoot) -> None:
    """``launchers/plan.py``: print the plan of a composed config (text or JSON); a bad value
    or a missing dataset is one line, exit 2."""
    from hydra.core.hydra_config import HydraConfig

    from cllm4rec_dist.cli.errors import reported
    from cllm4rec_dist.data.manifest import ManifestError

    with reported(ConfigError, ManifestError, FileNotFoundError):
        plan = make_plan(cfg, training_overrides(list(HydraConfig.get().overrides.task)))
    print(render_json(plan) if cfg.plan.format == "json" else render_text(plan))


def training_overrides(task_overrides: list[str]) -> list[str]:
    """Hydra task overrides minus the planner's own (``plan.*``)."""
    return [o for o in task_overrides if not o.lstrip("+~").startswith("plan.")]


__all__ = [
    "CPU_OVERHEAD_GIB",
    "CUDA_OVERHEAD_GIB",
    "Plan",
    "PlanConfig",
    "launch_commands",
    "make_plan",
    "phases",
    "register_plan",
    "render_json",
    "render_text",
    "rates",
    "run_plan",
    "run_shape",
    "step_phases",
    "training_overrides",
]
