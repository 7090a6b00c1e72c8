"""Cold-start items and fold-in users on a tiny catalog with cold ids: only the new rows move,
the launchers write an export that predict serves, and bad input fails with one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from helpers import TINY, compose_train, launch
from safetensors.torch import load_file

from cllm4rec_dist import Recommender
from cllm4rec_dist.data.cold import cold_ids, cold_item_texts, cold_user_rows, trained_item_texts
from cllm4rec_dist.data.id_maps import IdFileError, raw_ids_by_index
from cllm4rec_dist.eval.predict import predict
from cllm4rec_dist.infer.cold_items import (
    ITEM_DESCRIPTION,
    alignment,
    infer_content_rows,
    linear_map,
    neighbor_rows,
    place,
    token_rows_mapped,
)
from cllm4rec_dist.infer.entry import fold_in, infer_items
from cllm4rec_dist.infer.fold_in import fold_in_users
from cllm4rec_dist.model.text_rows import TokenSpace, token_rows
from cllm4rec_dist.train.builder import build
from data_prep.presets import TINY_CATALOG, prepare_dataset

REPO = Path(__file__).resolve().parents[2]

COLD = ["split.cold_item_fraction=0.2", "split.cold_user_fraction=0.15"]


def _run(script: str, *overrides: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(REPO / "launchers" / script), *TINY, *overrides]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(dataset with cold ids, export of a model pretrained on it with the content LM)."""
    root = tmp_path_factory.mktemp("infer")
    data = prepare_dataset(root / "data", [*TINY_CATALOG, *COLD])
    proc = _run(
        "pretrain.py", f"data.dir={data}", f"run.dir={root / 'pre'}", "stage.epochs=1",
        "model.mode=full", "stage.content_warmup_epochs=1", "stage.phases=[collaborative,content]",
        "stage.max_steps_per_phase=3",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return data, root / "pre" / "export"


def _built(data: Path, export: Path):
    return build(compose_train("infer", [f"data.dir={data}", f"stage.init_from={export}"]))


def _tables(export: Path) -> dict[str, torch.Tensor]:
    return {p.stem: load_file(str(p))["weight"] for p in (export / "tables").glob("*.safetensors")}


def test_inferring_items_moves_only_their_rows_and_lowers_their_text_loss(trained):
    data, export = trained
    built = _built(data, export)
    before = {k: v.detach().clone() for k, v in built.model.state_dict().items()}
    texts = cold_item_texts(data)
    items = texts["item"].to_numpy()
    assert len(items) > 1
    first = infer_content_rows(
        built, items, texts["text"].to_pylist(), steps=1, lr=0.05, batch_size=3
    )
    whole = infer_content_rows(
        built, items, texts["text"].to_pylist(), steps=10, lr=0.05, batch_size=len(items)
    )
    rows_whole = built.tables["item_content"].weight.detach().clone()
    last = infer_content_rows(
        built, items, texts["text"].to_pylist(), steps=10, lr=0.05, batch_size=3
    )
    assert np.mean(last) < np.mean(first) and whole[0] < np.mean(first)
    # Items are independent and Adam ignores the loss scale a chunk's token count sets.
    torch.testing.assert_close(built.tables["item_content"].weight, rows_whole, atol=1e-4, rtol=0)
    after = built.model.state_dict()
    for name, value in before.items():
        if name.endswith("item_content.weight"):
            changed = (after[name] != value).any(1).nonzero().flatten().numpy()
            assert set(changed) == set(items)
        else:
            assert torch.equal(after[name], value), name
    report = place(built, items, "copy")
    assert set(report) == {"mean_cosine", "mean_relative_distance", "top1_retrieval", "linear_r2"}
    ids = torch.from_numpy(items.copy())
    weight = built.tables["item_collab"].weight
    assert torch.equal(weight[ids], built.tables["item_content"].weight[ids])


def test_text_neighbors_take_the_nearest_trained_rows_at_their_length(trained):
    data, export = trained
    built = _built(data, export)
    collab = built.tables["item_collab"].weight
    before = collab.detach().clone()
    known = {0: "red apple pie", 1: "blue ocean wave", 2: "red apple tart"}
    neighbor_rows(built, np.array([5, 6]), ["blue ocean wave", "red apple pie"], known, k=1)
    torch.testing.assert_close(collab[5], before[1])  # the same text: that item's row
    torch.testing.assert_close(collab[6], before[0])
    neighbor_rows(built, np.array([7]), ["red apple"], known, k=2)
    mean = (before[0] + before[2]) / 2  # equal similarity to 0 and 2
    want = mean / mean.norm() * (before[0].norm() + before[2].norm()) / 2
    torch.testing.assert_close(collab[7], want)
    untouched = torch.ones(len(collab), dtype=torch.bool)
    untouched[[5, 6, 7]] = False
    assert torch.equal(collab[untouched], before[untouched])


def test_text_neighbors_by_the_lm_reading(trained):
    """lm_weight=1: nearness is the cosine of the texts' mean token embeddings (the LM's
    reading, order-free), so the same words in another order find their item; lm_weight is
    refused outside [0, 1]."""
    data, export = trained
    built = _built(data, export)
    collab = built.tables["item_collab"].weight
    before = collab.detach().clone()
    known = {0: "red apple pie", 1: "blue ocean wave", 2: "green forest moss"}
    neighbor_rows(built, np.array([5]), ["wave ocean blue"], known, k=1, lm_weight=1.0)
    torch.testing.assert_close(collab[5], before[1])
    neighbor_rows(built, np.array([6]), ["pie apple red"], known, k=1, lm_weight=0.5)
    torch.testing.assert_close(collab[6], before[0])
    with pytest.raises(ValueError, match="lm_weight"):
        neighbor_rows(built, np.array([7]), ["red"], known, k=1, lm_weight=1.5)


def test_lm_tokens_map_text_rows_into_both_tables(trained):
    data, export = trained
    built = _built(data, export)
    known = trained_item_texts(str(data), ITEM_DESCRIPTION)
    known_items = np.fromiter(known, dtype=np.int64)
    # The trained rows made a linear function of the items' text rows: the map fits them (R² 1;
    # fewer items than dimensions here, so a near-zero ridge interpolates), and a new item with a
    # trained item's text gets that item's row.
    emb = built.model.backbone.lm.get_input_embeddings().weight.detach().float()
    tokens = [t[:24] for t in built.collator.builder.encode_texts(list(known.values()))]
    space = TokenSpace.of(emb, torch.from_numpy(np.concatenate(tokens)).long())
    x, _ = token_rows(tokens, emb, space)
    gen = torch.Generator().manual_seed(0)
    a, b = (
        torch.randn(x.shape[1], x.shape[1], generator=gen),
        torch.randn(x.shape[1], generator=gen),
    )
    tables = [built.tables[n].weight for n in ("item_collab", "item_content")]
    with torch.no_grad():
        for w in tables:
            w[torch.from_numpy(known_items)] = x @ a + b
    before = [w.detach().clone() for w in tables]
    new = np.array([i for i in range(len(before[0])) if i not in known][:1])
    assert len(new) == 1
    source = int(known_items[3])
    fit = token_rows_mapped(built, new, [known[source]], known, max_tokens=24, ridge=1e-6)
    assert fit["item_collab_r2"] == pytest.approx(1.0, abs=1e-6)
    for w, old in zip(tables, before):
        torch.testing.assert_close(w[int(new[0])], old[source], atol=1e-3, rtol=1e-3)
        untouched = torch.ones(len(w), dtype=torch.bool)
        untouched[torch.from_numpy(new)] = False
        assert torch.equal(w[untouched], old[untouched])


def test_alignment_and_linear_map_on_known_spaces():
    gen = torch.Generator().manual_seed(0)
    collab = torch.randn(50, 4, generator=gen)
    assert alignment(collab, collab)["mean_cosine"] == pytest.approx(1.0)
    assert alignment(collab, collab)["top1_retrieval"] == 1.0
    rotation = torch.linalg.qr(torch.randn(4, 4, generator=gen))[0]
    w = linear_map(collab @ rotation, collab, ridge=0.0)
    assert torch.allclose(w[:4].float(), rotation.T, atol=1e-5)


def test_fold_in_moves_only_the_new_users_rows(trained):
    data, export = trained
    built = _built(data, export)
    rows = cold_user_rows(data)
    users = {r["user"] for r in rows if len(r["train"])}
    before = {k: v.detach().clone() for k, v in built.model.state_dict().items()}
    losses = fold_in_users(built, rows, steps=10, lr=0.05, batch_size=16, mask_fraction=0.2)
    assert np.isfinite(losses).all()
    after = built.model.state_dict()
    for name, value in before.items():
        if name.endswith("user_collab.weight"):
            assert set((after[name] != value).any(1).nonzero().flatten().tolist()) == users
        else:
            assert torch.equal(after[name], value), name


def test_inferred_exports_are_what_predict_serves(trained, tmp_path):
    """infer_items then fold_in (what the launchers run, in-process here to spare two
    interpreter starts), each a new export with only its rows changed; predict masks cold items
    unless told to include them, and serves the cold users."""
    data, export = trained
    items_export, users_export = tmp_path / "items", tmp_path / "users"
    common = [f"data.dir={data}", "infer.steps=5"]
    record = infer_items(
        compose_train(
            "infer", [*common, f"stage.init_from={export}", f"infer.output_dir={items_export}"]
        )
    )
    assert (
        json.loads((items_export / "meta.json").read_text())["inferred"][-1]["count"]
        == record["count"]
    )
    cold = cold_ids(0, len(raw_ids_by_index(data, "items")), 0.2, "items")
    assert record["kind"] == "items" and record["count"] == len(cold_item_texts(data))
    old, new = _tables(export), _tables(items_export)
    changed = (old["item_collab"] != new["item_collab"]).any(1).nonzero().flatten().numpy()
    assert set(changed) <= set(cold) and len(changed) == record["count"]
    assert torch.equal(old["user_collab"], new["user_collab"])
    lm = infer_items(
        compose_train(
            "infer",
            [
                *common,
                f"stage.init_from={export}",
                f"infer.output_dir={tmp_path / 'lm'}",
                "infer.method=lm",
            ],
        )  # fmt: skip
    )
    assert lm["method"] == "lm" and set(lm["warm_alignment"]) >= {"mean_cosine", "linear_r2"}
    lm_rows = _tables(tmp_path / "lm")["item_collab"]
    assert set((old["item_collab"] != lm_rows).any(1).nonzero().flatten().numpy()) <= set(cold)

    fold_in(
        compose_train(
            "infer",
            [*common, f"stage.init_from={items_export}", f"infer.output_dir={users_export}"],
        )
    )
    meta = json.loads((users_export / "meta.json").read_text())
    assert [r["kind"] for r in meta["inferred"]] == ["items", "users"]

    item_ids = raw_ids_by_index(data, "items").to_pylist()
    user_ids = raw_ids_by_index(data, "users").to_pylist()
    cold_raw = {item_ids[i] for i in cold}
    for users, cold_items in (("corpus", "exclude"), ("cold", "include")):
        out = tmp_path / f"pred-{users}"
        cfg = compose_train(
            "predict",
            [f"data.dir={data}", f"stage.init_from={users_export}", f"predict.output_dir={out}",
             f"predict.users={users}", f"predict.cold_items={cold_items}", "predict.k=5",
             "tables.partitioned=false"],
        )  # fmt: skip
        predict(build(cfg), cfg)
        table = pq.read_table(out / "part-rank00000.parquet")
        recommended = {i for lst in table["items"].to_pylist() for i in lst}
        if cold_items == "exclude":
            assert not recommended & cold_raw and len(table) > 0
        else:
            assert set(table["user"].to_pylist()) == {
                user_ids[r["user"]] for r in cold_user_rows(data)
            }
    # The API on the same export, the dataset's cold users by id: predict's lists (cold items
    # ranked: their rows were inferred). The base's backbone files came along whole.
    rec = Recommender.from_pretrained(users_export)
    assert len(rec.assets.unranked) == 0
    assert (users_export / "backbone" / "hf" / "model.safetensors").is_file()
    served = rec.recommend(users=table["user"].to_pylist(), k=5)
    assert [items for items, _ in served] == table["items"].to_pylist()
    # The same export served on 2 ranks (partitioned tables, each rank its rows): same lists.
    proc = launch(
        "predict",
        [f"data.dir={data}", f"stage.init_from={users_export}", f"run.dir={tmp_path / 'p2'}",
         "predict.users=cold", "predict.cold_items=include", "predict.k=5"],
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    two = pa.concat_tables(
        pq.read_table(p) for p in sorted((tmp_path / "p2" / "predictions").glob("part-*.parquet"))
    )
    one = {r["user"]: r for r in table.to_pylist()}
    assert {r["user"] for r in two.to_pylist()} == one.keys()
    for r in two.to_pylist():
        assert r["items"] == one[r["user"]]["items"]
        np.testing.assert_allclose(r["scores"], one[r["user"]]["scores"], rtol=1e-5, atol=1e-6)


def test_unknown_ids_fail_with_one_line_naming_the_file(trained, tmp_path):
    data, export = trained
    bad = tmp_path / "new_items.csv"
    bad.write_text("item,text\nno-such-item,a new thing\n")
    proc = _run(
        "infer_items.py",
        f"data.dir={data}",
        f"stage.init_from={export}",
        f"run.dir={tmp_path / 'x'}",
        f"infer.items_file={bad}",
    )
    assert proc.returncode == 2
    assert f"{bad}: 1 item id(s) not in the dataset's id map" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    missing = tmp_path / "users.parquet"
    pq.write_table(pa.table({"user": ["x"]}), missing)
    cfg = compose_train(
        "infer", [f"data.dir={data}", f"stage.init_from={export}", f"infer.users_file={missing}"]
    )
    with pytest.raises(IdFileError, match=r"users.parquet: missing column\(s\) \['item'\]"):
        fold_in(cfg)
