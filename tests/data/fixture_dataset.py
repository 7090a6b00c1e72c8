"""A tiny prepared dataset (manifest + WebDataset shards, architecture.md §1) for the data tests."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import webdataset as wds

NUM_USERS = 23
NUM_ITEMS = 40
NUM_DOCUMENTS = 17
NUM_SHARDS = 4  # the last shard of every corpus is an empty pad shard
BLOCK_ROWS = 3


def user_items(user: int) -> np.ndarray:
    """The collaborative history of a fixture user (1 to 5 items)."""
    return (np.arange(user % 5 + 1, dtype=np.int64) * 7 + user) % NUM_ITEMS


def user_splits(user: int) -> dict[str, np.ndarray]:
    """The recommendation train/val/test items of a fixture user (val may be empty)."""
    items = user_items(user)
    return {"train": items, "val": items[:1] if user % 2 else items[:0], "test": items[-1:] + 1}


def document(doc: int) -> dict:
    """Content document ``doc``: kind cycles review / item / user description."""
    kind = doc % 3
    return {
        "kind": kind,
        "user": doc % NUM_USERS if kind != 1 else -1,
        "item": doc % NUM_ITEMS if kind != 2 else -1,
        "text": f"document {doc} ünïcode",
    }


def _csr(arrays: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(a) for a in arrays])
    values = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int64)
    return offsets, values.astype(np.int64)


def _block(corpus: str, ids: list[int]) -> dict:
    if corpus == "collaborative":
        offsets, items = _csr([user_items(u) for u in ids])
        return {
            "users.npy": np.array(ids, np.int64),
            "items_offsets.npy": offsets,
            "items.npy": items,
        }
    if corpus == "recommendation":
        sample = {"users.npy": np.array(ids, np.int64)}
        for split in ("train", "val", "test"):
            offsets, items = _csr([user_splits(u)[split] for u in ids])
            sample |= {f"{split}_offsets.npy": offsets, f"{split}_items.npy": items}
        return sample
    docs = [document(d) for d in ids]
    return {
        "kinds.npy": np.array([d["kind"] for d in docs], np.int64),
        "users.npy": np.array([d["user"] for d in docs], np.int64),
        "items.npy": np.array([d["item"] for d in docs], np.int64),
        "texts.json": [d["text"] for d in docs],
    }


def _write_corpus(root: Path, corpus: str, num_rows: int) -> dict:
    (root / corpus).mkdir()
    # Uneven shards (so skipping by counts is exercised), the last one empty padding.
    bounds = np.linspace(0, num_rows, NUM_SHARDS, dtype=int)
    bounds[1] -= 2
    row_key = "documents" if corpus == "content" else "users"
    shards = []
    for index in range(NUM_SHARDS):
        ids = list(range(bounds[index], bounds[index + 1])) if index < NUM_SHARDS - 1 else []
        rel = f"{corpus}/shard-{index:06d}.tar"
        blocks = [ids[i : i + BLOCK_ROWS] for i in range(0, len(ids), BLOCK_ROWS)]
        with wds.TarWriter(str(root / rel)) as sink:
            for b, block_ids in enumerate(blocks):
                sink.write({"__key__": f"b{index:06d}{b:06d}"} | _block(corpus, block_ids))
        data = (root / rel).read_bytes()
        shards.append(
            {
                "path": rel,
                "samples": len(blocks),
                row_key: len(ids),
                "sha256": hashlib.sha256(data).hexdigest(),
                "bytes": len(data),
            }
        )
    return {"shards": shards, "num_shards": NUM_SHARDS}


def write_dataset(root: Path) -> Path:
    """Write manifest.json and the three corpora under ``root``; returns ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    corpora = {
        "collaborative": _write_corpus(root, "collaborative", NUM_USERS),
        "recommendation": _write_corpus(root, "recommendation", NUM_USERS),
        "content": _write_corpus(root, "content", NUM_DOCUMENTS),
    }
    manifest = {
        "schema_version": 1,
        "source": {"name": "fixture", "path": "none"},
        "config": {"shard_multiple": NUM_SHARDS},
        "seed": 0,
        "counts": {
            "users": NUM_USERS,
            "items": NUM_ITEMS,
            "interactions": {"train": 60, "val": 11, "test": 23},
            "evaluated_users": {"val": 11, "test": 23},
            "documents": {"review": 6, "item": 6, "user": 5},
        },
        "prompts": {"collaborative": "<user> has interacted with"},
        "corpora": corpora,
        "rejected": {"bad_json": 1},
        "tokenizer": "tokenizer/tokenizer.json",
        "created_by": "cllm4rec_dist test fixture",
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return root
