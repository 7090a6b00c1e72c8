"""What the launchers of a trained, frozen model run: ``launchers/predict.py`` (top-k for every
user, eval/predict.py) and ``launchers/infer_items.py`` / ``launchers/fold_in.py``: load an
export, fit the new rows with the model frozen, write a new export that ``predict`` /
``evaluate`` / a later stage load.

One process: the rows of a day's new items or users are few and independent, and the tables
are loaded dense. The new export is the old one with its tables rewritten for this dataset (a
grown catalog's new rows included: that is how new users' rows are appended) and a record of
what was inferred in ``meta.json["inferred"]``; any world size loads it, each rank its range.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow.compute as pc

from cllm4rec_dist.cli.console import grid, paths
from cllm4rec_dist.cli.outputs import check_output_dir
from cllm4rec_dist.config import InferConfig, InferMethod, TrainConfig
from cllm4rec_dist.data import location
from cllm4rec_dist.data.cold import (
    cold_item_texts,
    cold_user_rows,
    history_rows,
    trained_item_texts,
)
from cllm4rec_dist.data.id_maps import IdFileError, indices_of, read_id_file
from cllm4rec_dist.distributed import env
from cllm4rec_dist.export import META, ExportWriter, dataset_assets, read_meta
from cllm4rec_dist.infer.cold_items import (
    ITEM_DESCRIPTION,
    infer_content_rows,
    neighbor_rows,
    place,
    token_rows_mapped,
)
from cllm4rec_dist.infer.fold_in import fold_in_users
from cllm4rec_dist.train.entry import fail_on_user_error, init_export, start

if TYPE_CHECKING:
    from cllm4rec_dist.train.builder import TrainingParts

log = logging.getLogger(__name__)


class InferInputError(ValueError):
    """Nothing to infer, or an output that would overwrite its input."""


# The command that writes an export of each kind of inferred rows (its output marker).
COMMANDS = {"items": "infer_items", "users": "fold_in"}


def _inferred_by(kind: str):
    """An export this command wrote before exports were marked: its last inferred record is
    of ``kind``."""

    def check(path: Path) -> bool:
        try:
            inferred = json.loads((Path(path) / META).read_text()).get("inferred") or []
            return inferred[-1].get("kind") == kind
        except (OSError, ValueError, TypeError, AttributeError, IndexError):
            return False

    return check


def _new_items(infer: InferConfig, data_dir: str) -> tuple[np.ndarray, list[str]]:
    """(item indices, texts): the dataset's cold items, or ``infer.items_file``'s."""
    path = infer.items_file
    if path is None:
        table = cold_item_texts(data_dir)
        return table["item"].to_numpy(), table["text"].to_pylist()
    table = read_id_file(path, ("item", "text"))
    empty = pc.sum(pc.is_null(table["text"])).as_py() or 0
    if empty:
        raise IdFileError(f"{path}: {empty} item(s) without text")
    items = indices_of(path, table["item"], data_dir, "items")
    if len(np.unique(items)) != len(items):
        raise IdFileError(f"{path}: an item appears more than once")
    return items, table["text"].to_pylist()


def _new_users(infer: InferConfig, data_dir: str) -> list[dict]:
    """History rows: the dataset's cold users' train pairs, or ``infer.users_file``'s."""
    if infer.users_file is None:
        return cold_user_rows(data_dir)
    return history_rows(infer.users_file, data_dir)


def export_inferred(built: TrainingParts, cfg: TrainConfig, record: dict[str, Any]) -> Path:
    """``infer.output_dir``: the init_from export with every table rewritten from ``built`` and
    made this dataset's (a grown catalog's export has the grown sizes, its new rows as loaded),
    and ``record`` appended to its meta's ``inferred``."""
    src, out = Path(cfg.stage.init_from), Path(cfg.infer.output_dir)
    meta = read_meta(src)
    kind = record["kind"]
    with ExportWriter(out, COMMANDS[kind], _inferred_by(kind), base=src) as writer:
        for name, table in built.tables.items():
            writer.write_table(name, table.weight)
        manifest = built.manifest
        meta.num_users, meta.num_items = manifest.num_users, manifest.num_items
        meta.data_dir = location.normalize(cfg.data.dir)
        meta.dataset = manifest.fingerprint
        meta.inferred.append({**record, "from": str(src)})
        # The serving files of this dataset (a grown catalog's ids, the new users' histories);
        # cold items become ranked once any export on the way inferred their rows.
        prompts = built.collator.builder
        items_inferred = any(r.get("kind") == "items" for r in meta.inferred)
        assets = dataset_assets(
            manifest, prompts.tokenizer, prompts.bos_id, built.collator.max_items, items_inferred
        )
        writer.write_assets(assets, meta)
        return writer.commit(meta)


def check_output(cfg: TrainConfig, kind: str) -> None:
    """Before any work: ``infer.output_dir`` is not the export read, and may be written."""
    src, out = Path(cfg.stage.init_from), Path(cfg.infer.output_dir)
    if out.resolve() == src.resolve():
        raise InferInputError(f"infer.output_dir={out} is stage.init_from: write a new export")
    check_output_dir(out, COMMANDS[kind], _inferred_by(kind))


def _begin(cfg: TrainConfig, kind: str) -> None:
    """Validate, then refuse (before reading anything) a world of several ranks, a missing
    export and an output it may not write."""
    start(cfg)
    if env.world_size() != 1:
        raise InferInputError(
            "inferring rows runs in one process: launch it with python, not deepspeed"
        )
    init_export(cfg, "infer")
    check_output(cfg, kind)


def _build(cfg: TrainConfig) -> TrainingParts:
    from cllm4rec_dist.train.builder import build

    return build(cfg)


def infer_items(cfg: TrainConfig) -> dict[str, Any]:
    """Rows for the new items from their text (``infer.method``), written as a new export;
    returns the record written to its meta.json."""
    _begin(cfg, "items")
    items, texts = _new_items(cfg.infer, cfg.data.dir)
    if len(items) == 0:
        raise InferInputError(
            f"no new items: the dataset {cfg.data.dir} has no cold items "
            "(data prep split.cold_item_fraction); name them with infer.items_file"
        )
    built = _build(cfg)
    inf = cfg.infer
    record: dict[str, Any] = {"kind": "items", "count": int(len(items)), "method": inf.method}
    if inf.method == InferMethod.text_neighbors:
        known = trained_item_texts(cfg.data.dir, ITEM_DESCRIPTION)
        used = neighbor_rows(
            built, items, texts, known, inf.neighbors,
            lm_weight=inf.neighbor_lm_weight, max_tokens=cfg.data.max_text_tokens,
        )  # fmt: skip
        record.update(
            neighbors=inf.neighbors, lm_weight=inf.neighbor_lm_weight,
            trained_items_with_text=used,
        )  # fmt: skip
    elif inf.method == InferMethod.lm_tokens:
        known = trained_item_texts(cfg.data.dir, ITEM_DESCRIPTION)
        fit = token_rows_mapped(built, items, texts, known, cfg.data.max_text_tokens, inf.ridge)
        record.update(ridge=inf.ridge, map_fit=fit)
    else:
        losses = infer_content_rows(
            built, items, texts, steps=inf.steps, lr=inf.item_lr, batch_size=inf.batch_size
        )
        report = place(built, items, inf.placement, inf.ridge)
        record.update(
            placement=inf.placement, steps=inf.steps, lr=inf.item_lr,
            final_word_ce=float(np.mean(losses)), warm_alignment=report,
        )  # fmt: skip
    out = export_inferred(built, cfg, record)
    log.info("inferred %d items -> %s: %s", len(items), out, json.dumps(record))
    return {**record, "export": str(out)}


def fold_in(cfg: TrainConfig) -> dict[str, Any]:
    """Fit the new users' collaborative rows from their history, write the export."""
    _begin(cfg, "users")
    rows = _new_users(cfg.infer, cfg.data.dir)
    if not rows:
        raise InferInputError(
            f"no new users: the dataset {cfg.data.dir} has no cold users "
            "(data prep split.cold_user_fraction); name them with infer.users_file"
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
    out = export_inferred(built, cfg, record)
    log.info("folded in %d users -> %s: %s", len(rows), out, json.dumps(record))
    return {**record, "export": str(out)}


def summary(record: dict[str, Any]) -> str:
    """The terminal's end of an inference: what was fitted (a row of its record), and where."""
    shown = {k: v for k, v in record.items() if k != "export" and not isinstance(v, dict | list)}
    lines = [grid(list(shown), [list(shown.values())]), paths({"export": record["export"]})]
    return "\n".join(lines)


def run_predict(cfg: TrainConfig) -> None:
    fail_on_user_error(_run_predict, cfg)


def _run_predict(cfg: TrainConfig) -> None:
    """Write top-k recommendations of ``stage.init_from`` for every user (launchers/predict.py)."""
    start(cfg)
    init_export(cfg, "predict")
    from cllm4rec_dist.eval.predict import COMMAND, is_predictions, predict
    from cllm4rec_dist.train.builder import build

    check_output_dir(cfg.predict.output_dir, COMMAND, is_predictions)
    out = predict(build(cfg), cfg)
    if env.rank() == 0:
        written = json.loads((out / "manifest.json").read_text())
        print(f"predict: top-{written['k']} items for {written['users']} users")
        print(paths({"predictions": out, "manifest": out / "manifest.json"}))


def run_infer_items(cfg: TrainConfig) -> None:
    print(summary(fail_on_user_error(infer_items, cfg, (InferInputError,))))


def run_fold_in(cfg: TrainConfig) -> None:
    print(summary(fail_on_user_error(fold_in, cfg, (InferInputError,))))


__all__ = [
    "InferInputError",
    "export_inferred",
    "fold_in",
    "infer_items",
    "run_fold_in",
    "run_infer_items",
    "run_predict",
]
