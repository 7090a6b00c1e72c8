"""Top-k recommendations of an exported model for every user, as Parquet (one part per rank):

    deepspeed --num_gpus N --no_local_rank launchers/predict.py data.dir=<prepared dir> \
        stage.init_from=<run>/best run.dir=<dir> predict.k=20 predict.split=test

Seen items are masked (train items, plus validation items with predict.split=test).
"""

from cllm4rec_dist.cli.app import CONFIGS, run_app

if __name__ == "__main__":
    run_app(
        CONFIGS,
        "predict",
        task="cllm4rec_dist.infer.entry:run_predict",
        schema="cllm4rec_dist.config:register",
        loading="torch, DeepSpeed and the model stack",
    )
