"""Rows for new users from their history (the recommendation loss, model frozen), written as
a new export:

    python launchers/fold_in.py data.dir=<prepared dir> stage.init_from=<run>/best \
        run.dir=<dir> [infer.users_file=new_users.parquet]  # columns user, item

Without infer.users_file the dataset's cold users (data prep split.cold_user_fraction) are
folded in from their train items.
"""

import hydra

from cllm4rec_dist.config import register
from cllm4rec_dist.infer.entry import run_fold_in

register()


@hydra.main(config_path="../configs", config_name="infer", version_base="1.3")
def main(cfg) -> None:
    run_fold_in(cfg)


if __name__ == "__main__":
    main()
