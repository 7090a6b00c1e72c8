"""cllm4rec_dist/export.py: an export is written whole and read back as written; a bad one is a
one-line error naming the file; an export only initialises a model of the dataset it was trained
on (issue 13, defect 2)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from cllm4rec_dist.export import (
    FORMAT_VERSION,
    ExportError,
    ExportMeta,
    ExportMismatchError,
    ExportWriter,
    _CsrRows,
    load_export,
    read_backbone_state,
    read_exported_rows,
    read_meta,
    table_rows,
)
from cllm4rec_dist.model.tables import DenseTable

SHA_A, SHA_B = "a" * 64, "b" * 64


def _export(root: Path, users: int, items: int, sha: str | None = SHA_A) -> Path:
    (root / "tables").mkdir(parents=True)
    for name, rows in (("user_collab", users), ("item_collab", items)):
        save_file(
            {"weight": torch.full((rows, 3), 0.5)}, str(root / "tables" / f"{name}.safetensors")
        )
    meta = {"num_users": users, "num_items": items, "data_dir": "/data/a", "backbone_state": False}
    if sha is not None:
        meta["dataset"] = {"manifest_sha256": sha, "num_users": users, "num_items": items}
    (root / "meta.json").write_text(json.dumps(meta))
    return root


def _tables(users: int, items: int) -> dict:
    return {"user_collab": DenseTable(users, 3), "item_collab": DenseTable(items, 3)}


def _manifest(sha: str) -> SimpleNamespace:
    return SimpleNamespace(fingerprint={"manifest_sha256": sha}, data_dir=Path("/data/b"))


def test_same_dataset_loads(tmp_path):
    tables = _tables(30, 8)
    load_export(_export(tmp_path, 30, 8), torch.nn.Linear(1, 1), tables, manifest=_manifest(SHA_A))
    assert torch.all(tables["item_collab"].weight == 0.5)


@pytest.mark.parametrize("sha", [SHA_A, None], ids=["with-fingerprint", "old-export"])
def test_other_catalog_size_is_refused(tmp_path, sha):
    export = _export(tmp_path, 30, 8, sha)
    with pytest.raises(ExportMismatchError, match=r"item_collab.safetensors: 8 rows.* 6 "):
        load_export(export, torch.nn.Linear(1, 1), _tables(30, 6))
    meta = json.loads((export / "meta.json").read_text())
    (export / "tables" / "item_collab.safetensors").unlink()  # only meta.json says it
    with pytest.raises(ExportMismatchError, match=r"meta.json: num_items=8 .*num_items=6"):
        load_export(export, torch.nn.Linear(1, 1), {"item_collab": DenseTable(6, 3)})
    assert meta["num_items"] == 8


def test_other_dataset_of_the_same_size_needs_the_opt_out(tmp_path, caplog):
    export = _export(tmp_path, 30, 8)
    with pytest.raises(ExportMismatchError, match="allow_other_dataset") as err:
        load_export(export, torch.nn.Linear(1, 1), _tables(30, 8), manifest=_manifest(SHA_B))
    assert "\n" not in str(err.value) and "meta.json" in str(err.value)
    tables = _tables(30, 8)
    load_export(
        export, torch.nn.Linear(1, 1), tables, manifest=_manifest(SHA_B), allow_other_dataset=True
    )
    assert torch.all(tables["user_collab"].weight == 0.5)
    assert "loading it anyway" in caplog.text


def test_written_export_reads_back_and_replaces_the_old_one_whole(tmp_path):
    out = tmp_path / "export"
    weight = torch.arange(12, dtype=torch.float32).reshape(4, 3)
    for version in (1, 2):
        writer = ExportWriter(out, "pretrain")
        writer.write_table("user_collab", weight * version)
        writer.write_table_blocks("item_collab", (5, 3), [torch.ones(2, 3), torch.zeros(3, 3)])
        writer.write_backbone({"w": torch.full((2,), float(version))})
        assert not (out / "meta.json").exists() or read_meta(out).extra["run"] == version - 1
        meta = ExportMeta(num_users=4, num_items=5, backbone_state=True, extra={"run": version})
        assert writer.commit(meta) == out and not writer.directory.exists()
    got = read_meta(out)
    assert (got.num_users, got.num_items, got.format_version) == (4, 5, FORMAT_VERSION)
    assert got.extra == {"run": 2} and got.inferred == []
    assert torch.equal(read_exported_rows(out, "user_collab", 1, 3), weight[1:3] * 2)
    assert table_rows(out, "item_collab") == 5 and table_rows(out, "absent") is None
    assert torch.equal(read_exported_rows(out, "item_collab", 0, 5)[:2], torch.ones(2, 3))
    assert torch.equal(read_backbone_state(out)["w"], torch.full((2,), 2.0))


def test_a_rewrite_keeps_the_base_and_what_it_does_not_know(tmp_path):
    base = tmp_path / "base"
    writer = ExportWriter(base, "pretrain")
    writer.write_table("user_collab", torch.zeros(2, 3))
    writer.write_backbone({"w": torch.ones(1)})
    writer.commit(ExportMeta(num_users=2, num_items=1, backbone_state=True, extra={"card": "x"}))
    meta = read_meta(base)
    meta.inferred.append({"kind": "users", "count": 1})
    writer = ExportWriter(tmp_path / "new", "fold_in", base=base)
    writer.write_table("user_collab", torch.ones(2, 3))
    new = writer.commit(meta)
    assert torch.equal(read_exported_rows(new, "user_collab", 0, 2), torch.ones(2, 3))
    assert torch.equal(read_exported_rows(base, "user_collab", 0, 2), torch.zeros(2, 3))
    assert read_backbone_state(new)["w"].item() == 1.0
    again = json.loads((new / "meta.json").read_text())
    assert again["card"] == "x" and again["inferred"] == [{"kind": "users", "count": 1}]


@pytest.mark.parametrize(
    "contents,message",
    [
        (None, "meta.json not found"),
        ("{not json", "not valid JSON"),
        ("[1, 2]", "not a JSON object"),
        (json.dumps({"num_users": 1, "num_items": 1, "format_version": 99}), "format_version 99"),
    ],
)
def test_a_bad_meta_is_one_line_naming_the_file(tmp_path, contents, message):
    if contents is not None:
        (tmp_path / "meta.json").write_text(contents)
    with pytest.raises(ExportError, match=message) as err:
        read_meta(tmp_path)
    assert str(tmp_path / "meta.json") in str(err.value) and "\n" not in str(err.value)


def test_an_export_never_replaces_what_its_command_did_not_write(tmp_path):
    from cllm4rec_dist.cli.outputs import OutputError

    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("a user's file")
    with pytest.raises(OutputError, match="notes.txt"):
        ExportWriter(theirs, "pretrain")
    with ExportWriter(tmp_path / "ours", "pretrain") as writer:
        writer.commit(ExportMeta(num_users=1, num_items=1))
    with pytest.raises(OutputError, match="written by pretrain"):
        ExportWriter(tmp_path / "ours", "fold_in")
    assert (theirs / "notes.txt").read_text() == "a user's file"


def test_seen_items_csr_is_built_in_user_order_from_rows_in_any_order(monkeypatch):
    monkeypatch.setattr(_CsrRows, "CHUNK", 3)  # several chunks
    rng = np.random.default_rng(0)
    num_users = 11
    rows = {u: rng.integers(0, 50, rng.integers(0, 5)) for u in rng.permutation(num_users)[:8]}
    builder = _CsrRows(num_users)
    for user, items in rows.items():  # a shuffled order, some users absent, some rows empty
        builder.add(int(user), items)
    offsets, flat = builder.build()
    for user in range(num_users):
        got = flat[offsets[user] : offsets[user + 1]].numpy()
        np.testing.assert_array_equal(got, rows.get(user, np.zeros(0, np.int64)))
    assert offsets[-1] == flat.numel()
    for first_chunk in (True, False):  # a user twice, in one chunk or in two
        twice = _CsrRows(4)
        twice.add(1, np.array([3]))
        if not first_chunk:
            twice.add(2, np.array([5]))
            twice.add(3, np.array([6]))
        twice.add(1, np.array([4]))
        with pytest.raises(ValueError, match="two rows"):
            twice.build()
