"""The training phases: the one table that says what each phase name means.

A phase is one pass over a corpus with one loss. Config validation, the trainer, the builder and
the planner all read this table, so a new phase is a new row here (plus its collator and loss).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class Phase:
    name: str
    corpus: str  # the manifest corpus one pass reads
    batch_size_key: str  # the DataConfig field of its per-rank batch size
    main_length_key: str  # the DataConfig field bounding a document's main part
    prompt_blocks: int  # hard prompts around the main part (recommendation: before and after)
    # What the step scores against a full vocabulary, per document (the planner's memory model):
    # items = every main position against all items, words = every main position against the
    # word vocabulary, last = the last position against all items.
    head: Literal["items", "words", "last"]
    loss: str  # the CLLM4Rec method computing a batch's loss
    # (collator, rows, rng, mask_fraction, rec_target) -> the batch, on the host
    collate: Callable[[Any, list[dict], Any, float, str], Any]

    def batch_size(self, data: Any) -> int:
        """The configured per-rank batch size (``data`` is the DataConfig)."""
        return int(getattr(data, self.batch_size_key))

    def max_length(self, data: Any, prompt_tokens: int) -> int:
        """Longest document: its prompts (``prompt_tokens`` each) and main part."""
        return self.prompt_blocks * prompt_tokens + int(getattr(data, self.main_length_key))


PHASES: dict[str, Phase] = {
    p.name: p
    for p in (
        Phase(
            "collaborative",
            corpus="collaborative",
            batch_size_key="collab_batch_size",
            main_length_key="max_items",
            prompt_blocks=1,
            head="items",
            loss="collaborative_loss",
            collate=lambda c, rows, rng, mask, target: c.collate_collab(rows, rng),
        ),
        Phase(
            "content",
            corpus="content",
            batch_size_key="content_batch_size",
            main_length_key="max_text_tokens",
            prompt_blocks=1,
            head="words",
            loss="content_loss",
            collate=lambda c, rows, rng, mask, target: c.collate_content(rows),
        ),
        Phase(
            "recommendation",
            corpus="recommendation",
            batch_size_key="rec_batch_size",
            main_length_key="max_items",
            prompt_blocks=2,
            head="last",
            loss="recommendation_loss",
            collate=lambda c, rows, rng, mask, target: c.collate_rec_train(rows, rng, mask, target),
        ),
    )
}
PHASE_NAMES = tuple(PHASES)
# Pretraining's first stage.content_warmup_epochs epochs run this phase alone.
WARMUP_PHASE = "content"


def epoch_phases(stage: Any, epoch: int) -> list[Phase]:
    """The phases epoch ``epoch`` of ``stage`` (the StageConfig) runs, in order."""
    names = [WARMUP_PHASE] if epoch < stage.content_warmup_epochs else list(stage.phases)
    return [PHASES[name] for name in names]


def stage_phases(stage: Any) -> list[Phase]:
    """Every phase some epoch of ``stage`` runs, each once, in order of first use."""
    names = ([WARMUP_PHASE] if stage.content_warmup_epochs > 0 else []) + list(stage.phases)
    return [PHASES[name] for name in dict.fromkeys(names)] if stage.epochs > 0 else []


@dataclass
class PhasePass:
    """One pass of a phase over its corpus, as an epoch runs it on every rank."""

    phase: Phase
    batch_size: int  # per rank
    steps: int

    @property
    def name(self) -> str:
        return self.phase.name


def plan_pass(phase: Phase, rows: int, data: Any, max_steps: int | None) -> PhasePass:
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
