"""The data-prep command (``launchers/prepare.py``; docs/data_prep.md):

    python launchers/prepare.py source=<name> [source.path=...] output_dir=<dir> [key=value ...]
    python launchers/prepare.py --validate <dir>

The first form is a Hydra app (configs/data_prep/config.yaml) behind the shared front door
(``cllm4rec_dist/cli/app.py``); the second re-checks a prepared directory against its manifest
and exits 1 listing every problem.

A user error (a bad config value, a missing or unreadable input file, an input with no
interaction left, an output_dir holding files prepare did not write) prints one line naming the
file, line or key and exits 2; set ``CLLM4REC_DEBUG=1`` to see the traceback instead.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from cllm4rec_dist.cli.app import CONFIGS, run_app
from cllm4rec_dist.cli.errors import USER_ERROR_EXIT, reported

_CONFIGS = CONFIGS / "data_prep"


def prepare(cfg) -> None:
    """The Hydra task: ``run_prepare``; a user error is one line, exit 2."""
    from omegaconf.errors import OmegaConfBaseException

    from data_prep.pipeline.runner import run_prepare

    try:
        with reported(ValueError, OSError, OmegaConfBaseException):
            run_prepare(cfg)
    except SystemExit:
        _remove_if_empty(cfg)
        raise


def _remove_if_empty(cfg) -> None:
    """Hydra creates output_dir before the checks run; a run that failed them leaves none."""
    from omegaconf.errors import OmegaConfBaseException

    with contextlib.suppress(OSError, OmegaConfBaseException):
        Path(cfg.output_dir).expanduser().rmdir()  # only if empty


def validate_command(directory: str) -> int:
    """Print the problems of ``directory`` (or OK); return the process exit status."""
    from data_prep.pipeline.validate import validate_dir

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
            sys.exit(USER_ERROR_EXIT)
        sys.exit(validate_command(sys.argv[2]))
    run_app(
        _CONFIGS,
        "config",
        task="data_prep.cli:prepare",
        schema="data_prep.config:register_configs",
        loading="Ray and the data-prep pipeline",
        version_base=None,
    )
