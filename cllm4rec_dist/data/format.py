"""The on-disk contract of a prepared dataset (docs/architecture.md §1), in one place.

``data_prep`` writes through these names and the readers in ``cllm4rec_dist.data`` read through
them: the schema version, the manifest's file name and required fields, the corpora and what
their rows are, the member names of a WebDataset sample, and the slot syntax of the prompt
templates with its conversion to the ``PromptBuilder``'s.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
REQUIRED_FIELDS = (
    "schema_version", "source", "config", "seed", "counts", "prompts", "corpora", "rejected",
    "tokenizer", "created_by",
)  # fmt: skip

SPLITS = ("train", "val", "test")
CORPORA = ("collaborative", "content", "recommendation")
# What the rows of each corpus are; also the name of the count in the manifest's shard entry.
ROW_FIELD = {"collaborative": "users", "content": "documents", "recommendation": "users"}
ROW_KEYS = tuple(dict.fromkeys(ROW_FIELD.values()))  # ("users", "documents")

# Members of a sample (WebDataset key = the member name up to its first dot). A user corpus holds
# ``users.npy`` and, per split it carries, a CSR pair (offsets, items) of .npy members.
USERS_MEMBER = "users.npy"
USER_CSR = {
    "collaborative": {"train": ("items_offsets.npy", "items.npy")},
    "recommendation": {name: (f"{name}_offsets.npy", f"{name}_items.npy") for name in SPLITS},
}
CONTENT_MEMBERS = ("kinds.npy", "users.npy", "items.npy", "texts.json")

# Prompt templates (manifest ``prompts``) mark ID tokens with these slots.
USER_SLOT, ITEM_SLOT, ITEMS_SLOT = "<user>", "<item>", "<items>"
SLOT_PATTERN = re.compile(r"<(user|item|items)>")


def member_key(member: str) -> str:
    """The name a decoded sample holds a member under: ``items_offsets.npy`` -> ``items_offsets``."""
    return member.split(".", 1)[0]


def prompt_builder_templates(prompts: dict[str, str]) -> dict[str, str]:
    """Manifest templates (``<user>``, ``<item>``, ``<items>`` slots) -> PromptBuilder templates
    (``{user}``/``{item}``; the recommendation prompt split at ``<items>`` into
    ``recommendation`` and ``recommendation_suffix``)."""
    out = {}
    for name, text in prompts.items():
        text = text.replace(USER_SLOT, "{user}").replace(ITEM_SLOT, "{item}")
        if name == "recommendation":
            head, sep, tail = text.partition(ITEMS_SLOT)
            if not sep:
                raise ValueError(f"manifest prompt 'recommendation' has no <items> slot: {text!r}")
            out["recommendation"], out["recommendation_suffix"] = head.rstrip(), tail
        else:
            out[name] = text
    return out


def sha256_file(path: Path, block: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes (the digest the manifest records for every file)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            digest.update(chunk)
    return digest.hexdigest()
