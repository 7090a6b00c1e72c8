"""What every launcher does: validate, join the process group, build, run, report."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from cllm4rec_dist.cli.console import metrics_grid, paths
from cllm4rec_dist.cli.errors import report as report_error
from cllm4rec_dist.cli.errors import reported
from cllm4rec_dist.cli.outputs import check_output_dir, claim_output_dir
from cllm4rec_dist.config import ConfigError, TrainConfig, validate
from cllm4rec_dist.data.phases import stage_epochs
from cllm4rec_dist.distributed import env

log = logging.getLogger("cllm4rec_dist")
# The explicit value of stage.init_from that trains from random tables (finetune refuses null).
NO_INIT = "none"


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
        report_error(err, traceback_hint=False)
    env.init_distributed()


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors caused by the user's input (a file, a dataset, an export, a checkpoint): printed as
    one line naming the culprit, exit 2; ``CLLM4REC_DEBUG=1`` re-raises for the traceback."""
    from cllm4rec_dist.data.id_maps import IdFileError
    from cllm4rec_dist.data.location import RemoteReadError
    from cllm4rec_dist.data.manifest import ManifestError
    from cllm4rec_dist.data.samples import ShardError
    from cllm4rec_dist.distributed.table_checkpoint import TableCheckpointError
    from cllm4rec_dist.export import ExportError
    from cllm4rec_dist.train.checkpoint import CheckpointError
    from cllm4rec_dist.train.state import TrainerStateError

    return (
        FileNotFoundError,
        ConfigError,
        IdFileError,
        ManifestError,
        RemoteReadError,
        ShardError,
        TableCheckpointError,
        CheckpointError,
        ExportError,
        TrainerStateError,
    )


def fail_on_user_error(
    fn: Any, cfg: TrainConfig, extra: tuple[type[BaseException], ...] = ()
) -> Any:
    """``fn(cfg)``, a user error (``user_errors()`` or ``extra``) printed as one line, exit 2."""
    with reported(*user_errors(), *extra):
        return fn(cfg)


def run_stage(cfg: TrainConfig) -> dict[str, Any]:
    return fail_on_user_error(_run_stage, cfg)


def init_export(cfg: TrainConfig, command: str) -> None:
    """Check ``stage.init_from`` for ``command``: predict and evaluate need an export;
    finetune needs one or ``none`` (then trains from random tables), which becomes null here."""
    if OmegaConf.is_missing(cfg.stage, "init_from"):
        cfg.stage.init_from = None
    init = cfg.stage.init_from
    if command in ("predict", "evaluate", "infer") and (not init or init.lower() == NO_INIT):
        raise ConfigError(
            f"invalid config `stage.init_from`: {command} needs an export directory "
            "(<run>/export or <run>/best)"
        )
    if command == "finetune" and not init:
        raise ConfigError(
            "invalid config `stage.init_from`: finetune starts from a pretraining export "
            "(stage.init_from=<pretraining run>/export); stage.init_from=none trains from "
            "random tables"
        )
    if init and init.lower() == NO_INIT:
        cfg.stage.init_from = None
    if command in ("predict", "evaluate", "infer"):
        check_scoring_settings(cfg, init)


# The model settings that change how a trained export turns a prompt into item scores
# (model/cllm4rec.py); a finetuning stage may change them, a command that only scores may not.
SCORING_KEYS = ("id_skip", "lm_scale", "rec_pool")


def check_scoring_settings(cfg: TrainConfig, export_dir: str) -> None:
    """ConfigError naming the key when ``cfg.model`` scores differently from how the export at
    ``export_dir`` was trained (its meta.json's model section; an absent key: the default)."""
    from cllm4rec_dist.config import ModelConfig
    from cllm4rec_dist.export import read_meta

    trained = read_meta(export_dir).model or {}
    for key in SCORING_KEYS:
        want = _plain(trained.get(key, getattr(ModelConfig, key)))
        got = _plain(getattr(cfg.model, key))
        if want != got:
            raise ConfigError(
                f"invalid config `model.{key}`: {got}, but the export {export_dir} was trained "
                f"with {want}; pass model.{key}={want} (or the model= it was trained with)"
            )


def _plain(value: Any) -> Any:
    """A config value as the export's JSON holds it (enums by name, numbers as float)."""
    value = getattr(value, "name", value)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


def legacy_run_dir(stage: str):
    """A run directory written before markers existed: its config.yaml is of this stage."""

    def check(path: Path) -> bool:
        try:
            saved = OmegaConf.load(path / "config.yaml")
        except (OSError, ValueError):
            return False
        return OmegaConf.select(saved, "stage.name") == stage

    return check


def prepare_run_dir(cfg: TrainConfig) -> Path:
    """Collective. Claim ``run.dir`` for this stage (refused when it holds anything else),
    check that resuming fits its checkpoints, set them aside when starting over, then record
    the config."""
    from cllm4rec_dist.export import is_training_export
    from cllm4rec_dist.train.checkpoint import check_resume_config, has_checkpoints, set_aside

    run_dir, stage = Path(cfg.run.dir), cfg.stage.name
    check_output_dir(run_dir, stage, legacy_run_dir(stage))
    for export in ("export", "best"):  # written at the end: refused now, not after training
        check_output_dir(run_dir / export, stage, is_training_export)
    if cfg.checkpoint.resume and has_checkpoints(run_dir):
        check_resume_config(run_dir, OmegaConf.to_container(cfg, resolve=True))
    env.barrier()
    if env.rank() == 0:
        claim_output_dir(run_dir, stage, legacy_run_dir(stage))
        if not cfg.checkpoint.resume and has_checkpoints(run_dir):
            moved = set_aside(run_dir)
            log.warning(
                "checkpoint.resume=false: starting over; earlier checkpoints kept in %s", moved
            )
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    env.barrier()
    return run_dir


def _run_stage(cfg: TrainConfig) -> dict[str, Any]:
    """Run one stage (pretrain / finetune / evaluate) described by a composed TrainConfig."""
    start(cfg)
    init_export(cfg, cfg.stage.name)
    # Imported after the process group exists: builder pulls in DeepSpeed and the model stack.
    from cllm4rec_dist.train.builder import build
    from cllm4rec_dist.train.trainer import NothingToTrain, Trainer, TrainingDiverged

    run_dir = prepare_run_dir(cfg)
    built = build(cfg)
    trainer = Trainer(cfg, built)
    try:
        result = trainer.run()
    except TrainingDiverged as err:
        report_error(err, code=3, traceback_hint=False)
    except NothingToTrain as err:
        report_error(err, traceback_hint=False)
    if env.rank() == 0:
        print(stage_summary(cfg, run_dir, result, trainer.state))
    return result


def stage_summary(cfg: TrainConfig, run_dir: Path, result: dict[str, Any], state: Any) -> str:
    """What a stage ends with on the terminal: steps, the metrics by split, the paths written."""
    stage = cfg.stage.name
    if result.get("stopped"):
        return (
            f"{stage}: stopped after step {result['global_step']} (run.max_steps); the same "
            f"command resumes it from {run_dir / 'checkpoints'}"
        )
    if stage_epochs(cfg.stage) > 0:
        head = f"{stage}: {state.epoch} epochs, {result['global_step']} steps"
    else:
        head = f"{stage}: {cfg.stage.init_from}"
    splits = {s: result[s] for s in ("val", "test") if s in result}
    best = [h for h in state.history if h.get("epoch") == state.best_epoch]
    if best and "val" not in splits:
        head += f"; best validation at epoch {state.best_epoch}"
        splits = {"val": {k: v for k, v in best[0].items() if k != "epoch"}, **splits}
    lines = [head]
    if splits:
        lines.append(metrics_grid(splits))
    written = {}
    for name in ("export", "best"):
        if stage_epochs(cfg.stage) > 0 and (run_dir / name).is_dir():
            written[name] = run_dir / name
    if (run_dir / "metrics.json").is_file() and splits:
        written["metrics"] = run_dir / "metrics.json"
    if stage_epochs(cfg.stage) > 0:
        written["TensorBoard"] = f"tensorboard --logdir {run_dir / 'tensorboard'}"
    lines.append(paths(written))
    return "\n".join(line for line in lines if line)


__all__ = [
    "NO_INIT",
    "fail_on_user_error",
    "init_export",
    "prepare_run_dir",
    "run_stage",
    "start",
    "user_errors",
]
