"""Typed schema of ``launchers/baseline.py`` (registered in the ConfigStore as ``baseline_schema``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from hydra.core.config_store import ConfigStore


@dataclass
class MultVAEConfig:
    """Mult-VAE (Liang et al., WWW 2018) with the paper's settings; epoch picked on validation."""

    dims: list[int] = field(default_factory=lambda: [600, 200])  # encoder I -> 600 -> 200
    dropout: float = 0.5  # on the L2-normalised input
    # KL weight reached, linearly from 0, at the last planned update. 0.5, not the paper's 0.2:
    # picked on validation NDCG@100 over {0.2, 0.5} (docs/results.md), and what its table ran.
    beta_max: float = 0.5
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 500
    epochs: int = 200
    patience: int = 20  # epochs without a better validation score before stopping
    eval_every: int = 1  # validate every this many epochs
    seed: int = 0
    threads: int = 0  # torch intra-op threads; 0 = torch's default


class BaselineMethod(StrEnum):
    """``method`` of launchers/baseline.py."""

    popularity = "popularity"
    ease = "ease"  # λ tuned on validation
    multvae = "multvae"  # epoch picked on validation


@dataclass
class BaselineConfig:
    """``launchers/baseline.py``: a non-LLM ranker on the same split, masking and metrics."""

    data_dir: str = "${oc.env:CLLM4REC_DATA_DIR,data/synthetic}"
    method: BaselineMethod = BaselineMethod.popularity
    ks: list[int] = field(default_factory=lambda: [20, 40, 100])
    select_metric: str = (
        "ndcg@100"  # validation metric that picks λ (EASE) and the epoch (Mult-VAE)
    )
    lambdas: list[float] = field(  # EASE: L2 grid searched on validation
        default_factory=lambda: [10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0]
    )
    multvae: MultVAEConfig = field(default_factory=MultVAEConfig)
    output: str | None = None  # JSON file for the metrics
    progress: bool = True  # a progress bar (splits, the λ grid, Mult-VAE's epochs)


def register_baseline() -> None:
    ConfigStore.instance().store(name="baseline_schema", node=BaselineConfig)
