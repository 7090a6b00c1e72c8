"""Helpers of the model tests: a tiny byte-level BPE tokenizer (like data_prep's) and tiny configs."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from cllm4rec_dist.config import ModelConfig

CORPUS = [
    "has interacted with, will interact with",
    "writes the following review for the item: great product, works well.",
    "The description of this item is: a small red lamp for the desk.",
    "The description of this user is: likes lamps, books and music.",
    "Terrible battery. Would not buy again. The screen is bright and sharp.",
    "A fine book about the history of music, easy to read and well written.",
]


def tiny_model_cfg(**overrides) -> ModelConfig:
    """A debug backbone config: hidden 32, 2 layers, fp32, frozen (override any field)."""
    base = ModelConfig(
        source="debug",
        hidden_size=32,
        num_layers=2,
        num_heads=4,
        intermediate_size=64,
        max_position_embeddings=256,
        cache_dir="/nonexistent",
    )
    return replace(base, **overrides)


def write_tokenizer(path: Path, vocab_size: int = 400) -> Path:
    """Train a byte-level BPE with <pad>, <eos>, <unk> on CORPUS and save it as tokenizer.json."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<eos>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    tok.save(str(path))
    return path
