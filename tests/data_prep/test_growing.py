"""A catalog that grows: data prep with ``id_maps_from`` keeps the old id maps (new ids
appended), and an export of the old dataset continues training on the new one, on 2 ranks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from cllm4rec_dist.data.manifest import load_manifest
from cllm4rec_dist.distributed.spawn import run_ranks
from cllm4rec_dist.model.interfaces import init_rows

REPO = Path(__file__).resolve().parents[2]
PREP = ["source=sequences", "source.integer_ids=false", "progress=false", "staging.buckets=2"]
PREP += ["layout.users_per_sample=4", "layout.shard_multiple=2", "ray.num_cpus=1"]


def _lines(users: range, items_per_user: int, item_base: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    out = []
    for u in users:
        picked = rng.choice(40, size=items_per_user, replace=False) + item_base
        out.append(f"u{u:03d} " + " ".join(f"i{i:03d}" for i in picked))
    return out


def _id_map(data: Path, kind: str) -> dict[str, int]:
    table = pq.read_table(data / "id_maps" / f"{kind}.parquet")
    return dict(zip(table.column("raw_id").to_pylist(), table.column("index").to_pylist()))


@pytest.fixture(scope="module")
def grown(tmp_path_factory, prepare):
    root = tmp_path_factory.mktemp("grow")
    old_lines = _lines(range(30), 8, 0, seed=1)
    # Old users get more items (some new), new users arrive, new items i040.. appear; user u005
    # disappears (its rows stay reserved).
    new_lines = [ln for ln in old_lines if not ln.startswith("u005")]
    new_lines = [ln + " i045 i046" if ln.startswith("u01") else ln for ln in new_lines]
    new_lines += _lines(range(30, 40), 8, 20, seed=2)
    (root / "old.txt").write_text("\n".join(old_lines) + "\n")
    (root / "new.txt").write_text("\n".join(new_lines) + "\n")
    old, new = root / "old", root / "new"
    prepare(old, *PREP, f"source.path={root / 'old.txt'}")
    prepare(new, *PREP, f"source.path={root / 'new.txt'}", f"id_maps_from={old}")
    return root, old, new


def test_grown_maps_keep_old_indices_and_append_new_ids(grown):
    _, old, new = grown
    for kind in ("users", "items"):
        before, after = _id_map(old, kind), _id_map(new, kind)
        assert all(after[raw] == index for raw, index in before.items())
        appended = sorted(raw for raw in after if raw not in before)
        assert [after[raw] for raw in appended] == list(range(len(before), len(after)))
        assert appended, kind
    m_old, m_new = load_manifest(old), load_manifest(new)
    assert m_new.grown_from.manifest_sha256 == m_old.sha256
    assert (m_new.grown_from.num_users, m_new.grown_from.num_items) == (30, m_old.num_items)
    assert m_new.num_users == 40 and "u005" in _id_map(new, "users")  # reserved, no rows
    assert m_new.tokenizer_json() == m_old.tokenizer_json()
    rows = {r for corpus in ("recommendation",) for r in _users_in(new, corpus)}
    assert _id_map(new, "users")["u005"] not in rows and len(rows) == 39


def _users_in(data: Path, corpus: str) -> set[int]:
    from cllm4rec_dist.data.shards import iter_rows

    return {int(r["user"]) for r in iter_rows(data, corpus, shuffle=False)}


def _pretrain_old(old: Path, run: Path) -> Path:
    cmd = [sys.executable, str(REPO / "launchers" / "pretrain.py"), f"data.dir={old}"]
    cmd += [f"run.dir={run}", "stage.epochs=1", "stage.max_steps_per_phase=2"]
    # The sizes the in-process configs below get (helpers.TINY's depth, then these).
    cmd += ["model.hidden_size=16", "model.intermediate_size=32", "model.num_heads=2"]
    cmd += ["model.num_layers=2", "data.num_workers=0", "run.progress_bar=false"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return run / "export"


def _build_on_new(rank, world, new, export):
    torch.set_num_threads(1)
    from helpers import compose_train

    from cllm4rec_dist.train.builder import build

    cfg = compose_train(
        "finetune",
        [
            f"data.dir={new}",
            f"stage.init_from={export}",
            "model.hidden_size=16",
            "model.intermediate_size=32",
            "model.num_heads=2",
            "tables.partitioned=true",
        ],
    )
    built = build(cfg)
    # numpy: tensors on the result queue would travel as file descriptors of a dead process
    return {n: (t.row_range, t.weight.detach().numpy().copy()) for n, t in built.tables.items()}


@pytest.fixture(scope="module")
def old_export(grown) -> Path:
    root, old, _ = grown
    return _pretrain_old(old, root / "pre")


@pytest.mark.distributed
def test_export_of_the_old_catalog_continues_on_the_grown_one_on_two_ranks(grown, old_export):
    root, old, new = grown
    export = old_export
    ranks = run_ranks(_build_on_new, 2, new, export)
    m_new, grown_from = load_manifest(new), load_manifest(new).grown_from
    from safetensors.torch import load_file

    for name in ("user_collab", "item_collab", "user_content", "item_content"):
        exported = load_file(str(export / "tables" / f"{name}.safetensors"))["weight"]
        kind = name.split("_")[0]
        n_old = grown_from.num_users if kind == "user" else grown_from.num_items
        n_new = m_new.num_users if kind == "user" else m_new.num_items
        whole = torch.from_numpy(np.concatenate([r[name][1] for r in ranks]))
        assert whole.shape[0] == n_new
        assert torch.equal(whole[:n_old], exported), name  # the old rows, as trained
        assert not torch.equal(whole[n_old:], torch.zeros_like(whole[n_old:]))  # new: their init
    seed_rows = init_rows(grown_from.num_users, m_new.num_users, 16, seed=0, std=0.02)
    user_rows = np.concatenate([r["user_collab"][1] for r in ranks])[grown_from.num_users :]
    # The new users' rows are exactly the init a fresh run of the grown catalog would give them.
    assert np.array_equal(user_rows, seed_rows.numpy())
    meta = json.loads((export / "meta.json").read_text())
    assert meta["dataset"]["manifest_sha256"] == grown_from.manifest_sha256


def test_new_users_of_the_grown_catalog_fold_in_and_predict_serves_them(grown, old_export):
    """A new user: the grow step appends its id, fold-in fits its row from its history (the
    old rows stay as exported), and predict ranks it from a (user, item) file."""
    from helpers import compose_train

    from cllm4rec_dist.eval.predict import predict
    from cllm4rec_dist.infer.entry import fold_in
    from cllm4rec_dist.train.builder import build

    root, _, new = grown
    histories = [line.split() for line in (root / "new.txt").read_text().splitlines()]
    newcomers = [h for h in histories if int(h[0][1:]) >= 30]
    users_file = root / "new_users.csv"
    users_file.write_text(
        "user,item\n" + "".join(f"{h[0]},{i}\n" for h in newcomers for i in h[1:4])
    )
    small = ["model.hidden_size=16", "model.intermediate_size=32", "model.num_heads=2"]
    out = root / "folded"
    fold_in(compose_train("infer", [f"data.dir={new}", f"stage.init_from={old_export}",
        f"infer.users_file={users_file}", f"infer.output_dir={out}", "infer.steps=5", *small]))  # fmt: skip
    from safetensors.torch import load_file

    before = load_file(str(old_export / "tables" / "user_collab.safetensors"))["weight"]
    after = load_file(str(out / "tables" / "user_collab.safetensors"))["weight"]
    m_new = load_manifest(new)
    assert after.shape[0] == m_new.num_users and torch.equal(after[:30], before)
    index = _id_map(new, "users")
    fresh = init_rows(30, m_new.num_users, 16, seed=0, std=0.02)
    for h in newcomers:
        assert not torch.equal(after[index[h[0]]], fresh[index[h[0]] - 30]), h[0]
    cfg = compose_train("predict", [f"data.dir={new}", f"stage.init_from={out}",
        f"predict.users={users_file}", f"predict.output_dir={root / 'pred'}", "predict.k=3", *small])  # fmt: skip
    predict(build(cfg), cfg)
    table = pq.read_table(root / "pred" / "part-rank00000.parquet")
    assert sorted(table["user"].to_pylist()) == sorted(h[0] for h in newcomers)
