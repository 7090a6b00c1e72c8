"""Cold users and items held out of training by data prep (``split.cold_item_fraction``,
``split.cold_user_fraction``), for the cold-start and fold-in studies.

- A **cold item** keeps its id and its validation and test pairs, but its train pairs, its
  reviews and its description are left out of every training file (corpora and ``splits/``). Its
  description is written to ``cold/items/part-*.parquet`` (item, text): the text a new item
  arrives with.
- A **cold user** keeps its id, but none of its pairs or texts are in the training files: every
  pair goes to ``cold/users/part-*.parquet`` (user, item, split code), the history a new user
  arrives with (train) and what they go on to interact with (val, test).

Which ids are cold is a function of (seed, catalog size, fraction) only, so every data-prep task
and every later reader derives the same set without a file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cllm4rec_dist.data.format import SPLITS
from cllm4rec_dist.data.id_maps import indices_of, read_id_file
from cllm4rec_dist.data.manifest import Manifest, load_manifest

# Distinct streams of np.random.default_rng([seed, stream]) for the two draws.
_ITEM_STREAM, _USER_STREAM = 0xC01D, 0xC01E
COLD_ITEM_TEXTS = "cold/items"
COLD_USER_PAIRS = "cold/users"
ITEM_TEXT_SCHEMA = pa.schema([("item", pa.int64()), ("text", pa.string())])
USER_PAIR_SCHEMA = pa.schema([("user", pa.int64()), ("item", pa.int64()), ("split", pa.int8())])


def cold_ids(seed: int, n: int, fraction: float, kind: str) -> np.ndarray:
    """The cold indices among [0, n) of ``kind`` (users | items): the first round(fraction * n)
    of a permutation seeded by (seed, kind), sorted."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"cold {kind} fraction must be in [0, 1), got {fraction}")
    stream = {"items": _ITEM_STREAM, "users": _USER_STREAM}[kind]
    take = int(round(fraction * n))
    if take == 0:  # no permutation of every id for nothing (data prep asks once per bucket)
        return np.zeros(0, dtype=np.int64)
    return np.sort(np.random.default_rng([seed, stream]).permutation(n)[:take]).astype(np.int64)


def cold_mask(seed: int, n: int, fraction: float, kind: str) -> np.ndarray:
    """bool [n]: whether each index of ``kind`` is cold (``cold_ids`` as a mask)."""
    mask = np.zeros(n, dtype=bool)
    mask[cold_ids(seed, n, fraction, kind)] = True
    return mask


def _read_parts(data_dir: str | Path, folder: str, schema: pa.Schema) -> pa.Table:
    """The ``part-*.parquet`` files of ``folder`` that the manifest lists (digest-checked; a
    remote dataset cannot be globbed), concatenated."""
    manifest = load_manifest(data_dir)
    tables = [
        pq.read_table(pa.BufferReader(manifest.read_file(part)), schema=schema)
        for part in manifest.files_under(folder)
        if Path(part).name.startswith("part-") and part.endswith(".parquet")
    ]
    return pa.concat_tables(tables) if tables else schema.empty_table()


def cold_item_texts(data_dir: str | Path) -> pa.Table:
    """(item, text) of the cold items that have a description, item ascending."""
    return _read_parts(data_dir, COLD_ITEM_TEXTS, ITEM_TEXT_SCHEMA).sort_by("item")


def trained_item_texts(data_dir: str | Path, item_description_kind: int) -> dict[int, str]:
    """item -> description of every item whose description is in the content corpus (the
    trained items; cold ones are in ``cold/items`` instead)."""
    from cllm4rec_dist.data.shards import iter_rows

    return {
        int(row["item"]): row["text"]
        for row in iter_rows(data_dir, "content", shuffle=False)
        if int(row["kind"]) == item_description_kind
    }


def rows_of_pairs(users: np.ndarray, items: np.ndarray, splits: np.ndarray) -> list[dict]:
    """(user, item, split code) pairs as recommendation rows ({"user", "train", "val", "test"},
    items ascending, a repeated pair once), user ascending: what the collator and the
    evaluation rule take."""
    if len(users) == 0:
        return []
    order = np.lexsort((items, users))
    users, items, splits = users[order], items[order], splits[order]
    first = np.r_[True, (users[1:] != users[:-1]) | (items[1:] != items[:-1])]
    users, items, splits = users[first], items[first], splits[first]
    bounds = np.flatnonzero(np.r_[True, users[1:] != users[:-1], True])
    rows = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        row: dict = {"user": int(users[lo])}
        for code, name in enumerate(SPLITS):
            row[name] = items[lo:hi][splits[lo:hi] == code]
        rows.append(row)
    return rows


def cold_user_rows(data_dir: str | Path) -> list[dict]:
    """The cold users' pairs as recommendation rows (``rows_of_pairs``)."""
    table = _read_parts(data_dir, COLD_USER_PAIRS, USER_PAIR_SCHEMA)
    return rows_of_pairs(
        table["user"].to_numpy(), table["item"].to_numpy(), table["split"].to_numpy()
    )


def history_rows(path: str | Path, data_dir: str | Path) -> list[dict]:
    """A (user, item) raw-id file of new users' histories as recommendation rows: the items
    are the user's train items, val and test empty (``rows_of_pairs``)."""
    table = read_id_file(path, ("user", "item"))
    users = indices_of(path, table["user"], data_dir, "users")
    items = indices_of(path, table["item"], data_dir, "items")
    return rows_of_pairs(users, items, np.zeros(len(users), dtype=np.int8))


def dataset_cold_mask(manifest: Manifest, kind: str) -> np.ndarray:
    """bool [n]: whether each id of ``kind`` is cold in this dataset (``cold_mask``)."""
    fraction = manifest.config.get("split", {}).get(f"cold_{kind[:-1]}_fraction", 0.0)
    n = manifest.num_items if kind == "items" else manifest.num_users
    return cold_mask(manifest.seed, n, fraction, kind)


__all__ = [
    "COLD_ITEM_TEXTS",
    "COLD_USER_PAIRS",
    "ITEM_TEXT_SCHEMA",
    "USER_PAIR_SCHEMA",
    "cold_ids",
    "cold_item_texts",
    "cold_mask",
    "cold_user_rows",
    "dataset_cold_mask",
    "history_rows",
    "rows_of_pairs",
    "trained_item_texts",
]
