"""finetune stage. Launch with DeepSpeed (any number of ranks) or plain python (1 rank):

    deepspeed --num_gpus 2 --no_local_rank launchers/finetune.py data.dir=<prepared dir> run.dir=<dir> ...

CPU: prefix DS_ACCELERATOR=cpu. Overrides use Hydra syntax; see configs/finetune.yaml.
"""

import hydra

from cllm4rec_dist.config import register
from cllm4rec_dist.train.entry import run_stage

register()


@hydra.main(config_path="../configs", config_name="finetune", version_base="1.3")
def main(cfg) -> None:
    run_stage(cfg)


if __name__ == "__main__":
    main()
