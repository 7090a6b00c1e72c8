"""evaluate stage: ``launchers/train.py --config-name evaluate`` (see there; configs/evaluate.yaml):

    deepspeed --num_gpus 2 --no_local_rank launchers/evaluate.py data.dir=<prepared dir> run.dir=<dir> ...

CPU: prefix DS_ACCELERATOR=cpu. Overrides use Hydra syntax.
"""

import runpy
import sys
from pathlib import Path

if __name__ == "__main__":
    sys.argv[1:1] = ["--config-name", "evaluate"]
    runpy.run_path(str(Path(__file__).with_name("train.py")), run_name="__main__")
