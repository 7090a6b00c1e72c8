"""The cold-start and fold-in study (docs/results.md, "Cold-start items and fold-in users").

Inputs: a dataset prepared with ``split.cold_item_fraction`` / ``split.cold_user_fraction`` and
the model trained on it (its finetuning ``best/``), and the same dataset without cold ids and
its model (the "warm" reference: the same split with every item and user in training).

    python experiments/cold_start.py --cold-data D_COLD --cold-export FT_COLD/best \
        --warm-data D --warm-export FT_WARM/best --out cold_start.json

**Cold items.** Evaluated users: the trained users with a cold item among their held-out
items of the split. Targets: those cold items. Excluded from the ranking: the user's train
items, validation items (test split) and the split's warm items (other positives, not part of
this measure). Ranked over all items and over the cold items only. Rows compared: random rows
(Gaussian with the warm rows' mean and spread: a new item today), the rows training left them
with, the TF-IDF text-similarity baseline, rows inferred from text (``infer/cold_items.py``,
steps / lr / placement chosen on validation), and the warm model's own rows.

**Fold-in users.** The cold users' train items are their history; targets and exclusions are
the usual rule. Rows compared: the mean trained user row (no fold-in), folded-in rows
(``infer/fold_in.py``, steps / lr chosen on validation), and the warm model, which trained them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra import compose, initialize_config_dir

from cllm4rec_dist.baselines.text_similarity import text_similarity_scores, tfidf_matrix
from cllm4rec_dist.config import register
from cllm4rec_dist.data.cold import (
    cold_item_texts,
    cold_user_rows,
    dataset_cold_mask,
    trained_item_texts,
)
from cllm4rec_dist.data.manifest import load_manifest
from cllm4rec_dist.data.shards import iter_rows
from cllm4rec_dist.eval.metrics import MetricSums
from cllm4rec_dist.infer.cold_items import (
    ITEM_DESCRIPTION,
    infer_content_rows,
    neighbor_rows,
    place,
    token_rows_mapped,
)
from cllm4rec_dist.infer.fold_in import fold_in_users
from cllm4rec_dist.infer.rows import start_at_mean
from cllm4rec_dist.ops.topk import masked_topk_scores
from cllm4rec_dist.train.builder import build
from cllm4rec_dist.train.entry import start

REPO = Path(__file__).resolve().parents[1]
KS = [20, 100]
# Adam learning rates tried; each run is evaluated after SNAPSHOTS steps (one chunk of all rows).
LRS = (0.03, 0.1)
SNAPSHOTS = (25, 50, 100)
NEIGHBORS = (5, 10, 20)  # text_neighbors: trained items averaged per cold item
LM_WEIGHTS = (0.0, 0.25, 0.5, 1.0)  # text_neighbors: the LM reading's share of the nearness
RIDGES = (0.1, 1.0, 10.0, 100.0)  # lm_tokens: the ridge of the map from text rows to table rows


def load(data_dir: str, export: str, overrides: list[str]) -> Any:
    """The model of ``export`` on ``data_dir``, one process, dense tables; ``overrides`` name
    the export's model when it is not the default one (``model=smollm2``)."""
    with initialize_config_dir(str(REPO / "configs"), version_base="1.3"):
        cfg = compose("infer", [f"data.dir={data_dir}", f"stage.init_from={export}", *overrides])
    start(cfg)
    return build(cfg)


def corpus_rows(data_dir: str) -> list[dict]:
    return list(iter_rows(data_dir, "recommendation", shuffle=False))


@torch.no_grad()
def user_vectors(built: Any, rows: list[dict]) -> torch.Tensor:
    """[len(rows), H]: the recommendation prompt's last state from each row's train items."""
    out = []
    for lo in range(0, len(rows), 256):
        chunk = [{**r, "test": np.zeros(1, np.int64)} for r in rows[lo : lo + 256]]
        out.append(built.model.user_vectors(built.collate_eval(chunk, "test")).cpu())
    return torch.cat(out) if out else torch.zeros(0, built.model.backbone.hidden_size)


def metrics(scores: torch.Tensor, targets: list[np.ndarray], excludes: list[np.ndarray]) -> dict:
    """Recall@20 / NDCG@100 of score rows with CSR exclusions (ties: lower item first)."""
    if not targets:
        return {"recall@20": float("nan"), "ndcg@100": float("nan"), "users": 0}
    offsets = torch.tensor(np.r_[0, np.cumsum([len(e) for e in excludes])], dtype=torch.int64)
    flat = torch.from_numpy(np.concatenate(excludes).astype(np.int64))
    k = min(max(KS), scores.shape[1])  # a cut-off beyond the catalog ranks every item
    _, items = masked_topk_scores(scores.double(), k, offsets, flat)
    items = torch.nn.functional.pad(items, (0, max(KS) - k), value=-1)
    t_off = torch.tensor(np.r_[0, np.cumsum([len(t) for t in targets])], dtype=torch.int64)
    sums = MetricSums(KS)
    sums.add(items, t_off, torch.from_numpy(np.concatenate(targets).astype(np.int64)))
    means = MetricSums.means_from(KS, sums.as_tensor())
    return {"recall@20": means["recall@20"], "ndcg@100": means["ndcg@100"], "users": means["users"]}


def cold_item_task(rows: list[dict], split: str, cold: np.ndarray, cold_only: bool):
    """(evaluated row positions, targets, exclusions) of the cold-item measure."""
    keep, targets, excludes = [], [], []
    warm_items = np.flatnonzero(~cold)
    for pos, r in enumerate(rows):
        held = np.asarray(r[split], dtype=np.int64)
        target = held[cold[held]]
        if len(target) == 0:
            continue
        parts = [np.asarray(r["train"]), held[~cold[held]]]
        if split == "test":
            parts.append(np.asarray(r["val"]))
        if cold_only:
            parts.append(warm_items)
        keep.append(pos)
        targets.append(target)
        excludes.append(np.unique(np.concatenate(parts)).astype(np.int64))
    return np.asarray(keep, dtype=np.int64), targets, excludes


def users_metrics(built: Any, rows: list[dict]) -> dict:
    """{split: metrics} of ``rows`` under the usual rule (targets: the split's items; excluded:
    train items, and validation items for test), from ``built``'s current user rows."""
    scores = score_table(user_vectors(built, rows), built)
    out = {}
    for split in ("val", "test"):
        keep, targets, excludes = [], [], []
        for pos, r in enumerate(rows):
            if len(r[split]):
                keep.append(pos)
                targets.append(np.asarray(r[split]))
                parts = [np.asarray(r["train"])] + (
                    [np.asarray(r["val"])] if split == "test" else []
                )
                excludes.append(np.unique(np.concatenate(parts)).astype(np.int64))
        out[split] = metrics(scores[keep], targets, excludes)
    return out


def score_table(uv: torch.Tensor, built: Any) -> torch.Tensor:
    return uv @ built.tables["item_collab"].weight.detach().float().T


def item_texts(data_dir: str, num_items: int) -> list[str | None]:
    """Every item's description: the trained ones from the content corpus, the cold ones from
    cold/items (None where an item has none)."""
    texts: list[str | None] = [None] * num_items
    for item, text in trained_item_texts(data_dir, ITEM_DESCRIPTION).items():
        texts[item] = text
    table = cold_item_texts(data_dir)
    for item, text in zip(table["item"].to_pylist(), table["text"].to_pylist()):
        texts[item] = text
    return texts


def evaluate_items(tasks: dict, scores: torch.Tensor) -> dict:
    """{split: {"all": metrics, "cold_only": metrics}} for one [U, I] score matrix."""
    out: dict[str, dict] = {}
    for (split, scope), (keep, targets, excludes) in tasks.items():
        out.setdefault(split, {})[scope] = metrics(scores[keep], targets, excludes)
    return out


def item_tasks(rows: list[dict], cold: np.ndarray) -> dict:
    """Every (split, scope) of the cold-item measure (``cold_item_task``)."""
    return {
        (split, scope): cold_item_task(rows, split, cold, scope == "cold_only")
        for split in ("val", "test")
        for scope in ("all", "cold_only")
    }


def cold_items_study(args: argparse.Namespace, built: Any, rows: list[dict], log: dict) -> None:
    manifest = built.manifest
    cold = dataset_cold_mask(manifest, "items")
    cold_idx = np.flatnonzero(cold)
    tasks = item_tasks(rows, cold)
    uv = user_vectors(built, rows)
    collab = built.tables["item_collab"].weight
    content = built.tables["item_content"].weight
    saved = (collab.detach().clone(), content.detach().clone())

    def restore() -> None:  # the item rows as the trained model has them
        with torch.no_grad():
            collab.copy_(saved[0])
            content.copy_(saved[1])

    results: dict[str, Any] = {"as_trained": evaluate_items(tasks, score_table(uv, built))}

    warm = torch.from_numpy(~cold)
    gen = torch.Generator().manual_seed(0)
    mean, std = saved[0][warm].mean(0), saved[0][warm].std(0)
    with torch.no_grad():
        collab[torch.from_numpy(cold_idx)] = mean + std * torch.randn(
            len(cold_idx), len(mean), generator=gen
        )
    results["random_rows"] = evaluate_items(tasks, score_table(uv, built))

    texts = item_texts(args.cold_data, manifest.num_items)
    vectors = tfidf_matrix(texts)
    histories = [np.asarray(r["train"], dtype=np.int64) for r in rows]
    results["tfidf"] = evaluate_items(
        tasks, torch.from_numpy(text_similarity_scores(vectors, histories))
    )

    known = trained_item_texts(args.cold_data, ITEM_DESCRIPTION)
    cold_texts = cold_item_texts(args.cold_data)
    items, item_txt = cold_texts["item"].to_numpy(), cold_texts["text"].to_pylist()
    neighbors = []
    for k in NEIGHBORS:
        for lm_weight in LM_WEIGHTS:
            restore()
            t0 = time.perf_counter()
            neighbor_rows(
                built, items, item_txt, known, k,
                lm_weight=lm_weight, max_tokens=args.max_text_tokens,
            )  # fmt: skip
            seconds = time.perf_counter() - t0
            neighbors.append(
                {"neighbors": k, "lm_weight": lm_weight, "seconds": seconds,
                 **evaluate_items(tasks, score_table(uv, built))}
            )  # fmt: skip
            print("text neighbors", k, lm_weight, neighbors[-1]["val"], flush=True)
    results["text_neighbors_grid"] = neighbors
    results["text_neighbors"] = max(neighbors, key=lambda e: e["val"]["all"]["ndcg@100"])

    mapped = []
    for ridge in RIDGES:
        restore()
        t0 = time.perf_counter()
        fit = token_rows_mapped(built, items, item_txt, known, args.max_text_tokens, ridge)
        seconds = time.perf_counter() - t0
        mapped.append(
            {"ridge": ridge, "seconds": seconds, "map_fit": fit,
             **evaluate_items(tasks, score_table(uv, built))}
        )  # fmt: skip
        print("lm tokens", ridge, mapped[-1]["val"], flush=True)
    results["lm_tokens_grid"] = mapped
    results["lm_tokens"] = max(mapped, key=lambda e: e["val"]["all"]["ndcg@100"])
    if args.skip_lm:
        restore()
        results["cold_items"] = int(len(cold_idx))
        results["cold_items_with_text"] = int(len(items))
        log["cold_items"] = results
        return

    grid = []
    for lr in LRS:
        restore()
        t0 = time.perf_counter()

        def snapshot(step: int, lr: float = lr, t0: float = t0) -> None:
            if step not in SNAPSHOTS:
                return
            for how in ("copy", "linear"):
                report = place(built, items, how)
                entry = {
                    "steps": step, "lr": lr, "placement": how,
                    "seconds": time.perf_counter() - t0, "alignment": report,
                    **evaluate_items(tasks, score_table(uv, built)),
                }  # fmt: skip
                grid.append(entry)
                print(step, lr, how, entry["val"], flush=True)

        infer_content_rows(
            built, items, item_txt, steps=max(SNAPSHOTS), lr=lr, batch_size=len(items),
            on_step=snapshot,
        )  # fmt: skip
    # Every choice is made on the validation split's ranking over all items.
    best = max(grid, key=lambda e: e["val"]["all"]["ndcg@100"])
    results["inferred_grid"] = grid
    results["inferred"] = best
    restore()
    results["cold_items"] = int(len(cold_idx))
    results["cold_items_with_text"] = int(len(items))
    log["cold_items"] = results


def fold_in_study(args: argparse.Namespace, built: Any, log: dict) -> None:
    rows = [r for r in cold_user_rows(args.cold_data) if len(r["train"])]
    users = torch.tensor([r["user"] for r in rows])
    weight = built.tables["user_collab"].weight
    saved = weight.detach().clone()
    start_at_mean(built.tables["user_collab"], users)
    results: dict[str, Any] = {"mean_row": users_metrics(built, rows)}
    grid = []
    for lr in LRS:
        with torch.no_grad():
            weight.copy_(saved)
        t0 = time.perf_counter()

        def snapshot(step: int, lr: float = lr, t0: float = t0) -> None:
            if step in SNAPSHOTS:
                seconds = time.perf_counter() - t0
                grid.append(
                    {"steps": step, "lr": lr, "seconds": seconds, **users_metrics(built, rows)}
                )
                print("fold-in", step, lr, grid[-1]["val"], flush=True)

        fold_in_users(
            built, rows, steps=max(SNAPSHOTS), lr=lr, batch_size=len(rows), mask_fraction=0.2,
            on_step=snapshot,
        )  # fmt: skip
    results["fold_in_grid"] = grid
    results["fold_in"] = max(grid, key=lambda e: e["val"]["ndcg@100"])
    results["users"] = len(rows)
    with torch.no_grad():
        weight.copy_(saved)
    log["fold_in"] = results


def warm_reference(args: argparse.Namespace, log: dict) -> None:
    """The warm model on the same measures: cold items and cold users trained from the start."""
    built = load(args.warm_data, args.warm_export, args.override)
    cold_manifest = load_manifest(args.cold_data)
    cold = dataset_cold_mask(cold_manifest, "items")
    cold_users = dataset_cold_mask(cold_manifest, "users")
    rows = corpus_rows(args.warm_data)
    warm_user_rows = [r for r in rows if not cold_users[int(r["user"])]]
    tasks = item_tasks(warm_user_rows, cold)
    uv = user_vectors(built, warm_user_rows)
    log["cold_items"]["warm_model"] = evaluate_items(tasks, score_table(uv, built))
    if "fold_in" in log:
        fold_rows = [r for r in rows if cold_users[int(r["user"])] and len(r["train"])]
        log["fold_in"]["warm_model"] = users_metrics(built, fold_rows)


def _cells(m: dict) -> str:
    return f"{m['recall@20']:.4f} | {m['ndcg@100']:.4f}"


def markdown(log: dict) -> str:
    """The docs/results.md tables of a study's JSON (test split; choices made on validation)."""
    ci, fi = log["cold_items"], log.get("fold_in")
    best = ci.get("inferred")
    lines = [
        f"Cold items ({ci['cold_items']}, {ci['cold_items_with_text']} with text; "
        f"{int(ci['tfidf']['test']['all']['users'])} test users):",
        "",
        "| rows of the cold items | all items: R@20 | N@100 | cold items only: R@20 | N@100 |",
        "|---|---|---|---|---|",
    ]
    names = {
        "random_rows": "random rows (a new item today)",
        "as_trained": "as training left them (no interactions)",
        "tfidf": "TF-IDF text similarity (baseline)",
        "inferred": f"content LM on the text (`lm`: {best['placement']}, {best['steps']} steps, lr {best['lr']})"
        if best
        else "",
        "text_neighbors": f"**text neighbors** (`text_neighbors`: k = {ci['text_neighbors']['neighbors']}, "
        f"LM weight {ci['text_neighbors'].get('lm_weight', 0.0)})",
        "lm_tokens": f"LM token embeddings, mapped (`lm_tokens`: ridge {ci['lm_tokens']['ridge']})"
        if "lm_tokens" in ci
        else "",
        "warm_model": "warm model (trained with their interactions)",
    }
    for key, name in names.items():
        if key in ci:
            t = ci[key]["test"]
            lines.append(f"| {name} | {_cells(t['all'])} | {_cells(t['cold_only'])} |")
    if best:
        a = best["alignment"]
        lines += [
            "",
            f"Warm items' collaborative vs content rows: mean cosine {a['mean_cosine']:.3f}, "
            f"relative distance {a['mean_relative_distance']:.3f}, top-1 retrieval "
            f"{a['top1_retrieval']:.3f}, R² of the linear map {a['linear_r2']:.3f}.",
        ]
    if not fi:
        return "\n".join(lines)
    lines += [
        "",
        f"Fold-in users ({fi['users']}):",
        "",
        "| user rows | R@20 | N@100 |",
        "|---|---|---|",
    ]
    b = fi["fold_in"]
    users = {
        "mean_row": "mean trained row (no fold-in)",
        "fold_in": f"**folded in** ({b['steps']} steps, lr {b['lr']}; {b['seconds']:.0f} s with evaluations)",
        "warm_model": "warm model (trained with them)",
    }
    for key, name in users.items():
        if key in fi:
            lines.append(f"| {name} | {_cells(fi[key]['test'])} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", help="print the markdown tables of this study JSON and exit")
    parser.add_argument("--cold-data")
    parser.add_argument("--cold-export")
    parser.add_argument("--warm-data")
    parser.add_argument("--warm-export")
    parser.add_argument("--out", default="cold_start.json")
    parser.add_argument(
        "--max-text-tokens", type=int, default=64, help="lm_tokens: data.max_text_tokens"
    )
    parser.add_argument(
        "--override", action="append", default=[],
        help="a Hydra override of both exports' infer config, e.g. model=smollm2 (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--skip-lm", action="store_true",
        help="leave out the lm route's grid and the fold-in study (each step runs the backbone "
        "forward and backward: hours for a pretrained LM on a CPU)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.table:
        print(markdown(json.loads(Path(args.table).read_text())))
        return
    if not (args.cold_data and args.cold_export):
        parser.error("--cold-data and --cold-export are required")
    register()
    log: dict[str, Any] = {"args": vars(args)}
    built = load(args.cold_data, args.cold_export, args.override)
    rows = corpus_rows(args.cold_data)
    t0 = time.perf_counter()
    cold_items_study(args, built, rows, log)
    if not args.skip_lm:
        fold_in_study(args, built, log)
    if args.warm_data and args.warm_export:
        warm_reference(args, log)
    log["seconds"] = time.perf_counter() - t0
    Path(args.out).write_text(json.dumps(log, indent=2))
    print(markdown(log))
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
