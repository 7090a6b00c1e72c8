"""Dry run of a training config on a cluster: world layout, per-rank memory, launch commands.

    python launchers/plan.py data.dir=<prepared dir> plan.nodes=2 plan.gpus_per_node=8 \
        experiment=llama_zero3_full

Takes the same groups and overrides as launchers/pretrain.py (stage=finetune plans finetuning)
plus plan.* (configs/plan.yaml); allocates nothing. docs/scale-out.md explains the estimate.
"""

import hydra
from hydra.core.hydra_config import HydraConfig

from cllm4rec_dist.planning.plan import (
    make_plan,
    register_plan,
    render_json,
    render_text,
    training_overrides,
)

register_plan()


@hydra.main(config_path="../configs", config_name="plan", version_base="1.3")
def main(cfg) -> None:
    overrides = training_overrides(list(HydraConfig.get().overrides.task))
    plan = make_plan(cfg, overrides)
    print(render_json(plan) if cfg.plan.format == "json" else render_text(plan))


if __name__ == "__main__":
    main()
