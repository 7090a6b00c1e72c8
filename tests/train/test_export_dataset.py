"""An export only initialises a model of the dataset it was trained on (issue 13, defect 2)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file

from cllm4rec_dist.model.tables import DenseTable
from cllm4rec_dist.train.export import ExportMismatchError, load_export

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
