"""Rows for new items from their text (the content LM, model frozen), placed in the collaborative
scorer, written as a new export:

    python launchers/infer_items.py data.dir=<prepared dir> stage.init_from=<run>/best \
        run.dir=<dir> [infer.items_file=new_items.parquet]  # columns item, text

Without infer.items_file the dataset's cold items (data prep split.cold_item_fraction) are
inferred. Then predict with stage.init_from=<dir>/export predict.cold_items=include.
"""

from cllm4rec_dist.cli.app import CONFIGS, run_app

if __name__ == "__main__":
    run_app(
        CONFIGS,
        "infer",
        task="cllm4rec_dist.infer.entry:run_infer_items",
        schema="cllm4rec_dist.config:register",
        loading="torch and the model stack",
    )
