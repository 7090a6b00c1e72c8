"""The data-prep command (``launchers/prepare.py``; docs/data_prep.md):

    python launchers/prepare.py source=<name> [source.path=...] output_dir=<dir> [key=value ...]
    python launchers/prepare.py --validate <dir>

The first form is a Hydra app (configs/data_prep/config.yaml); the second re-checks a prepared
directory against its manifest and exits 1 listing every problem.

A user error (a bad config value, a missing or unreadable input file, an input with no
interaction left) prints one line naming the file, line or key and exits 2; set
``CLLM4REC_DEBUG=1`` to see the traceback instead.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from data_prep.config import register_configs
from data_prep.pipeline.runner import run_prepare
from data_prep.pipeline.validate import validate_dir

register_configs()


USER_ERROR_EXIT = 2


# Absolute: Hydra resolves a relative config_path against the calling module's package when the
# app is imported (as launchers/prepare.py does), not against this file.
_CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "data_prep"


@hydra.main(version_base=None, config_path=str(_CONFIGS), config_name="config")
def _prepare(cfg: DictConfig) -> None:
    try:
        run_prepare(cfg)
    except (ValueError, OSError, OmegaConfBaseException) as err:
        if os.environ.get("CLLM4REC_DEBUG"):
            raise
        _remove_if_empty(cfg)
        message = " ".join(str(err).split("\n"))
        print(f"prepare.py: error: {message}", file=sys.stderr)
        sys.exit(USER_ERROR_EXIT)


def _remove_if_empty(cfg: DictConfig) -> None:
    """Hydra creates output_dir before the checks run; a run that failed them leaves none."""
    with contextlib.suppress(OSError, OmegaConfBaseException):
        Path(cfg.output_dir).expanduser().rmdir()  # only if empty


def validate_command(directory: str) -> int:
    """Print the problems of ``directory`` (or OK); return the process exit status."""
    problems = validate_dir(Path(directory))
    if problems:
        print(f"{directory}: {len(problems)} problem(s)")
        for problem in problems:
            print(f"  - {problem}")
        return 1
    print(f"{directory}: OK (every shard, id map, split part and listed file matches the manifest)")
    return 0


def main() -> None:
    """Dispatch ``--validate DIR`` before Hydra sees argv; everything else is Hydra's."""
    if len(sys.argv) > 1 and sys.argv[1] == "--validate":
        if len(sys.argv) != 3:
            print("usage: python launchers/prepare.py --validate <dir>", file=sys.stderr)
            sys.exit(2)
        sys.exit(validate_command(sys.argv[2]))
    _prepare()
