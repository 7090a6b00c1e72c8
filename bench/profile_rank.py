"""Run a launcher under cProfile, one profile per rank, for the stage profiles in
docs/benchmarks.md:

    DS_ACCELERATOR=cpu deepspeed --num_gpus 2 --no_local_rank bench/profile_rank.py \
        launchers/evaluate.py data.dir=... stage.init_from=...

Each rank writes ``$PROFILE_DIR/rank<R>.prof`` (default: the current directory) and rank 0
prints its 25 costliest functions by own time and by cumulative time. Read a profile again with
``python -m pstats``.
"""

from __future__ import annotations

import cProfile
import os
import pstats
import runpy
import sys
from pathlib import Path


def main() -> None:
    launcher, *overrides = sys.argv[1:]
    rank = int(os.environ.get("RANK", "0"))
    out = Path(os.environ.get("PROFILE_DIR", ".")) / f"rank{rank}.prof"
    out.parent.mkdir(parents=True, exist_ok=True)
    sys.argv = [launcher, *overrides]
    profile = cProfile.Profile()
    try:
        profile.runcall(runpy.run_path, launcher, run_name="__main__")
    except SystemExit as done:
        if done.code not in (0, None):
            raise
    finally:
        profile.dump_stats(out)
    if rank == 0:
        stats = pstats.Stats(str(out))
        stats.sort_stats("tottime").print_stats(25)
        stats.sort_stats("cumulative").print_stats(25)


if __name__ == "__main__":
    main()
