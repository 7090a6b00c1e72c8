"""The training launcher, one for every stage: the root config ``--config-name`` picks
(configs/pretrain.yaml by default, finetune.yaml, evaluate.yaml). Launch with DeepSpeed (any
number of ranks) or plain python (1 rank):

    deepspeed --num_gpus 2 --no_local_rank launchers/train.py --config-name finetune \
        data.dir=<prepared dir> run.dir=<dir> stage.init_from=<pretraining run>/export ...

CPU: prefix DS_ACCELERATOR=cpu. Overrides use Hydra syntax. ``launchers/pretrain.py``,
``finetune.py`` and ``evaluate.py`` are this launcher with their config name.
"""

import hydra

from cllm4rec_dist.config import register
from cllm4rec_dist.train.entry import run_stage

register()


@hydra.main(config_path="../configs", config_name="pretrain", version_base="1.3")
def main(cfg) -> None:
    run_stage(cfg)


if __name__ == "__main__":
    main()
