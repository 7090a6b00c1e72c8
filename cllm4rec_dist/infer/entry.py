"""``launchers/infer_items.py`` and ``launchers/fold_in.py``: load an export, fit the new rows
with the model frozen, write a new export that ``predict`` / ``evaluate`` / a later stage load.

One process: the rows of a day's new items or users are few and independent, and the tables
are loaded dense. The new export is the old one with its tables rewritten for this dataset (a
grown catalog's new rows included: that is how new users' rows are appended) and a record of
what was inferred in ``meta.json["inferred"]``; any world size loads it, each rank its range.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
from safetensors.torch import save_file

from cllm4rec_dist.data.cold import (
    cold_item_texts,
    cold_user_rows,
    history_rows,
    trained_item_texts,
)
from cllm4rec_dist.data.id_maps import IdFileError, indices_of, read_id_file
from cllm4rec_dist.distributed import env
from cllm4rec_dist.infer.cold_items import (
    ITEM_DESCRIPTION,
    infer_content_rows,
    neighbor_rows,
    place,
)
from cllm4rec_dist.infer.fold_in import fold_in_users
from cllm4rec_dist.train.entry import fail_on_user_error, start

log = logging.getLogger(__name__)


class InferInputError(ValueError):
    """Nothing to infer, or an output that would overwrite its input."""


def _new_items(cfg: Any) -> tuple[np.ndarray, list[str]]:
    """(item indices, texts): the dataset's cold items, or ``infer.items_file``'s."""
    path = cfg.infer.items_file
    if path is None:
        table = cold_item_texts(cfg.data.dir)
        return table["item"].to_numpy(), table["text"].to_pylist()
    table = read_id_file(path, ("item", "text"))
    empty = pc.sum(pc.is_null(table["text"])).as_py() or 0
    if empty:
        raise IdFileError(f"{path}: {empty} item(s) without text")
    items = indices_of(path, table["item"], cfg.data.dir, "items")
    if len(np.unique(items)) != len(items):
        raise IdFileError(f"{path}: an item appears more than once")
    return items, table["text"].to_pylist()


def _new_users(cfg: Any) -> list[dict]:
    """History rows: the dataset's cold users' train pairs, or ``infer.users_file``'s."""
    if cfg.infer.users_file is None:
        return cold_user_rows(cfg.data.dir)
    return history_rows(cfg.infer.users_file, cfg.data.dir)


def write_export(built: Any, cfg: Any, record: dict[str, Any]) -> Path:
    """``infer.output_dir``: the init_from export with every table rewritten from ``built`` and
    made this dataset's (a grown catalog's export has the grown sizes, its new rows as loaded),
    and ``record`` appended to ``meta.json["inferred"]``."""
    src, out = Path(cfg.stage.init_from), Path(cfg.infer.output_dir)
    if out.resolve() == src.resolve():
        raise InferInputError(f"infer.output_dir={out} is stage.init_from: write a new export")
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, ignore=shutil.ignore_patterns("*.safetensors"))
    for name, table in built.tables.items():
        weight = table.weight.detach().cpu().contiguous()
        save_file({"weight": weight}, str(tmp / "tables" / f"{name}.safetensors"))
    meta = json.loads((tmp / "meta.json").read_text())
    manifest = built.manifest
    meta.update(
        num_users=manifest.num_users,
        num_items=manifest.num_items,
        data_dir=str(Path(cfg.data.dir).resolve()),
        dataset=manifest.fingerprint,
    )
    meta.setdefault("inferred", []).append({**record, "from": str(src)})
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def _build(cfg: Any) -> Any:
    start(cfg)
    if env.world_size() != 1:
        raise InferInputError(
            "inferring rows runs in one process: launch it with python, not deepspeed"
        )
    if not cfg.stage.init_from:
        raise InferInputError("stage.init_from must name the export to infer rows for")
    from cllm4rec_dist.train.builder import build

    return build(cfg)


def infer_items(cfg: Any) -> dict[str, Any]:
    """Rows for the new items from their text (``infer.method``), written as a new export;
    returns the record written to its meta.json."""
    items, texts = _new_items(cfg)
    if len(items) == 0:
        raise InferInputError(
            "no new items: the dataset has no cold items and infer.items_file is unset"
        )
    built = _build(cfg)
    inf = cfg.infer
    record: dict[str, Any] = {"kind": "items", "count": int(len(items)), "method": inf.method}
    if inf.method == "text_neighbors":
        known = trained_item_texts(cfg.data.dir, ITEM_DESCRIPTION)
        used = neighbor_rows(built, items, texts, known, inf.neighbors)
        record.update(neighbors=inf.neighbors, trained_items_with_text=used)
    else:
        losses = infer_content_rows(
            built, items, texts, steps=inf.steps, lr=inf.item_lr, batch_size=inf.batch_size
        )
        report = place(built, items, inf.placement, inf.ridge)
        record.update(
            placement=inf.placement, steps=inf.steps, lr=inf.item_lr,
            final_word_ce=float(np.mean(losses)), warm_alignment=report,
        )  # fmt: skip
    out = write_export(built, cfg, record)
    log.info("inferred %d items -> %s: %s", len(items), out, json.dumps(record))
    return {**record, "export": str(out)}


def fold_in(cfg: Any) -> dict[str, Any]:
    """Fit the new users' collaborative rows from their history, write the export."""
    rows = _new_users(cfg)
    if not rows:
        raise InferInputError(
            "no new users: the dataset has no cold users and infer.users_file is unset"
        )
    built = _build(cfg)
    inf = cfg.infer
    losses = fold_in_users(
        built, rows, steps=inf.steps, lr=inf.user_lr, batch_size=inf.batch_size,
        mask_fraction=cfg.stage.mask_fraction, seed=cfg.run.seed,
    )  # fmt: skip
    record = {
        "kind": "users",
        "count": len(rows),
        "steps": inf.steps,
        "lr": inf.user_lr,
        "final_nll": float(np.mean(losses)),
    }
    out = write_export(built, cfg, record)
    log.info("folded in %d users -> %s: %s", len(rows), out, json.dumps(record))
    return {**record, "export": str(out)}


def run_infer_items(cfg: Any) -> None:
    out = fail_on_user_error(infer_items, cfg, (InferInputError,))
    print(json.dumps(out, indent=2))


def run_fold_in(cfg: Any) -> None:
    out = fail_on_user_error(fold_in, cfg, (InferInputError,))
    print(json.dumps(out, indent=2))


__all__ = [
    "InferInputError",
    "fold_in",
    "infer_items",
    "run_fold_in",
    "run_infer_items",
    "write_export",
]
