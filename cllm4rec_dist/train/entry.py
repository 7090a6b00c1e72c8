"""What every launcher does: validate, join the process group, build, run, report."""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from cllm4rec_dist.config import ConfigError, TrainConfig, validate
from cllm4rec_dist.distributed import env

log = logging.getLogger("cllm4rec_dist")


def setup_logging() -> None:
    rank = env.launcher_rank()
    # torch 2.13 renamed some collectives that DeepSpeed still calls; one warning per call floods
    # the log without telling the user anything actionable.
    warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.distributed\.")
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s",
        force=True,
    )


def start(cfg: TrainConfig) -> None:
    """Validate before any work, then join the process group."""
    setup_logging()
    try:
        validate(cfg)
    except ConfigError as err:
        log.error("%s", err)
        sys.exit(2)
    env.init_distributed()


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors caused by the user's input (a file, a dataset, an export, a checkpoint): printed as
    one line naming the culprit, exit 2; ``CLLM4REC_DEBUG=1`` re-raises for the traceback."""
    from cllm4rec_dist.data.id_maps import IdFileError
    from cllm4rec_dist.data.manifest import ManifestError
    from cllm4rec_dist.data.samples import ShardError
    from cllm4rec_dist.distributed.table_checkpoint import TableCheckpointError
    from cllm4rec_dist.train.checkpoint import CheckpointError
    from cllm4rec_dist.train.export import ExportMismatchError
    from cllm4rec_dist.train.state import TrainerStateError

    return (
        FileNotFoundError,
        IdFileError,
        ManifestError,
        ShardError,
        TableCheckpointError,
        CheckpointError,
        ExportMismatchError,
        TrainerStateError,
    )


def fail_on_user_error(
    fn: Any, cfg: TrainConfig, extra: tuple[type[BaseException], ...] = ()
) -> Any:
    """``fn(cfg)``, a user error (``user_errors()`` or ``extra``) printed as one line, exit 2."""
    try:
        return fn(cfg)
    except (*user_errors(), *extra) as err:
        if os.environ.get("CLLM4REC_DEBUG"):
            raise
        log.error("%s: %s (CLLM4REC_DEBUG=1 shows the traceback)", type(err).__name__, err)
        sys.exit(2)


def run_predict(cfg: TrainConfig) -> None:
    fail_on_user_error(_run_predict, cfg)


def run_stage(cfg: TrainConfig) -> dict[str, Any]:
    return fail_on_user_error(_run_stage, cfg)


def _run_predict(cfg: TrainConfig) -> None:
    """Write top-k recommendations of ``stage.init_from`` for every user (launchers/predict.py)."""
    start(cfg)
    if not cfg.stage.init_from:
        log.error("invalid config `stage.init_from`: predict needs an export directory")
        sys.exit(2)
    from cllm4rec_dist.eval.predict import predict
    from cllm4rec_dist.train.builder import build

    out = predict(build(cfg), cfg)
    if env.rank() == 0:
        print(f"predictions: {out / 'manifest.json'}")


def _run_stage(cfg: TrainConfig) -> dict[str, Any]:
    """Run one stage (pretrain / finetune / evaluate) described by a composed TrainConfig."""
    start(cfg)
    # Imported after the process group exists: builder pulls in DeepSpeed and the model stack.
    from cllm4rec_dist.train.builder import build
    from cllm4rec_dist.train.trainer import NothingToTrain, Trainer, TrainingDiverged

    run_dir = Path(cfg.run.dir)
    if env.rank() == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    env.barrier()
    built = build(cfg)
    try:
        result = Trainer(cfg, built).run()
    except TrainingDiverged as err:
        log.error("%s", err)
        sys.exit(3)
    except NothingToTrain as err:
        log.error("%s", err)
        sys.exit(2)
    if env.rank() == 0:
        shown = {k: v for k, v in result.items() if k != "losses"}
        print(json.dumps(shown, indent=2, default=float))
        if cfg.stage.epochs > 0:
            print(f"TensorBoard: tensorboard --logdir {run_dir / 'tensorboard'}")
    return result
