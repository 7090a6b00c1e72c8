"""Hard prompts and the unified token space (architecture.md §3).

Unified ids: words ``[0, V)``, users ``[V, V+U)``, items ``[V+U, V+U+I)``. A template such as
``"{user} writes the following review for {item}:"`` is split at its placeholders; the word pieces
are tokenized ONCE here and each document is assembled by concatenating those cached word ids with
arithmetic ID tokens. Strings like ``item_123`` are never run through BPE (the original code did,
re-tokenizing every batch with thousands of added tokens).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from transformers import PreTrainedTokenizerBase

DEFAULT_TEMPLATES: dict[str, str] = {
    "collaborative": "{user} has interacted with",
    "review": "{user} writes the following review for {item}:",
    "item_description": "The description of {item} is:",
    "user_description": "The description of {user} is:",
    "recommendation": "{user} has interacted with",
    "recommendation_suffix": ", {user} will interact with",
}

# The template that continues a document (every other one starts it).
CONTINUATION_TEMPLATES = frozenset({"recommendation_suffix"})

# Content document kinds as stored in the content corpus (`kinds.npy`) -> template name.
CONTENT_TEMPLATES: dict[int, str] = {0: "review", 1: "item_description", 2: "user_description"}

_PLACEHOLDER = re.compile(r"\{(user|item)\}")


@dataclass(frozen=True)
class _Piece:
    """One segment of a compiled template: cached word ids, or a user / item slot."""

    kind: str  # "words" | "user" | "item"
    words: np.ndarray | None = None


class PromptBuilder:
    """Builds unified-id sequences from cached template pieces.

    ``vocab_size`` is V, the size of the backbone's word space; it defaults to ``len(tokenizer)``
    and must be given explicitly when the backbone's embedding has more rows than the tokenizer
    (e.g. Qwen), so that the model and the builder agree on where user ids start.

    ``bos_id``: a word id put before every document (each template but a continuation), or None.
    A pretrained LM turns the first position of a sequence into an attention sink whatever it
    holds (SmolLM2: hidden norm 25,000 against 190 at layer 20), so without it the user token
    that starts most documents would be erased.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        templates: Mapping[str, str],
        num_users: int,
        num_items: int,
        vocab_size: int | None = None,
        bos_id: int | None = None,
    ):
        self.tokenizer = tokenizer
        self.vocab_size = len(tokenizer) if vocab_size is None else int(vocab_size)
        if len(tokenizer) > self.vocab_size:
            raise ValueError(
                f"tokenizer has {len(tokenizer)} tokens but the word space is {self.vocab_size}"
            )
        self.num_users, self.num_items = int(num_users), int(num_items)
        missing = sorted(set(DEFAULT_TEMPLATES) - set(templates))
        if missing:
            raise KeyError(f"templates lack {missing}; expected keys {sorted(DEFAULT_TEMPLATES)}")
        self.bos_id = bos_id
        self.templates = {name: self._compile(name, text) for name, text in templates.items()}
        eos = tokenizer.eos_token_id
        if eos is None:
            raise ValueError("the tokenizer has no eos token; content documents end with one")
        self.eos_id = int(eos)
        # Padded positions are masked out of attention and losses; any word id would do, the
        # tokenizer's own pad (or eos) keeps the inputs meaningful to a pretrained LM.
        pad = tokenizer.pad_token_id
        self.pad_id = self.eos_id if pad is None else int(pad)

    # ----- ID tokens --------------------------------------------------------------------------
    def user_tokens(self, users: np.ndarray | int) -> np.ndarray:
        """User indices [n] -> unified ids V + u [n] (int64)."""
        users = np.asarray(users, dtype=np.int64)
        _check_range(users, self.num_users, "user")
        return users + self.vocab_size

    def item_tokens(self, items: np.ndarray | int) -> np.ndarray:
        """Item indices [n] -> unified ids V + U + i [n] (int64)."""
        items = np.asarray(items, dtype=np.int64)
        _check_range(items, self.num_items, "item")
        return items + self.vocab_size + self.num_users

    # ----- templates and text -----------------------------------------------------------------
    def prompt(self, name: str, user: int = -1, item: int = -1) -> np.ndarray:
        """Render template ``name`` for one user / item -> unified ids [P] (int64)."""
        parts = []
        for piece in self.templates[name]:
            if piece.kind == "words":
                parts.append(piece.words)
            elif piece.kind == "user":
                parts.append(self.user_tokens(np.array([user])))
            else:
                parts.append(self.item_tokens(np.array([item])))
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def encode_texts(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Main texts -> word ids per text (no special tokens).

        A single space is put before each text: it follows the prompt's final ``:`` in the
        document, and byte-level BPE encodes a word differently at the start of a string.
        """
        if not texts:
            return []
        ids = self.tokenizer([" " + t.strip() for t in texts], add_special_tokens=False)
        return [np.asarray(x, dtype=np.int64) for x in ids["input_ids"]]

    def _compile(self, name: str, text: str) -> list[_Piece]:
        rest = _PLACEHOLDER.sub("", text)
        if "{" in rest or "}" in rest:
            raise ValueError(f"template {name!r} has a placeholder other than {{user}}/{{item}}")
        pieces: list[_Piece] = []
        if self.bos_id is not None and name not in CONTINUATION_TEMPLATES:
            pieces.append(_Piece("words", np.array([self.bos_id], dtype=np.int64)))
        pos = 0
        for m in _PLACEHOLDER.finditer(text):
            # The words before a slot lose trailing spaces: the ID token is a word of its own,
            # and a dangling space would become a separate BPE token.
            self._add_words(pieces, text[pos : m.start()].rstrip())
            pieces.append(_Piece(m.group(1)))
            pos = m.end()
        self._add_words(pieces, text[pos:])
        return pieces

    def _add_words(self, pieces: list[_Piece], text: str) -> None:
        if not text:
            return
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        pieces.append(_Piece("words", np.asarray(ids, dtype=np.int64)))


def _check_range(values: np.ndarray, n: int, what: str) -> None:
    if values.size and (values.min() < 0 or values.max() >= n):
        raise IndexError(
            f"{what} index out of range [0, {n}): min={values.min()}, max={values.max()}"
        )


__all__ = ["CONTENT_TEMPLATES", "DEFAULT_TEMPLATES", "PromptBuilder"]
