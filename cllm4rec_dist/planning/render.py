"""The planner's output: a ``Plan`` as text or JSON, and the launch commands it carries."""

from __future__ import annotations

import json
import shlex
from dataclasses import asdict

from cllm4rec_dist.model.sampling import SoftmaxKind
from cllm4rec_dist.planning.memory import Device, GiB, shard
from cllm4rec_dist.planning.schema import Launcher, Plan


def launch_commands(
    launcher: Launcher,
    overrides: list[str],
    nodes: int,
    ranks_per_node: int,
    device: Device,
    partition: str | None = None,
    time: str | None = None,
) -> dict[str, str]:
    """The one-node ``deepspeed`` command and the cluster ``sbatch`` line for these overrides."""
    launcher = Launcher(launcher)
    args = " ".join(shlex.quote(o) for o in overrides)
    prefix = "DS_ACCELERATOR=cpu " if device == Device.cpu else ""
    one_node = (
        f"{prefix}deepspeed --num_gpus {ranks_per_node} --no_local_rank "
        f"launchers/{launcher}.py {args}"
    ).rstrip()
    opts = [f"--nodes={nodes}", f"--ntasks-per-node={ranks_per_node}"]
    if device == Device.cuda:
        opts.append(f"--gpus-per-node={ranks_per_node}")
    if partition:
        opts.append(f"--partition={partition}")
    if time:
        opts.append(f"--time={time}")
    cluster = f"sbatch {' '.join(opts)} slurm/{launcher}.sbatch {args}".rstrip()
    return {"one_node": one_node, "cluster": cluster}


def _gib(n: float) -> str:
    return f"{n / GiB:9.2f}"


def describe_softmax(plan: Plan) -> str:
    extra = (
        f", {plan.num_samples:,} candidates per step"
        if plan.softmax == SoftmaxKind.popularity
        else ""
    )
    return plan.softmax + extra


def render_text(plan: Plan) -> str:
    """The human-readable report."""
    m, bb, w = plan.memory, plan.backbone, plan.world_size
    unit = "GPU" if plan.device == Device.cuda else "rank"
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
    if plan.device == Device.cuda and plan.device_memory_gib:
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


def training_overrides(task_overrides: list[str]) -> list[str]:
    """Hydra task overrides minus the planner's own (``plan.*``)."""
    return [o for o in task_overrides if not o.lstrip("+~").startswith("plan.")]


__all__ = [
    "describe_softmax",
    "launch_commands",
    "render_json",
    "render_text",
    "training_overrides",
]
