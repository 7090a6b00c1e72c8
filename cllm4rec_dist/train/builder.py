"""Build everything one stage needs from the config: the only place that wires the parts together.

The model gets its ID tables and item scorer injected: row-partitioned across ranks (collectives
inside) when world size > 1 or ``tables.partitioned``, dense otherwise. Only the backbone goes to
DeepSpeed, and only when it has trainable parameters (LoRA / full); the tables use their own
row-wise optimizer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from cllm4rec_dist.data.collate import Collator, RecTarget
from cllm4rec_dist.data.format import prompt_builder_templates
from cllm4rec_dist.data.manifest import Manifest, load_manifest
from cllm4rec_dist.data.phases import Phase
from cllm4rec_dist.data.splits import train_item_counts
from cllm4rec_dist.distributed import env
from cllm4rec_dist.distributed.comm import all_reduce
from cllm4rec_dist.distributed.item_parallel import ItemParallelScorer
from cllm4rec_dist.distributed.partitioned_table import PartitionedTable
from cllm4rec_dist.distributed.rowwise_optim import RowWiseAdagrad
from cllm4rec_dist.export import load_export
from cllm4rec_dist.model.cllm4rec import CLLM4Rec, IdTables, LossOutput
from cllm4rec_dist.model.heads import DenseItemScorer
from cllm4rec_dist.model.loading import build_backbone, document_start, load_tokenizer
from cllm4rec_dist.model.options import ModelSource, TableInit, table_init
from cllm4rec_dist.model.prompts import PromptBuilder
from cllm4rec_dist.model.sampling import (
    ItemSampler,
    SampledSoftmaxScorer,
    SoftmaxKind,
    resolve_kind,
)
from cllm4rec_dist.model.tables import DenseTable
from cllm4rec_dist.train.deepspeed_config import build_deepspeed_config
from cllm4rec_dist.train.text_init import init_from_text

if TYPE_CHECKING:
    from cllm4rec_dist.config import TrainConfig

log = logging.getLogger(__name__)

TABLE_NAMES = ("user_collab", "item_collab", "user_content", "item_content")


@dataclass
class TrainingParts:
    """What ``build`` wires for one stage: the model with its injected tables and item scorer,
    the backbone's DeepSpeed engine, the tables' optimizer, and each phase's collate and loss."""

    manifest: Manifest
    collator: Collator
    model: CLLM4Rec
    tables: dict[str, nn.Module]
    scorer: Any
    engine: Any  # DeepSpeedEngine wrapping the backbone, or None when it is frozen
    table_optimizer: RowWiseAdagrad
    mask_fraction: float
    rec_target: RecTarget
    device: torch.device

    def collate_host(self, phase: Phase, rows: list[dict], rng: np.random.Generator) -> Any:
        """A training batch of ``phase`` on the CPU (what DataLoader workers build)."""
        return phase.collate(self.collator, rows, rng, self.mask_fraction, self.rec_target)

    def collate(self, phase: Phase, rows: list[dict], rng: np.random.Generator) -> Any:
        return self.collate_host(phase, rows, rng).to(self.device)

    def collate_eval(self, rows: list[dict], split: str) -> Any:
        return self.collator.collate_rec_eval(rows, split).to(self.device)

    def loss(self, phase: Phase, batch: Any) -> LossOutput:
        return phase.loss(self.model, batch)


def build_tables(
    cfg: TrainConfig, num_users: int, num_items: int, dim: int
) -> dict[str, nn.Module]:
    """The four ID tables; each gets its own init stream (seed*4 + index) whatever the sharding."""
    partitioned = env.world_size() > 1 or cfg.tables.partitioned
    rows = {"user": num_users, "item": num_items}
    tables: dict[str, nn.Module] = {}
    for index, name in enumerate(TABLE_NAMES):
        n, seed = rows[name.split("_")[0]], cfg.model.seed * 4 + index
        if partitioned:
            tables[name] = PartitionedTable(n, dim, seed=seed, std=cfg.tables.init_std, what=name)
        else:
            tables[name] = DenseTable(n, dim, seed=seed, std=cfg.tables.init_std)
    return tables


def build_item_sampler(cfg: TrainConfig, manifest: Manifest, kind: SoftmaxKind) -> ItemSampler:
    """The sampled-softmax proposal from the training counts: each rank counts its share of
    the recommendation rows and the counts are summed, so no rank reads the whole corpus."""
    rank, world_size = env.rank(), env.world_size()
    counts = torch.from_numpy(
        train_item_counts(cfg.data.dir, manifest.num_items, rank=rank, world_size=world_size)
    )
    all_reduce(counts, dist.ReduceOp.SUM)
    sm = cfg.softmax
    log.info(
        "sampled softmax: %s negatives%s over %d items",
        kind,
        f" ({sm.num_samples} per step, alpha {sm.alpha})" if kind == SoftmaxKind.popularity else "",
        manifest.num_items,
    )
    return ItemSampler(counts, kind, sm.num_samples, sm.alpha, seed=cfg.run.seed)


def build(cfg: TrainConfig) -> TrainingParts:
    """Tokenizer, backbone, tables, scorer, model, DeepSpeed engine and the table optimizer."""
    torch.manual_seed(cfg.run.seed)
    manifest = load_manifest(cfg.data.dir)
    # Only the tiny backbone uses the dataset's tokenizer (read through the manifest, which
    # checks its digest and reads it from a remote dataset too).
    words = manifest.tokenizer_json() if cfg.model.source == ModelSource.tiny else None
    tokenizer = load_tokenizer(cfg.model, tokenizer_json=words)
    backbone = build_backbone(cfg.model, vocab_size=len(tokenizer))
    prompts = PromptBuilder(
        tokenizer,
        prompt_builder_templates(manifest.prompts),
        manifest.num_users,
        manifest.num_items,
        vocab_size=backbone.vocab_size,
        bos_id=document_start(cfg.model, tokenizer),
    )
    collator = Collator(
        prompts, max_items=cfg.data.max_items, max_text_tokens=cfg.data.max_text_tokens
    )
    tables = build_tables(cfg, manifest.num_users, manifest.num_items, backbone.hidden_size)
    item_table = tables["item_collab"]
    scorer = (
        ItemParallelScorer(item_table)
        if isinstance(item_table, PartitionedTable)
        else DenseItemScorer(item_table)
    )
    softmax = resolve_kind(cfg.softmax.kind, manifest.num_items, cfg.softmax.full_max_items)
    log.info(
        "item softmax: %s (softmax.kind=%s, %d items)",
        softmax,
        cfg.softmax.kind,
        manifest.num_items,
    )
    if softmax != SoftmaxKind.full:
        scorer = SampledSoftmaxScorer(scorer, build_item_sampler(cfg, manifest, softmax))
    if not cfg.stage.init_from and table_init(cfg.tables.init, cfg.model.source) == TableInit.text:
        counts = init_from_text(
            tables,
            backbone.lm.get_input_embeddings().weight,
            prompts,
            cfg.data.dir,
            cfg.data.max_text_tokens,
            collab_dims=cfg.tables.collab_dims,
            collab_norm=cfg.tables.collab_norm,
            seed=cfg.model.seed,
        )
        log.info("ID tables start from text: %s", counts)
    if cfg.stage.init_from:
        load_export(
            Path(cfg.stage.init_from),
            backbone,
            tables,
            manifest=manifest,
            allow_other_dataset=cfg.stage.allow_other_dataset,
        )
    device = env.device()
    for table in tables.values():
        table.to(device)
    model = CLLM4Rec(
        backbone,
        IdTables(**tables),
        scorer,
        lambda_v=cfg.stage.lambda_v,
        id_skip=cfg.model.id_skip,
        rec_pool=cfg.model.rec_pool,
        lm_scale=cfg.model.lm_scale,
    )
    engine = None
    trainable = [p for p in backbone.parameters() if p.requires_grad]
    n_train = sum(p.numel() for p in trainable)  # before ZeRO-3 empties the parameters
    if trainable:
        ds_config = build_deepspeed_config(cfg, micro_batch_size=cfg.data.collab_batch_size)
        engine, _, _, _ = env.import_deepspeed().initialize(
            model=backbone, model_parameters=trainable, config=ds_config
        )
        model.backbone = engine
    else:
        backbone.to(device)
    log.info(
        "backbone %s (%s): %d trainable parameters; tables %s; world size %d",
        cfg.model.source,
        cfg.model.mode,
        n_train,
        "partitioned" if isinstance(item_table, PartitionedTable) else "dense",
        env.world_size(),
    )
    table_optimizer = RowWiseAdagrad(
        [t.weight for t in tables.values()], lr=cfg.tables.lr, eps=cfg.tables.eps
    )
    return TrainingParts(
        manifest,
        collator,
        model,
        tables,
        scorer,
        engine,
        table_optimizer,
        cfg.stage.mask_fraction,
        cfg.stage.rec_target,
        device,
    )
