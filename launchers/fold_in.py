"""Rows for new users from their history (the recommendation loss, model frozen), written as
a new export:

    python launchers/fold_in.py data.dir=<prepared dir> stage.init_from=<run>/best \
        run.dir=<dir> [infer.users_file=new_users.parquet]  # columns user, item

Without infer.users_file the dataset's cold users (data prep split.cold_user_fraction) are
folded in from their train items.
"""

from cllm4rec_dist.cli.app import CONFIGS, run_app

if __name__ == "__main__":
    run_app(
        CONFIGS,
        "infer",
        task="cllm4rec_dist.infer.entry:run_fold_in",
        schema="cllm4rec_dist.config:register",
        loading="torch and the model stack",
    )
