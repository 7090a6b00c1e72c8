"""Top-k recommendations for every user, written as Parquet by each rank.

Each rank scores its own users (its share of the recommendation corpus, or of the users
``predict.users`` names: the dataset's cold users or a file of histories) against all items —
against its local item shard when the table is partitioned, merged to the exact global top-k by
the item-parallel scorer — with the user's seen items masked, and the dataset's cold items too
unless ``predict.cold_items=include``. Indices are mapped back to the catalog's raw ids through
the dataset's ID maps.

Output: ``<dir>/part-rank{r:05d}.parquet`` (columns ``user`` string, ``items`` list<string>,
``scores`` list<float32>) and ``<dir>/manifest.json`` listing the parts with their row counts.
"""

from __future__ import annotations

import json
import math
from enum import StrEnum
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from cllm4rec_dist.cli.outputs import begin_staged, publish, staging_path
from cllm4rec_dist.data import location
from cllm4rec_dist.data.cold import cold_user_rows, dataset_cold_mask, history_rows
from cllm4rec_dist.data.id_maps import raw_ids_by_index
from cllm4rec_dist.data.shards import iter_rows, rows_per_rank
from cllm4rec_dist.distributed import env

if TYPE_CHECKING:
    from cllm4rec_dist.config import TrainConfig


class ColdItems(StrEnum):
    """``predict.cold_items``: whether the dataset's cold items may be recommended."""

    exclude = "exclude"  # masked: they have no trained rows
    include = "include"  # ranked: their rows were inferred (launchers/infer_items.py)


COMMAND = "predict"

# Users per Parquet row group (and the most results a rank holds before writing them).
ROW_GROUP_USERS = 65536
SCHEMA = pa.schema(
    [("user", pa.string()), ("items", pa.list_(pa.string())), ("scores", pa.list_(pa.float32()))]
)


def _result_table(
    users: np.ndarray,
    items: torch.Tensor,
    scores: torch.Tensor,
    user_ids: pa.Array,
    item_ids: pa.Array,
) -> pa.Table:
    """One batch's top-k as raw ids: padding (item -1) is dropped from each user's lists."""
    it, sc = items.numpy(), scores.numpy().astype(np.float32)
    valid = it >= 0
    offsets = pa.array(np.concatenate([[0], np.cumsum(valid.sum(1))]).astype(np.int32))
    return pa.table(
        {
            "user": user_ids.take(pa.array(users)).cast(pa.string()),
            "items": pa.ListArray.from_arrays(
                offsets, item_ids.take(pa.array(it[valid])).cast(pa.string())
            ),
            "scores": pa.ListArray.from_arrays(offsets, pa.array(sc[valid], pa.float32())),
        },
        schema=SCHEMA,
    )


def _user_rows(cfg: TrainConfig, manifest: Any, rank: int, world: int) -> tuple[Any, int]:
    """(this rank's rows, the most rows any rank has) for ``predict.users``."""
    if cfg.predict.users == "corpus":
        rows = iter_rows(cfg.data.dir, "recommendation", rank=rank, world_size=world, shuffle=False)
        return rows, max(rows_per_rank(manifest, "recommendation", world))
    if cfg.predict.users == "cold":
        listed = cold_user_rows(cfg.data.dir)
    else:
        listed = history_rows(cfg.predict.users, cfg.data.dir)
    return iter(listed[rank::world]), math.ceil(len(listed) / world)


def _excluded_cold(cfg: TrainConfig, manifest: Any) -> np.ndarray:
    """The dataset's cold items when ``predict.cold_items=exclude`` (none otherwise)."""
    if cfg.predict.cold_items == ColdItems.include:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(dataset_cold_mask(manifest, "items")).astype(np.int64)


def _add_exclusions(batch: Any, extra: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch's exclusion CSR with ``extra`` items appended to every row."""
    if len(extra) == 0:
        return batch.exclude_offsets, batch.exclude_items
    offsets, items = batch.exclude_offsets.cpu(), batch.exclude_items.cpu()
    more = torch.from_numpy(extra)
    rows = [torch.cat([items[offsets[r] : offsets[r + 1]], more]) for r in range(len(offsets) - 1)]
    new_offsets = torch.zeros(len(rows) + 1, dtype=torch.int64)
    new_offsets[1:] = torch.cumsum(torch.tensor([len(r) for r in rows], dtype=torch.int64), 0)
    flat = torch.cat(rows) if rows else items
    device = batch.exclude_items.device
    return new_offsets.to(device), flat.to(device)


def is_predictions(path: Path) -> bool:
    """Predictions written before output directories were marked: a manifest listing parts."""
    try:
        return "parts" in json.loads((Path(path) / "manifest.json").read_text())
    except (OSError, ValueError, TypeError):
        return False


@torch.no_grad()
def predict(built: Any, cfg: TrainConfig) -> Path:
    """Collective: write this rank's part; rank 0 writes the manifest. Returns the output dir,
    replaced as a whole (built in a temporary sibling, then renamed)."""
    rank, world = env.rank(), env.world_size()
    out_dir = Path(cfg.predict.output_dir)
    data_dir = location.normalize(cfg.data.dir)
    manifest = built.manifest
    k, bs = min(cfg.predict.k, manifest.num_items), cfg.predict.batch_size
    # Every user is ranked: the exclusion rule of the split, but users without held-out items too.
    split = cfg.predict.split
    rows, most_rows = _user_rows(cfg, manifest, rank, world)
    n_batches = math.ceil(most_rows / bs)
    cold = _excluded_cold(cfg, manifest)
    user_ids = raw_ids_by_index(data_dir, "users")
    item_ids = raw_ids_by_index(data_dir, "items")
    if rank == 0:
        begin_staged(out_dir, COMMAND, is_predictions)
    env.barrier()
    staging = staging_path(out_dir)
    name = f"part-rank{rank:05d}.parquet"
    tmp = staging / f".{name}.tmp"
    built.model.eval()
    written = 0
    # Streamed: a row group is written every ROW_GROUP_USERS users, so memory stays at one
    # group of results whatever the number of users this rank serves.
    with pq.ParquetWriter(tmp, SCHEMA) as writer:
        pending: list[pa.Table] = []
        for _ in range(n_batches):
            chunk = list(islice(rows, bs))
            # A one-item placeholder target keeps every user in the batch (targets are unused).
            batch = built.collate_eval([{**r, split: np.zeros(1, np.int64)} for r in chunk], split)
            s, i = built.scorer.topk(
                built.model.user_vectors(batch), k, *_add_exclusions(batch, cold)
            )
            pending.append(
                _result_table(batch.users.cpu().numpy(), i.cpu(), s.cpu(), user_ids, item_ids)
            )
            written += int(batch.users.numel())
            if sum(t.num_rows for t in pending) >= ROW_GROUP_USERS:
                writer.write_table(pa.concat_tables(pending))
                pending = []
        if pending:
            writer.write_table(pa.concat_tables(pending))
    tmp.replace(staging / name)
    counts = env.all_reduce_sum(
        torch.nn.functional.one_hot(torch.tensor(rank), world).double() * written
    )
    if rank == 0:
        parts = [
            {"path": f"part-rank{r:05d}.parquet", "rows": int(counts[r])} for r in range(world)
        ]
        (staging / "manifest.json").write_text(
            json.dumps(
                {
                    "k": k,
                    "split_masked": split,
                    "users_from": cfg.predict.users,
                    "cold_items": cfg.predict.cold_items,
                    "parts": parts,
                    "users": int(counts.sum()),
                    "dataset": data_dir,
                    "model": str(cfg.stage.init_from),
                },
                indent=2,
            )
        )
        publish(staging, out_dir, COMMAND, is_predictions)
    env.barrier()
    return out_dir
