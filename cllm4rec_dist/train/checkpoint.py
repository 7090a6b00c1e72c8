"""Training checkpoints: backbone (DeepSpeed), partitioned tables (per-rank row files), trainer state.

Layout under ``<run.dir>/checkpoints/``::

    step00000120/
        backbone/ds/...           DeepSpeed engine checkpoint (absent when the backbone is frozen)
        tables/...                per-rank table rows + row-wise optimizer state (any world size)
        trainer_rank{r}.json      TrainerState + rank r's RNG states (JSON, see state.py)
        dataset.json              fingerprint of the dataset (Manifest.fingerprint), when given
        COMPLETE                  written last, after every rank finished writing
    latest                        name of the newest COMPLETE checkpoint (atomic rename)

A checkpoint without COMPLETE (a rank was killed while writing) is never resumed from.

Nothing here unpickles: the trainer state is JSON and the tables are safetensors. DeepSpeed's
engine files (``backbone/ds/*.pt``) are ``torch.save`` pickles, which DeepSpeed's own loader
opens with ``weights_only=False``; ``load_checkpoint`` replaces that loader on the engine with one
that passes ``weights_only=True`` (tensors, containers and an allow-list of plain types only),
so a crafted engine file is refused too (docs/data_prep.md, "What bad input gets"). Beyond the
project's control: DeepSpeed's universal-checkpoint loader (``checkpoint.load_universal``, ZeRO-3
``load_hp_checkpoint_state``) and ``zero_to_fp32`` call ``torch.load(weights_only=False)``
directly; this project uses neither on resume, so run them only on checkpoints you wrote.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from omegaconf import OmegaConf
from torch import nn

from cllm4rec_dist.config import CheckpointConfig
from cllm4rec_dist.data import location
from cllm4rec_dist.distributed import env
from cllm4rec_dist.distributed.table_checkpoint import (
    TableCheckpointError,
    load_tables,
    safetensors_problem,
    save_tables,
    table_blocks,
)
from cllm4rec_dist.export import ExportMeta, ExportWriter, dataset_assets, is_training_export
from cllm4rec_dist.model.options import ModelSource
from cllm4rec_dist.train.state import TrainerState, TrainerStateError, load_state, save_state

if TYPE_CHECKING:
    from cllm4rec_dist.config import TrainConfig
    from cllm4rec_dist.train.builder import TrainingParts

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint file is unreadable, truncated, or not in a format that is safe to load."""


def checkpoint_root(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def state_file(path: Path, rank: int) -> Path:
    """The trainer state file of ``rank`` in checkpoint ``path``."""
    return path / f"trainer_rank{rank}.json"


def _step(path: Path) -> int:
    digits = path.name.removeprefix("step")
    return int(digits) if digits.isdigit() else -1


def checkpoint_problems(path: Path) -> list[str]:
    """Why checkpoint ``path`` cannot be resumed from (empty list = it can), without loading it.

    Checks COMPLETE, every file's size against the list COMPLETE records (truncation of any file,
    DeepSpeed's included), and that the JSON and safetensors files parse (header and length).
    """
    marker = path / "COMPLETE"
    if not marker.is_file():
        return [f"{path}: no COMPLETE marker (a rank stopped while writing it)"]
    problems = []
    try:
        listed = json.loads(marker.read_text()).get("files", {})
    except (json.JSONDecodeError, AttributeError):
        listed = {}  # checkpoints written before sizes were recorded: structural checks only
    for relative, size in sorted(listed.items()):
        file = path / relative
        actual = file.stat().st_size if file.is_file() else None
        if actual != size:
            problems.append(f"{file}: {actual} bytes, {size} when the checkpoint was written")
    if not sorted(path.glob("trainer_rank*.json")):
        problems.append(f"{path}: no trainer_rank*.json")
    for file in sorted(path.glob("trainer_rank*.json")) + sorted(path.glob("tables/*.json")):
        try:
            json.loads(file.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            problems.append(f"{file}: truncated or corrupt JSON ({err})")
    for file in sorted(path.glob("tables/*.safetensors")):
        problem = safetensors_problem(file)
        if problem:
            problems.append(problem)
    return problems


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest checkpoint that passes ``checkpoint_problems``, whatever ``latest`` says.

    ``latest`` is only a hint: when it is missing, dangling, or not the newest complete
    checkpoint, that is logged; every newer checkpoint that is skipped is logged with why.
    """
    root = checkpoint_root(run_dir)
    pointer = root / "latest"
    named = pointer.read_text().strip() if pointer.is_file() else None
    candidates = sorted((p for p in root.glob("step*") if p.is_dir()), key=_step, reverse=True)
    chosen = None
    for path in candidates:
        problems = checkpoint_problems(path)
        if not problems:
            chosen = path
            break
        log.warning("skipping checkpoint %s: %s", path, "; ".join(problems))
    if named is None and chosen is not None:
        log.warning("%s is missing; resuming from the newest complete %s", pointer, chosen)
    elif named is not None and (chosen is None or chosen.name != named):
        where = "does not exist" if not (root / named).is_dir() else "is not the newest good one"
        log.warning("%s names %s, which %s; using %s", pointer, named, where, chosen)
    return chosen


def save_checkpoint(
    run_dir: str | Path,
    state: TrainerState,
    engine: Any,
    tables: dict,
    table_optimizer: Any,
    dataset: dict[str, Any] | None = None,
    keep_last: int = CheckpointConfig.keep_last,
    rewrite: bool = False,
) -> Path:
    """Collective: every rank writes its part; rank 0 publishes it as ``latest``.

    dataset: the fingerprint of the training data (``Manifest.fingerprint``), checked on load.
    keep_last: complete checkpoints kept besides this one and the best (older ones are pruned).
    rewrite: this run wrote the checkpoint of this step itself (the end of the stage saves the
    last epoch's step again, finished): replaced without a warning.
    """
    root = checkpoint_root(run_dir)
    path = root / f"step{state.global_step:08d}"
    rank, world = env.rank(), env.world_size()
    if rank == 0 and path.exists():  # a half-written attempt, or the run went back to a step
        if (path / "COMPLETE").exists() and not rewrite:
            log.warning(
                "replacing the existing checkpoint %s (training reached its step again)", path
            )
        shutil.rmtree(path)
    env.barrier()
    with _disk_full_reported(path):
        path.mkdir(parents=True, exist_ok=True)
        if engine is not None:
            # The frozen weights (a LoRA run's whole base model) are the pretrained ones the
            # build loads again: left out, a checkpoint holds the adapters, not 0.5-16 GB. A
            # head tied to the token embeddings stays under its alias (DeepSpeed drops frozen
            # parameters by their deduplicated names).
            engine.save_checkpoint(
                str(path / "backbone"), tag="ds", save_latest=False, exclude_frozen_parameters=True
            )
        save_tables(path / "tables", tables, table_optimizer, rank, world)
        save_state(state_file(path, rank), state)
        if rank == 0 and dataset is not None:
            (path / "dataset.json").write_text(json.dumps(dataset, indent=1) + "\n")
    env.barrier()
    if rank == 0:
        sizes = {
            str(f.relative_to(path)): f.stat().st_size
            for f in sorted(path.rglob("*"))
            if f.is_file()
        }
        (path / "COMPLETE").write_text(json.dumps({"files": sizes}, indent=1) + "\n")
        tmp = root / "latest.tmp"
        tmp.write_text(path.name + "\n")
        tmp.replace(root / "latest")
        _prune(root, keep={path.name, state.best_checkpoint}, keep_last=keep_last)
    env.barrier()
    return path


# Below this much free space, a failed write is reported as a full disk: torch.save says only
# "basic_ios::clear: iostream error" when the device fills up under it.
DISK_FULL_BYTES = 256 * 2**20


@contextlib.contextmanager
def _disk_full_reported(path: Path) -> Iterator[None]:
    """A write under ``path`` that fails on a (nearly) full device: CheckpointError naming the
    checkpoint and the space left, instead of the writer's own traceback."""
    try:
        yield
    except (OSError, RuntimeError) as err:
        free = shutil.disk_usage(next(p for p in path.parents if p.exists())).free
        if free >= DISK_FULL_BYTES:
            raise
        raise CheckpointError(
            f"{path}: cannot write the checkpoint: the device is full ({free / 2**20:.0f} MiB "
            "free); free some space (or set checkpoint.keep_last lower) and relaunch the same "
            "command: it resumes from the last complete checkpoint"
        ) from err


def has_checkpoints(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds checkpoint directories (complete or not)."""
    return any(p.is_dir() for p in checkpoint_root(run_dir).glob("step*"))


# Keys whose value decides what a checkpoint holds or what the documents it was trained on look
# like: the backbone (its source, size, dtype, which parameters train and their optimizer
# state, how ZeRO partitions them) and the stage. Resuming with another value fails inside
# DeepSpeed or silently continues another model. The dataset itself is checked by fingerprint.
RESUME_KEYS = (
    "model", "deepspeed.zero_stage", "deepspeed.offload_optimizer", "data.max_items",
    "data.max_text_tokens", "stage.name", "stage.phases", "stage.content_warmup_epochs",
    "stage.rows_only_epochs",
)  # fmt: skip
# Under ``model``: where the converted backbone is cached, and activation recomputation, change
# neither the checkpoint nor the model.
RESUME_FREE = ("model.cache_dir", "model.gradient_checkpointing")


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def resume_conflicts(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``key: saved -> current`` for each key of RESUME_KEYS that both resolved configs (nested
    dicts) hold and that differs (a key only one holds is a schema change, not a choice)."""
    old, new = _flat(saved), _flat(current)
    differ = []
    for key in sorted(old.keys() & new.keys()):
        watched = any(key == k or key.startswith(k + ".") for k in RESUME_KEYS)
        free = any(key == k or key.startswith(k + ".") for k in RESUME_FREE)
        if watched and not free and old.get(key) != new.get(key):
            differ.append(f"{key}: {old[key]} -> {new[key]}")
    return differ


def check_resume_config(run_dir: str | Path, current: dict[str, Any]) -> None:
    """CheckpointError naming the keys when ``run_dir``'s saved config.yaml differs from
    ``current`` (a resolved config) in a key of RESUME_KEYS."""
    import yaml

    path = Path(run_dir) / "config.yaml"
    try:
        saved = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return  # no record to compare with (a run from before it was written): resume as asked
    conflicts = resume_conflicts(saved if isinstance(saved, dict) else {}, current)
    if conflicts:
        shown = "; ".join(conflicts[:4]) + ("; ..." if len(conflicts) > 4 else "")
        raise CheckpointError(
            f"{run_dir}: its checkpoints were made with another model or data config ({shown}); "
            "relaunch with the same values, give another run.dir, or checkpoint.resume=false to "
            "start over (the earlier checkpoints are kept aside)"
        )


def set_aside(run_dir: str | Path) -> Path:
    """Rename ``run_dir``'s checkpoints to ``checkpoints.before-<UTC time>`` (a run that starts
    over must not resume from, or prune, the earlier run's checkpoints); returns the new path."""
    import time

    root = checkpoint_root(run_dir)
    moved = root.with_name(f"{root.name}.before-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}")
    root.rename(moved)
    return moved


def _prune(root: Path, keep: set, keep_last: int) -> None:
    done = sorted(p for p in root.glob("step*") if (p / "COMPLETE").exists())
    for old in done[: -max(keep_last, 1)]:
        if old.name not in keep:
            shutil.rmtree(old, ignore_errors=True)


# Plain-data classes DeepSpeed pickles into its ZeRO optimizer files (measured with
# torch.serialization.get_unsafe_globals_in_checkpoint for ZeRO 0-3, fp32 and bf16). The
# weights-only unpickler rebuilds them from their fields; it calls none of their code.
_DEEPSPEED_SAFE_GLOBALS = (
    "deepspeed.runtime.fp16.loss_scaler:LossScaler",
    "deepspeed.runtime.fp16.loss_scaler:DynamicLossScaler",
    "deepspeed.utils.tensor_fragment:fragment_address",
    "deepspeed.runtime.zero.config:ZeroStageEnum",
)


def _deepspeed_safe_globals() -> list[Any]:
    import importlib

    found = []
    for target in _DEEPSPEED_SAFE_GLOBALS:
        module, name = target.split(":")
        try:
            found.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):  # another DeepSpeed version: not needed there
            continue
    return found


def _safe_torch_load(path: str, map_location: Any = None) -> Any:
    """DeepSpeed's checkpoint_engine.load, with ``weights_only=True``: no arbitrary unpickling."""
    try:
        with torch.serialization.safe_globals(_deepspeed_safe_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        raise CheckpointError(
            f"{path}: refused or unreadable DeepSpeed checkpoint file "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
        ) from None


def _load_engine(path: Path, engine: Any) -> None:
    ckpt_engine = getattr(engine, "checkpoint_engine", None)
    original = getattr(ckpt_engine, "load", None)
    if original is not None:
        ckpt_engine.load = _safe_torch_load
    try:
        load_path, _ = engine.load_checkpoint(
            str(path / "backbone"), tag="ds", custom_load_fn=_trainable_loader(path)
        )
    finally:
        if original is not None:
            ckpt_engine.load = original
    if load_path is None:
        raise FileNotFoundError(f"no DeepSpeed checkpoint under {path / 'backbone'}")


def _trainable_loader(path: Path) -> Any:
    """DeepSpeed's module loader for checkpoints saved without the frozen parameters: strict
    for everything that trains (and for unexpected keys), tolerant of the frozen parameters
    only, which keep the pretrained values the build loaded."""

    def load(src: dict[str, Any], dst: nn.Module) -> None:
        frozen = {name for name, p in dst.named_parameters() if not p.requires_grad}
        missing, unexpected = dst.load_state_dict(src, strict=False)
        missing = [name for name in missing if name not in frozen]
        if missing or unexpected:
            raise CheckpointError(
                f"{path / 'backbone'}: the checkpoint does not match this backbone "
                f"(missing {missing[:5]}, unexpected {list(unexpected)[:5]}); model.* must be "
                "the run's"
            )

    return load


def check_dataset(path: Path, dataset: dict[str, Any] | None) -> None:
    """CheckpointError when checkpoint ``path`` records another dataset fingerprint."""
    file = Path(path) / "dataset.json"
    if dataset is None or not file.is_file():
        return
    saved = json.loads(file.read_text())
    if saved.get("manifest_sha256") != dataset.get("manifest_sha256"):
        raise CheckpointError(
            f"{file}: checkpoint of another dataset ({saved.get('num_users')} users x "
            f"{saved.get('num_items')} items, fingerprint {str(saved.get('manifest_sha256'))[:12]})"
            f" than this run's ({dataset.get('num_users')} x {dataset.get('num_items')}, "
            f"{str(dataset.get('manifest_sha256'))[:12]}); use another run.dir"
        )


def load_checkpoint(
    path: Path,
    engine: Any,
    tables: dict,
    table_optimizer: Any,
    dataset: dict[str, Any] | None = None,
) -> TrainerState:
    """Restore everything saved by ``save_checkpoint``; the world size may differ for the tables.

    The trainer state file of this rank is used when it exists, else rank 0's (then RNG streams
    restart from rank 0's state: positions are still exact, dropout noise may differ).
    Raises CheckpointError naming the file when one is truncated, corrupt or a refused pickle,
    or when ``dataset`` (a fingerprint) is given and differs from the one saved.
    """
    path = Path(path)
    check_dataset(path, dataset)
    own = state_file(path, env.rank())
    state_path = own if own.exists() else state_file(path, 0)
    if not state_path.exists():
        legacy = sorted(path.glob("trainer_rank*.pt"))
        raise CheckpointError(
            f"{legacy[0]}: trainer state in the old pickle format is not loaded (unpickling can "
            "run code); resume from a newer checkpoint or start a fresh run.dir"
            if legacy
            else f"{state_path}: missing (checkpoint {path} is incomplete)"
        )
    if engine is not None:
        _load_engine(path, engine)
    try:
        load_tables(path / "tables", tables, table_optimizer)
    except TableCheckpointError as err:
        raise CheckpointError(str(err)) from None
    try:
        return load_state(state_path)
    except TrainerStateError as err:
        raise CheckpointError(str(err)) from None


class Checkpointer:
    """The trainer's one handle on checkpoints (as torchtitan's CheckpointManager): what is
    saved (engine, tables, their optimizer, the dataset fingerprint), when (``maybe_save``:
    every ``every_steps``), what is kept (``keep_last`` + the best) and where resume starts."""

    def __init__(self, run_dir: str | Path, built: TrainingParts, cfg: CheckpointConfig):
        self.run_dir = Path(run_dir)
        self._parts = (built.engine, built.tables, built.table_optimizer)
        self.dataset = built.manifest.fingerprint
        self.every_steps, self.keep_last = cfg.every_steps, cfg.keep_last
        self.keep_best, self.resume = cfg.keep_best, cfg.resume
        self._saved_steps: set[int] = set()  # steps this run has written a checkpoint of

    def save(self, state: TrainerState) -> Path:
        """Collective. With keep_best off, the best checkpoint is pruned like any other."""
        if not self.keep_best:
            state = dataclasses.replace(state, best_checkpoint=None)
        path = save_checkpoint(
            self.run_dir, state, *self._parts, dataset=self.dataset, keep_last=self.keep_last,
            rewrite=state.global_step in self._saved_steps,
        )  # fmt: skip
        self._saved_steps.add(state.global_step)
        return path

    def maybe_save(self, state: TrainerState) -> None:
        if self.every_steps and state.global_step % self.every_steps == 0:
            self.save(state)

    def latest(self) -> Path | None:
        return latest_checkpoint(self.run_dir)

    def load(self, path: Path) -> TrainerState:
        return load_checkpoint(path, *self._parts, dataset=self.dataset)

    def load_best(self, state: TrainerState) -> TrainerState:
        """Load the weights of ``state.best_checkpoint`` (if any) for the final test; the
        returned state is ``state`` itself: the run's position and history stay."""
        best = state.best_checkpoint
        if best is None:
            return state
        path = self.run_dir / "checkpoints" / best
        if not (path / "COMPLETE").exists():
            raise FileNotFoundError(f"best checkpoint {path} is missing or incomplete")
        self.load(path)
        log.info("testing the best validation checkpoint %s (epoch %d)", best, state.best_epoch)
        return state

    def load_latest(self) -> TrainerState | None:
        """The state of the newest good checkpoint (None: none, or resume is off)."""
        path = self.latest() if self.resume else None
        if path is None:
            return None
        state = self.load(path)
        log.info("resumed from %s at epoch %d phase %d step %d", path, *state.position())
        return state


def _backbone_state(engine: Any, backbone: nn.Module) -> dict[str, torch.Tensor] | None:
    """Full backbone state dict on rank 0 (None elsewhere); collective under ZeRO-3."""
    if engine is not None and engine.zero_optimization_partition_weights():
        state = engine._zero3_consolidated_16bit_state_dict()
        return state if env.rank() == 0 else None
    module = engine.module if engine is not None else backbone
    return module.state_dict() if env.rank() == 0 else None


def export_checkpoint(
    built: TrainingParts,
    cfg: TrainConfig,
    checkpoint: Path,
    out_dir: Path,
    metrics: dict[str, Any] | None = None,
):
    """Collective: the export (``cllm4rec_dist/export.py``) of saved ``checkpoint`` into
    ``out_dir``, marked as this stage's: its tables whole, the backbone (when it trains, or is
    the tiny one built from scratch), the serving files, a model card with ``metrics`` (the
    checkpoint's validation metrics, when it has them) and meta.json, written by rank 0."""
    engine = built.engine
    backbone = engine.module if engine is not None else built.model.backbone
    keep = engine is not None or cfg.model.source == ModelSource.tiny
    state = _backbone_state(engine, backbone) if keep else None
    if env.rank() == 0:
        with ExportWriter(out_dir, cfg.stage.name, is_training_export) as writer:
            for name, shape, blocks in table_blocks(checkpoint / "tables"):
                writer.write_table_blocks(name, shape, blocks)
            if state is not None:
                zero3 = engine is not None and engine.zero_optimization_partition_weights()
                writer.write_backbone(state, None if zero3 else backbone.lm)
            manifest = built.manifest
            meta = ExportMeta(
                num_users=manifest.num_users,
                num_items=manifest.num_items,
                hidden_size=backbone.hidden_size,
                vocab_size=backbone.vocab_size,
                model=OmegaConf.to_container(cfg.model, resolve=True),
                data_dir=location.normalize(cfg.data.dir),
                dataset=manifest.fingerprint,
                backbone_state=state is not None,
                checkpoint=str(checkpoint.resolve()),
            )
            prompts = built.collator.builder
            assets = dataset_assets(
                manifest, prompts.tokenizer, prompts.bos_id, built.collator.max_items, False
            )
            writer.write_assets(assets, meta, metrics)
            writer.commit(meta)
        log.info("exported model to %s", out_dir)
    env.barrier()
