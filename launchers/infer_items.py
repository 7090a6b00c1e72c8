"""Rows for new items from their text (the content LM, model frozen), placed in the collaborative
scorer, written as a new export:

    python launchers/infer_items.py data.dir=<prepared dir> stage.init_from=<run>/best \
        run.dir=<dir> [infer.items_file=new_items.parquet]  # columns item, text

Without infer.items_file the dataset's cold items (data prep split.cold_item_fraction) are
inferred. Then predict with stage.init_from=<dir>/export predict.cold_items=include.
"""

import hydra

from cllm4rec_dist.config import register
from cllm4rec_dist.infer.entry import run_infer_items

register()


@hydra.main(config_path="../configs", config_name="infer", version_base="1.3")
def main(cfg) -> None:
    run_infer_items(cfg)


if __name__ == "__main__":
    main()
