"""pretrain stage: ``launchers/train.py --config-name pretrain`` (see there; configs/pretrain.yaml):

    deepspeed --num_gpus 2 --no_local_rank launchers/pretrain.py data.dir=<prepared dir> run.dir=<dir> ...

CPU: prefix DS_ACCELERATOR=cpu. Overrides use Hydra syntax.
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
