"""The one training loop, shared by pretraining, finetuning and evaluation-only runs.

A stage is a list of epochs; each epoch runs phases (``collaborative``, ``content``,
``recommendation``), each phase one pass over its corpus. Stages differ only by config: which
phases, how many warm-up epochs, whether validation runs. Every rank runs the same number of steps
per phase (computed from the manifest, no I/O), because ID-table lookups and item-parallel losses
are collectives.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from cllm4rec_dist.data.loader import PhasePosition, phase_loader
from cllm4rec_dist.data.phases import Phase, PhasePass, epoch_phases, plan_pass, stage_epochs
from cllm4rec_dist.data.shards import rows_per_rank
from cllm4rec_dist.distributed import env
from cllm4rec_dist.eval.evaluate import evaluate, sample_fraction
from cllm4rec_dist.optim.schedule import LRSchedule
from cllm4rec_dist.train.builder import TrainingParts
from cllm4rec_dist.train.checkpoint import Checkpointer, export_checkpoint
from cllm4rec_dist.train.monitor import Monitor, Throughput, step_scalars
from cllm4rec_dist.train.preemption import (
    PREEMPTED_EXIT_CODE,
    Preempted,
    PreemptionSignal,
    clear_marker,
    write_marker,
)
from cllm4rec_dist.train.state import TrainerState

if TYPE_CHECKING:
    from cllm4rec_dist.config import TrainConfig

log = logging.getLogger(__name__)


def train_step(
    b: TrainingParts, phase: Phase, batch: Any, preemption: PreemptionSignal | None = None
) -> StepResult:
    """One optimizer step of ``phase`` on this rank's ``batch``. A non-finite loss on any rank
    skips the update on every rank. One all-reduce carries the loss, the non-finite flag and the
    preemption flag, so every rank takes the same decisions."""
    out = b.loss(phase, batch)
    loss = out.loss.detach().float()
    stats = torch.tensor(
        [
            float(loss),
            0.0 if bool(torch.isfinite(loss)) else 1.0,
            1.0 if preemption and preemption.requested else 0.0,
        ],
        dtype=torch.float64,
    )
    env.all_reduce_sum(stats)
    stop = bool(stats[2] > 0)
    if stats[1] > 0:
        return StepResult(out, float("nan"), stop)
    if b.engine is not None and phase.backbone:
        b.engine.backward(out.loss)
        b.engine.step()
    else:
        out.loss.backward()
    b.table_optimizer.step()
    b.table_optimizer.zero_grad()
    return StepResult(out, float(stats[0]) / env.world_size(), stop)


@dataclass
class StepResult:
    out: Any  # the model's LossOutput on this rank
    mean_loss: float  # loss averaged over ranks (NaN: the update was skipped)
    preempted: bool  # some rank received SIGUSR1/SIGTERM: checkpoint and exit


class TrainingDiverged(RuntimeError):
    """A loss became NaN/inf; the last good checkpoint is kept and named in the message."""


class NothingToTrain(RuntimeError):
    """The stage would run zero optimizer steps, or evaluate zero users (an empty dataset)."""


class StopRequested(Exception):
    """Raised after ``run.max_steps`` steps of this run (a later run resumes from there)."""


class Trainer:
    def __init__(self, cfg: TrainConfig, built: TrainingParts):
        self.cfg, self.b = cfg, built
        self.run_dir = Path(cfg.run.dir)
        self.rank, self.world = env.rank(), env.world_size()
        self.state = TrainerState(stage=cfg.stage.name)
        self.monitor = Monitor(self.run_dir, enabled=self.rank == 0, progress=cfg.run.progress_bar)
        self.steps_this_run = 0
        self.losses: list[tuple[int, str, float]] = []  # (step number, phase, mean loss over ranks)
        self.preemption = PreemptionSignal()
        self.checkpoints = Checkpointer(self.run_dir, built, cfg.checkpoint)
        # Called with the trainer after every step (tests inject faults through it).
        self.step_hooks: list[Callable[[Trainer], None]] = []
        self._total_steps = self.total_steps()
        optimizers = [("tables", built.table_optimizer, cfg.tables.lr)]
        if built.engine is not None:
            optimizers.append(("backbone", built.engine.optimizer, cfg.optim.lr))
        self.schedule = LRSchedule(
            optimizers,
            self._total_steps,
            schedule=cfg.optim.schedule,
            warmup_fraction=cfg.optim.warmup_fraction,
        )

    # ----- schedule -------------------------------------------------------------------------
    def phases_for(self, epoch: int) -> list[PhasePass]:
        """The passes epoch ``epoch`` runs, sized from the manifest's row counts (no I/O)."""
        s = self.cfg.stage
        return [
            plan_pass(
                phase,
                min(rows_per_rank(self.b.manifest, phase.corpus, self.world)),
                self.cfg.data,
                s.max_steps_per_phase,
            )
            for phase in epoch_phases(s, epoch)
        ]

    def total_steps(self) -> int:
        """Optimizer steps of the whole stage (all epochs), the horizon of the LR schedule."""
        epochs = range(stage_epochs(self.cfg.stage))
        return sum(spec.steps for e in epochs for spec in self.phases_for(e))

    def early_stopped(self) -> bool:
        """Validation has not improved for ``stage.patience`` epochs (0 = never stop early)."""
        st, patience = self.state, self.cfg.stage.patience
        return patience > 0 and st.best_epoch >= 0 and st.epoch - 1 - st.best_epoch >= patience

    # ----- main entry -----------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Train (resuming if a checkpoint exists), then test; returns the final metrics."""
        if self.rank == 0:
            clear_marker(self.run_dir)
        if stage_epochs(self.cfg.stage) > 0 and self._total_steps == 0:
            raise NothingToTrain(
                f"{self.cfg.data.dir}: stage {self.cfg.stage.name} would run 0 steps "
                f"(phases {list(self.cfg.stage.phases)} have no rows on some rank)"
            )
        self._maybe_resume()
        try:
            while self.state.epoch < stage_epochs(self.cfg.stage) and not self.early_stopped():
                self._run_epoch()
            if self.early_stopped():
                log.info(
                    "early stop after epoch %d: no validation gain since epoch %d",
                    self.state.epoch - 1,
                    self.state.best_epoch,
                )
        except Preempted:
            path = self.checkpoints.save(self.state)
            if self.rank == 0:
                write_marker(self.run_dir, path)
            log.warning(
                "preemption signal: saved %s; exiting with status %d so the job is "
                "requeued and resumes",
                path,
                PREEMPTED_EXIT_CODE,
            )
            self.monitor.close()
            raise SystemExit(PREEMPTED_EXIT_CODE) from None
        except StopRequested:
            log.info("stopped after %d steps as requested (run.max_steps)", self.steps_this_run)
            self.monitor.close()
            return {"stopped": True, "global_step": self.state.global_step, "losses": self.losses}
        result: dict[str, Any] = {"global_step": self.state.global_step, "losses": self.losses}
        if stage_epochs(self.cfg.stage) > 0 and not self.state.finished:
            self.state.finished = True
            path = self.checkpoints.save(self.state)
            last = self.state.history[-1] if self.state.history else None
            export_checkpoint(self.b, self.cfg, path, self.run_dir / "export", last)
        if self.cfg.stage.name == "evaluate":
            result["val"] = self.evaluate("val")
        if self.cfg.stage.test_at_end:
            self.state = self.checkpoints.load_best(self.state)
            test = self.evaluate("test")
            self.monitor.scalars("test", test, self.state.global_step)
            result["test"] = test
        if self.rank == 0:
            summary = {k: v for k, v in result.items() if k != "losses"}
            (self.run_dir / "metrics.json").write_text(
                json.dumps({**summary, "validation_history": self.state.history}, indent=2)
            )
        self.monitor.close()
        return result

    def _maybe_resume(self) -> None:
        self.state = self.checkpoints.load_latest() or self.state

    # ----- epochs and phases ----------------------------------------------------------------
    def _run_epoch(self) -> None:
        st = self.state
        for index, spec in enumerate(self.phases_for(st.epoch)):
            if index < st.phase_index:
                continue
            self._run_phase(spec)
            st.phase_index, st.step_in_phase = index + 1, 0
        every = self.cfg.stage.eval_every_epochs
        validate = every > 0 and (st.epoch + 1) % every == 0
        value = float("-inf")
        if validate:
            metrics = self.evaluate("val", self.val_fraction)
            self.monitor.scalars("val", metrics, st.global_step)
            st.history.append({"epoch": st.epoch, **metrics})
            value = metrics[self.cfg.eval.select_metric]
        st.epoch, st.phase_index, st.step_in_phase = st.epoch + 1, 0, 0
        improved = validate and value > st.best_metric
        if improved:
            st.best_metric, st.best_epoch = value, st.epoch - 1
            st.best_checkpoint = f"step{st.global_step:08d}"
        path = self.checkpoints.save(st)
        if improved:
            export_checkpoint(self.b, self.cfg, path, self.run_dir / "best", st.history[-1])

    def _run_phase(self, spec: PhasePass) -> None:
        st, cfg = self.state, self.cfg
        if spec.steps == 0:
            log.warning("phase %s has no full batch on some rank; skipped", spec.name)
            return
        position = PhasePosition(
            data_dir=cfg.data.dir,
            corpus=spec.phase.corpus,
            rank=self.rank,
            world_size=self.world,
            epoch=st.epoch,
            phase_index=st.phase_index,
            seed=cfg.run.seed,
            shuffle_buffer=cfg.data.shuffle_buffer,
            batch_size=spec.batch_size,
            start_step=st.step_in_phase,
            steps=spec.steps,
        )
        batches = iter(
            phase_loader(position, partial(self.b.collate_host, spec.phase), cfg.data.num_workers)
        )
        self.b.model.train()
        bar = self.monitor.progress(
            total=spec.steps, initial=st.step_in_phase, desc=f"epoch {st.epoch} {spec.name}"
        )
        window = Throughput()
        while st.step_in_phase < spec.steps:
            batch = next(batches).to(self.b.device)
            self.schedule.step(st.global_step)
            step = train_step(self.b, spec.phase, batch, self.preemption)
            out, mean_loss = step.out, step.mean_loss
            if not math.isfinite(mean_loss):
                last = self.checkpoints.latest()
                raise TrainingDiverged(
                    f"non-finite {spec.name} loss at epoch {st.epoch}, step {st.global_step}; "
                    f"no update was applied. Last good checkpoint: {last or 'none yet'}"
                )
            st.step_in_phase += 1
            st.global_step += 1
            self.losses.append((st.global_step, spec.name, mean_loss))
            self.steps_this_run += 1
            window.add(out.tokens, batch.num_documents)
            bar.update(1)
            if st.global_step % cfg.run.log_every_steps == 0 or st.step_in_phase == spec.steps:
                self._log_step(spec.name, out, window)
            self.checkpoints.maybe_save(st)
            if step.preempted:
                bar.close()
                raise Preempted
            for hook in self.step_hooks:
                hook(self)
            if cfg.run.max_steps is not None and self.steps_this_run >= cfg.run.max_steps:
                bar.close()
                raise StopRequested
        bar.close()

    def _log_step(self, phase: str, out: Any, window: Throughput) -> None:
        values = {**step_scalars(phase, out, window), **self.schedule.rates()}
        self.monitor.scalars("train", values, self.state.global_step)
        window.reset()

    # ----- evaluation -----------------------------------------------------------------------
    @property
    def val_fraction(self) -> float:
        """Share of the users the per-epoch validation ranks (eval.val_max_users)."""
        users = self.b.manifest.counts.evaluated_users["val"]
        return sample_fraction(users, self.cfg.eval.val_max_users)

    def evaluate(self, split: str, user_fraction: float = 1.0) -> dict[str, float]:
        metrics = evaluate(self.b, self.cfg, split, user_fraction)
        if metrics["users"] == 0 and user_fraction < 1:
            raise NothingToTrain(
                f"{self.cfg.data.dir}: the validation sample holds no user; raise "
                f"eval.val_max_users (now {self.cfg.eval.val_max_users}) or set it to 0 (all)"
            )
        if metrics["users"] == 0:
            raise NothingToTrain(f"{self.cfg.data.dir}: no user has {split} items to evaluate")
        if self.rank == 0:
            shown = ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k != "users")
            sample = (
                " (a hash sample of the users: eval.val_max_users)" if user_fraction < 1 else ""
            )
            log.info("%s (%d users): %s%s", split, int(metrics["users"]), shown, sample)
        return metrics
