"""Top-k recommendations of an exported model for every user, as Parquet (one part per rank):

    deepspeed --num_gpus N --no_local_rank launchers/predict.py data.dir=<prepared dir> \
        stage.init_from=<run>/best run.dir=<dir> predict.k=20 predict.split=test

Seen items are masked (train items, plus validation items with predict.split=test).
"""

import hydra

from cllm4rec_dist.config import register
from cllm4rec_dist.train.entry import run_predict

register()


@hydra.main(config_path="../configs", config_name="predict", version_base="1.3")
def main(cfg) -> None:
    run_predict(cfg)


if __name__ == "__main__":
    main()
