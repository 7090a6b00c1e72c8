"""pretrain stage: ``launchers/train.py --config-name pretrain`` (see there; configs/pretrain.yaml):

    deepspeed --num_gpus 2 --no_local_rank launchers/pretrain.py data.dir=<prepared dir> run.dir=<dir> ...

CPU: prefix DS_ACCELERATOR=cpu. Overrides use Hydra syntax.
"""

import runpy
import sys
from pathlib import Path

if __name__ == "__main__":
    sys.argv[1:1] = ["--config-name", "pretrain"]
    runpy.run_path(str(Path(__file__).with_name("train.py")), run_name="__main__")
