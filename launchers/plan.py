"""Dry run of a training config on a cluster: world layout, per-rank memory, launch commands.

    python launchers/plan.py data.dir=<prepared dir> plan.nodes=2 plan.gpus_per_node=8 \
        experiment=llama_zero3_full

Takes the same groups and overrides as launchers/pretrain.py (stage=finetune plans finetuning)
plus plan.* (configs/plan.yaml); allocates nothing. docs/scale-out.md explains the estimate.
"""

from cllm4rec_dist.cli.app import CONFIGS, run_app

if __name__ == "__main__":
    run_app(
        CONFIGS,
        "plan",
        task="cllm4rec_dist.planning.estimate:run_plan",
        schema="cllm4rec_dist.planning.schema:register_plan",
        loading="the planner (torch, the model configs)",
    )
