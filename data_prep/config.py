"""Typed configuration of ``launchers/prepare.py`` (Hydra structured configs).

``configs/data_prep/config.yaml`` fills ``PrepConfig``; ``configs/data_prep/source/<name>.yaml``
fills the ``source`` node. The synthetic source has a typed schema here; the raw readers validate
their own keys (``data_prep/readers/*``), so their nodes stay free-form mappings.

Only ``seed``, ``filter``, ``split``, ``layout``, ``staging.buckets``, ``tokenizer`` and
``prompts`` change what is written; ``output_dir``, ``ray``, ``debug`` and ``progress`` do not
(they are left out of the manifest, so two runs that differ only there produce identical files).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from cllm4rec_dist.cli.checks import non_finite_values

# Users per RNG chunk of the synthetic generator: each chunk draws from its own stream seeded by
# (seed, chunk), so the data does not depend on how chunks are grouped into Ray tasks.
SYNTHETIC_CHUNK_USERS = 256


@dataclass
class SyntheticSourceConfig:
    """The embedded generator: latent topics drive both interactions and texts."""

    name: str = "synthetic"
    num_users: int = 1000
    num_items: int = 400
    num_topics: int = 8
    mean_interactions: float = 20.0
    min_interactions: int = 5
    # Item popularity ~ rank^-exponent (Zipf); larger = more skewed towards a few items.
    popularity_exponent: float = 0.5
    # Dirichlet concentration of users' / items' topic mixtures (small = focused on few topics).
    user_topic_concentration: float = 0.15
    item_topic_concentration: float = 0.1
    review_fraction: float = 0.2  # share of interactions that come with a review
    user_text_fraction: float = 1.0  # share of users with a self-description
    text_min_words: int = 10
    text_max_words: int = 25
    words_per_topic: int = 24
    users_per_block: int = 4096  # users per Ray task; a multiple of SYNTHETIC_CHUNK_USERS
    seed: int = 0  # source/synthetic.yaml sets ${seed} (the top-level seed)


@dataclass
class FilterConfig:
    """Record filters for raw sources (applied to every source)."""

    # Keep an interaction only when rating > min_rating (CLLM4Rec keeps ratings > 3);
    # null = no threshold. Records without a rating are rejected when a threshold is set.
    min_rating: float | None = None
    # Iterated k-core: every kept user has >= k_core_user items and every item >= k_core_item
    # users (0 or 1 = off).
    k_core_user: int = 0
    k_core_item: int = 0


@dataclass
class SplitConfig:
    """Per-user random split of a user's item set (docs/data_prep.md, "Split rule")."""

    val_fraction: float = 0.1
    test_fraction: float = 0.1
    min_items_for_eval: int = 3  # users with fewer items are train-only and not evaluated
    # Held out of every training file, for the cold-start / fold-in studies (data/cold.py): a
    # cold item loses its train pairs and texts (its description goes to cold/items), a cold
    # user all its pairs and texts (its pairs go to cold/users).
    cold_item_fraction: float = 0.0
    cold_user_fraction: float = 0.0


@dataclass
class LayoutConfig:
    """WebDataset shard layout: many users (documents) per sample, many samples per shard."""

    users_per_sample: int = 64
    docs_per_sample: int = 64
    samples_per_shard: int = 16
    shard_multiple: int = 8  # shard count of every corpus is a multiple of this


@dataclass
class StagingConfig:
    """Intermediate hash partitioning (bounded memory per Ray task)."""

    # Users are hash-partitioned into this many buckets; each bucket is one Ray task per phase.
    # It fixes the order of users inside shards, so it belongs to the output's identity.
    buckets: int = 16
    # Raw reader batches are coalesced into staging chunks of about this many rows.
    chunk_rows: int = 1_000_000


@dataclass
class TokenizerConfig:
    """Byte-level BPE for the tiny backbone, trained on a bounded sample of content text."""

    vocab_size: int = 1024
    min_frequency: int = 2
    max_documents: int = 50_000


@dataclass
class PromptsConfig:
    """Hard-prompt templates (docs/architecture.md §3); ``<user>``/``<item>`` are ID tokens and
    ``<items>`` the user's item tokens. The training collator turns them into token sequences."""

    collaborative: str = "<user> has interacted with"
    review: str = "<user> writes the following review for <item>:"
    item_description: str = "The description of <item> is:"
    user_description: str = "The description of <user> is:"
    recommendation: str = "<user> has interacted with <items>, <user> will interact with"


@dataclass
class RayConfig:
    address: str | None = None  # null: start a local Ray; "auto": join the running cluster
    num_cpus: int = 2
    object_store_memory: int | None = None  # bytes; null = Ray's default
    temp_dir: str | None = None  # null: a fresh short directory under the system temp dir


@dataclass
class DebugConfig:
    # Testing knob: every shard writer whose ordinal (over all corpora) is >= N raises after
    # writing half of its temporary file, as a crash would.
    fail_after_shards: int | None = None


@dataclass
class PrepConfig:
    source: Any = MISSING
    output_dir: str = MISSING
    seed: int = 0
    filter: FilterConfig = field(default_factory=FilterConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    layout: LayoutConfig = field(default_factory=LayoutConfig)
    staging: StagingConfig = field(default_factory=StagingConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    prompts: PromptsConfig = field(default_factory=PromptsConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    debug: DebugConfig = field(default_factory=DebugConfig)
    progress: bool = True
    keep_staging: bool = False  # keep <output_dir>/.prep_work after success (debugging)
    # An input with no interaction left (empty, unreadable records only, all rejected or all
    # filtered) is an error; true writes the empty dataset anyway.
    allow_empty: bool = False
    # A catalog that grows: a dataset prepared before from part of this input. Its id maps are
    # kept (new users and items get the next indices, in sorted order) and so is its tokenizer,
    # so an export made from it continues training here (docs/data_prep.md, "Growing").
    id_maps_from: str | None = None


# Sections of PrepConfig that define the output; the manifest records these (of ``staging``
# only ``buckets``).
OUTPUT_SECTIONS = ("seed", "filter", "split", "layout", "staging", "tokenizer", "prompts")


def register_configs() -> None:
    """Register the schemas in Hydra's ConfigStore (idempotent)."""
    cs = ConfigStore.instance()
    cs.store(name="data_prep_schema", node=PrepConfig)
    cs.store(group="source", name="synthetic_schema", node=SyntheticSourceConfig)


def check_config(cfg: PrepConfig) -> None:
    """Reject values that would fail later or silently do something else; messages name the key."""
    problems = [
        f"{key} must be a finite number, got {value}" for key, value in non_finite_values(cfg)
    ]
    if cfg.split.val_fraction < 0 or cfg.split.test_fraction < 0:
        problems.append("split.val_fraction and split.test_fraction must be >= 0")
    if cfg.split.val_fraction + cfg.split.test_fraction >= 1:
        problems.append("split.val_fraction + split.test_fraction must be < 1")
    for key in ("cold_item_fraction", "cold_user_fraction"):
        if not 0.0 <= cfg.split[key] < 1.0:
            problems.append(f"split.{key} must be in [0, 1)")
    if cfg.split.min_items_for_eval < 3:
        problems.append("split.min_items_for_eval must be >= 3 (one train, val and test item)")
    for key in ("users_per_sample", "docs_per_sample", "samples_per_shard", "shard_multiple"):
        if getattr(cfg.layout, key) < 1:
            problems.append(f"layout.{key} must be >= 1")
    if cfg.staging.buckets < 1 or cfg.staging.chunk_rows < 1:
        problems.append("staging.buckets and staging.chunk_rows must be >= 1")
    if cfg.tokenizer.vocab_size < 259:
        problems.append("tokenizer.vocab_size must be >= 259 (256 bytes + 3 special tokens)")
    if cfg.ray.num_cpus < 1:
        problems.append("ray.num_cpus must be >= 1")
    if cfg.source.get("name") is None:
        problems.append("source.name is missing (pick one with source=<name>)")
    if problems:
        raise ValueError("invalid data_prep config: " + "; ".join(problems))
