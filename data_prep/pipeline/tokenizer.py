"""Byte-level BPE for the tiny backbone, trained on a bounded sample of the content text."""

from __future__ import annotations

import re
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from cllm4rec_dist.data.format import SLOT_PATTERN
from data_prep.pipeline.arrowio import write_bytes_atomic

SPECIAL_TOKENS = ["<pad>", "<eos>", "<unk>"]
# Repeat the prompt templates so their words survive the merge ranking even beside a large
# corpus (they occur in every training document).
PROMPT_REPEATS = 64
# BPE training costs about the square of one word's length (a 5 MB review without whitespace
# took hours, ignoring SIGINT), so the sample is bounded before training: longer runs of
# non-space characters are cut to MAX_WORD_CHARS, texts to MAX_TEXT_CHARS. This only shapes the
# vocabulary; the texts in the shards are not changed.
MAX_WORD_CHARS = 64
MAX_TEXT_CHARS = 20_000
_LONG_WORD = re.compile(rf"\S{{{MAX_WORD_CHARS + 1},}}")


def bounded(text: str) -> str:
    """``text`` cut to MAX_TEXT_CHARS, every longer word to its first MAX_WORD_CHARS chars."""
    text = text[:MAX_TEXT_CHARS]
    return _LONG_WORD.sub(lambda m: m.group(0)[:MAX_WORD_CHARS], text)


def prompt_words(templates: list[str]) -> list[str]:
    """Templates without their ``<user>``/``<item>``/``<items>`` placeholders."""
    return [" ".join(SLOT_PATTERN.sub(" ", t).split()) for t in templates]


def train_tokenizer(
    texts: list[str], templates: list[str], vocab_size: int, min_frequency: int, path: Path
) -> None:
    """Train a byte-level BPE (special tokens ``<pad>`` ``<eos>`` ``<unk>`` = ids 0, 1, 2) on
    ``texts`` plus the prompt words and save it as ``tokenizers`` JSON at ``path``.

    With no texts at all it is trained on the prompt words alone (a valid, smaller vocabulary).
    Texts are ``bounded`` first, so one pathological text cannot stall training.
    """
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [bounded(t) for t in texts] + prompt_words(templates) * PROMPT_REPEATS
    tokenizer.train_from_iterator(corpus, trainer=trainer, length=len(corpus))
    write_bytes_atomic(path, tokenizer.to_str(pretty=True).encode("utf-8"))
