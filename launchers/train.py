"""The training launcher, one for every stage: the root config ``--config-name`` picks
(configs/pretrain.yaml by default, finetune.yaml, evaluate.yaml). Launch with DeepSpeed (any
number of ranks) or plain python (1 rank):

    deepspeed --num_gpus 2 --no_local_rank launchers/train.py --config-name finetune \
        data.dir=<prepared dir> run.dir=<dir> stage.init_from=<pretraining run>/export ...

CPU: prefix DS_ACCELERATOR=cpu. Overrides use Hydra syntax. ``launchers/pretrain.py``,
``finetune.py`` and ``evaluate.py`` are this launcher with their config name.
"""

from cllm4rec_dist.cli.app import CONFIGS, run_app

if __name__ == "__main__":
    run_app(
        CONFIGS,
        "pretrain",
        task="cllm4rec_dist.train.entry:run_stage",
        schema="cllm4rec_dist.config:register",
        loading="torch, DeepSpeed and the model stack",
    )
