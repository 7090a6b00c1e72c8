"""The training phases: the one table that says what each phase name means.

A phase is one pass over a corpus with one loss. Config validation (``stage.phases`` is a list of
``PhaseName``), the trainer, the builder and the planner all read this table, so a new phase is a
new row here (plus its collator and loss). A step runs ``phase.loss(model, batch)`` and its
batches are ``phase.collate(collator, rows, rng, mask_fraction, rec_target)``: the table's own
callables, so a reader follows a phase from its name to its code.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from cllm4rec_dist.data.collate import Collator, RecTarget
from cllm4rec_dist.model.cllm4rec import CLLM4Rec, LossOutput

if TYPE_CHECKING:
    from cllm4rec_dist.config import DataConfig, StageConfig


class PhaseName(StrEnum):
    collaborative = "collaborative"
    collaborative_rows = "collaborative_rows"
    content = "content"
    recommendation = "recommendation"


@dataclass(frozen=True)
class Phase:
    name: PhaseName
    corpus: str  # the manifest corpus one pass reads
    batch_size_key: str  # the DataConfig field of its per-rank batch size
    main_length_key: str  # the DataConfig field bounding a document's main part
    prompt_blocks: int  # hard prompts around the main part (recommendation: before and after)
    # What the step scores against a full vocabulary, per document (the planner's memory model):
    # items = every main position against all items, words = every main position against the
    # word vocabulary, last = the last position against all items.
    head: Literal["items", "words", "last"]
    loss: Callable[[CLLM4Rec, Any], LossOutput]  # (model, batch) -> the batch's loss
    # (collator, rows, rng, mask_fraction, rec_target) -> the batch, on the host
    collate: Callable[[Collator, list[dict], np.random.Generator, float, RecTarget], Any]
    backbone: bool = True  # the loss runs the backbone (False: its optimizer does not step)

    def batch_size(self, data: DataConfig) -> int:
        """The configured per-rank batch size."""
        return int(getattr(data, self.batch_size_key))

    def max_length(self, data: DataConfig, prompt_tokens: int) -> int:
        """Longest document: its prompts (``prompt_tokens`` each) and main part."""
        return self.prompt_blocks * prompt_tokens + int(getattr(data, self.main_length_key))


_COLLABORATIVE = Phase(
    PhaseName.collaborative,
    corpus="collaborative",
    batch_size_key="collab_batch_size",
    main_length_key="max_items",
    prompt_blocks=1,
    head="items",
    loss=CLLM4Rec.collaborative_loss,
    collate=lambda c, rows, rng, mask, target: c.collate_collab(rows, rng),
)
PHASES: dict[PhaseName, Phase] = {
    p.name: p
    for p in (
        _COLLABORATIVE,
        # The collaborative LM with the backbone bypassed: the ID rows' running mean (the skip,
        # model.id_skip) is the whole hidden state. Pretraining's first stage.rows_only_epochs.
        dataclasses.replace(
            _COLLABORATIVE,
            name=PhaseName.collaborative_rows,
            loss=CLLM4Rec.collaborative_rows_loss,
            backbone=False,
        ),
        Phase(
            PhaseName.content,
            corpus="content",
            batch_size_key="content_batch_size",
            main_length_key="max_text_tokens",
            prompt_blocks=1,
            head="words",
            loss=CLLM4Rec.content_loss,
            collate=lambda c, rows, rng, mask, target: c.collate_content(rows),
        ),
        Phase(
            PhaseName.recommendation,
            corpus="recommendation",
            batch_size_key="rec_batch_size",
            main_length_key="max_items",
            prompt_blocks=2,
            head="last",
            loss=CLLM4Rec.recommendation_loss,
            collate=lambda c, rows, rng, mask, target: c.collate_rec_train(rows, rng, mask, target),
        ),
    )
}
# Pretraining's first stage.content_warmup_epochs epochs run this phase alone.
WARMUP_PHASE = PhaseName.content


# Pretraining's first stage.rows_only_epochs epochs (before stage.epochs) run this phase alone.
ROWS_PHASE = PhaseName.collaborative_rows


def stage_epochs(stage: StageConfig) -> int:
    """Epochs the stage runs: ``stage.rows_only_epochs`` first, then ``stage.epochs``."""
    return stage.rows_only_epochs + stage.epochs


def epoch_phases(stage: StageConfig, epoch: int) -> list[Phase]:
    """The phases epoch ``epoch`` of ``stage`` runs (counted from the first rows-only one)."""
    if epoch < stage.rows_only_epochs:
        return [PHASES[ROWS_PHASE]]
    epoch -= stage.rows_only_epochs
    names = [WARMUP_PHASE] if epoch < stage.content_warmup_epochs else list(stage.phases)
    return [PHASES[name] for name in names]


def stage_phases(stage: StageConfig) -> list[Phase]:
    """Every phase some epoch of ``stage`` runs, each once, in order of first use."""
    names = [ROWS_PHASE] if stage.rows_only_epochs > 0 else []
    if stage.epochs > 0:
        names += ([WARMUP_PHASE] if stage.content_warmup_epochs > 0 else []) + list(stage.phases)
    return [PHASES[name] for name in dict.fromkeys(names)]


@dataclass
class PhasePass:
    """One pass of a phase over its corpus, as an epoch runs it on every rank."""

    phase: Phase
    batch_size: int  # per rank
    steps: int

    @property
    def name(self) -> PhaseName:
        return self.phase.name


def plan_pass(phase: Phase, rows: int, data: DataConfig, max_steps: int | None) -> PhasePass:
    """The pass of ``phase`` when the smallest rank holds ``rows`` rows of its corpus.

    The batch adapts to the catalog: a rank takes at least ``data.min_steps_per_epoch`` steps
    per pass, so a small catalog is not trained with a handful of updates per epoch, and never
    skips a phase for want of one batch. On a large catalog it grows towards
    ``data.max_steps_per_epoch`` steps per pass, by at most ``data.max_batch_growth`` times, so
    that the fixed cost of a step (dispatch, collectives' latency) stays a small part of it
    while activations stay within a few times what the configured batch needs (a 1 B backbone
    is sized by its batch). The row-wise Adagrad of the tables is invariant to the gradient's
    scale, and a user's row still gets one update per pass, so the recipe holds.
    ``max_steps`` (stage.max_steps_per_phase) caps the pass.
    """
    configured = phase.batch_size(data)
    batch = min(configured, rows // max(data.min_steps_per_epoch, 1))
    grown = min(-(-rows // max(data.max_steps_per_epoch, 1)), configured * data.max_batch_growth)
    batch = max(batch, grown, 1)
    steps = rows // batch
    if max_steps is not None:
        steps = min(steps, max_steps)
    return PhasePass(phase, batch, steps)
