"""Baseline rankers on a prepared dataset, with CLLM4Rec's split, masking and metrics:

python launchers/baseline.py data_dir=<prepared dir> method=popularity|ease|multvae output=metrics.json
"""

from cllm4rec_dist.cli.app import CONFIGS, run_app

if __name__ == "__main__":
    run_app(
        CONFIGS,
        "baseline",
        task="cllm4rec_dist.baselines.entry:run_baseline",
        schema="cllm4rec_dist.baselines.config:register_baseline",
        loading="torch and the baselines",
    )
