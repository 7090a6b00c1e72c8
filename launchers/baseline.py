"""Baseline rankers on a prepared dataset, with CLLM4Rec's split, masking and metrics:

python launchers/baseline.py data_dir=<prepared dir> method=popularity|ease|multvae output=metrics.json
"""

import json
from pathlib import Path

import hydra
from omegaconf import OmegaConf

from cllm4rec_dist.baselines.config import register_baseline
from cllm4rec_dist.baselines.ease import evaluate_ease
from cllm4rec_dist.baselines.multvae import evaluate_multvae
from cllm4rec_dist.baselines.popularity import evaluate_popularity
from cllm4rec_dist.data.manifest import load_manifest

register_baseline()
METHODS = {
    "popularity": lambda cfg, manifest: evaluate_popularity(cfg.data_dir, manifest, list(cfg.ks)),
    "ease": lambda cfg, manifest: evaluate_ease(
        cfg.data_dir, manifest, list(cfg.ks), tuple(cfg.lambdas), cfg.select_metric
    ),
    "multvae": lambda cfg, manifest: evaluate_multvae(
        cfg.data_dir, manifest, list(cfg.ks), OmegaConf.to_object(cfg.multvae), cfg.select_metric
    ),
}


@hydra.main(config_path="../configs", config_name="baseline", version_base="1.3")
def main(cfg) -> None:
    if cfg.method not in METHODS:
        raise SystemExit(f"invalid config `method`: {cfg.method!r} is not one of {sorted(METHODS)}")
    metric, _, k = cfg.select_metric.partition("@")
    if metric not in ("recall", "ndcg") or not k.isdigit() or int(k) not in cfg.ks:
        raise SystemExit("invalid config `select_metric`: must be recall@K or ndcg@K with K in ks")
    manifest = load_manifest(cfg.data_dir)
    result = METHODS[cfg.method](cfg, manifest)
    text = json.dumps({"method": cfg.method, **result}, indent=2)
    print(text)
    if cfg.output:
        Path(cfg.output).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.output).write_text(text)


if __name__ == "__main__":
    main()
