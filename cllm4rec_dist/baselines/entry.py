"""``launchers/baseline.py``: a baseline ranker on a prepared dataset, its metrics as a table on
the terminal and as JSON in ``output`` (a bad config value, a missing or empty dataset, an output
file the command did not write: one line, exit 2)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import OmegaConf

from cllm4rec_dist.cli.checks import non_finite_problem
from cllm4rec_dist.cli.console import metrics_grid, paths
from cllm4rec_dist.cli.errors import UserError, reported
from cllm4rec_dist.cli.outputs import check_output_file, write_output_file

if TYPE_CHECKING:
    from cllm4rec_dist.baselines.config import BaselineConfig
    from cllm4rec_dist.data.manifest import Manifest

COMMAND = "baseline"


def _is_own(path: Path) -> bool:
    """A metrics file this command wrote: a JSON object with ``method`` and ``test``."""
    try:
        blob = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(blob, dict) and {"method", "test"} <= blob.keys()


def check(cfg: BaselineConfig) -> None:
    """UserError naming the key: select_metric, non-finite values, the grid, output (``method``
    is a BaselineMethod, which OmegaConf checks when the config is composed)."""
    metric, _, k = cfg.select_metric.partition("@")
    if metric not in ("recall", "ndcg") or not k.isdigit() or int(k) not in cfg.ks:
        raise UserError("invalid config `select_metric`: must be recall@K or ndcg@K with K in ks")
    problem = non_finite_problem(cfg)
    if problem:
        raise UserError(problem)
    if any(lam <= 0 for lam in cfg.lambdas) or not cfg.lambdas:
        raise UserError("invalid config `lambdas`: a non-empty list of values > 0")
    if any(k <= 0 for k in cfg.ks):
        raise UserError("invalid config `ks`: every k must be > 0")
    if cfg.output:
        check_output_file(cfg.output, COMMAND, _is_own)


def dataset(data_dir: str) -> Manifest:
    """The manifest of ``data_dir``; UserError when it has nothing to train or evaluate on."""
    from cllm4rec_dist.data.manifest import load_manifest

    manifest = load_manifest(data_dir)
    counts = manifest.counts
    if counts.interactions.get("train", 0) == 0:
        raise UserError(f"{data_dir}: the dataset has no train interactions (an empty dataset)")
    missing = [s for s in ("val", "test") if counts.evaluated_users.get(s, 0) == 0]
    if missing:
        raise UserError(f"{data_dir}: no user has {' or '.join(missing)} items to evaluate")
    return manifest


def evaluate(cfg: BaselineConfig, manifest: Manifest) -> dict[str, Any]:
    from cllm4rec_dist.baselines.ease import evaluate_ease
    from cllm4rec_dist.baselines.multvae import evaluate_multvae
    from cllm4rec_dist.baselines.popularity import evaluate_popularity

    ks, select = list(cfg.ks), cfg.select_metric
    if cfg.method == "popularity":
        return evaluate_popularity(cfg.data_dir, manifest, ks, progress=cfg.progress)
    if cfg.method == "ease":
        return evaluate_ease(
            cfg.data_dir, manifest, ks, tuple(cfg.lambdas), select, progress=cfg.progress
        )
    return evaluate_multvae(
        cfg.data_dir, manifest, ks, OmegaConf.to_object(cfg.multvae), select,
        progress=cfg.progress,
    )  # fmt: skip


def summary(cfg: BaselineConfig, result: dict[str, Any]) -> str:
    """The table of validation and test metrics, what was picked, and the file written."""
    picked = {"ease": ("lambda", "λ"), "multvae": ("epoch", "epoch")}.get(cfg.method)
    head = f"{cfg.method} on {cfg.data_dir}"
    if picked and picked[0] in result:
        head += f" ({picked[1]} {result[picked[0]]:g} picked on validation {cfg.select_metric})"
    lines = [head, metrics_grid({s: result[s] for s in ("val", "test")})]
    if cfg.output:
        lines.append(paths({"metrics": cfg.output}))
    return "\n".join(lines)


def run_baseline(cfg: BaselineConfig) -> None:
    from cllm4rec_dist.data.location import RemoteReadError
    from cllm4rec_dist.data.manifest import ManifestError
    from cllm4rec_dist.data.samples import ShardError

    with reported(ManifestError, FileNotFoundError, RemoteReadError, ShardError):
        check(cfg)
        manifest = dataset(cfg.data_dir)
        result = {"method": cfg.method, **evaluate(cfg, manifest)}
        if cfg.output:
            write_output_file(cfg.output, json.dumps(result, indent=2), COMMAND, _is_own)
    print(summary(cfg, result))
