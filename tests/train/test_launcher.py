"""The real entry points under the DeepSpeed launcher with 2 CPU ranks: a run where one rank is
killed with SIGKILL mid-epoch, relaunched with resume, ends with the same model as an
uninterrupted run; finetuning starts from the pretraining export and evaluates."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY, launch

from bench.harness import serve_directory
from cllm4rec_dist.export import read_backbone_state

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.distributed


def exported_tables(run_dir: Path) -> dict[str, np.ndarray]:
    from cllm4rec_dist.export import read_exported_rows

    meta = json.loads((run_dir / "export" / "meta.json").read_text())
    sizes = {"user": meta["num_users"], "item": meta["num_items"]}
    return {
        name: read_exported_rows(run_dir / "export", name, 0, sizes[name.split("_")[0]]).numpy()
        for name in ("user_collab", "item_collab", "user_content", "item_content")
    }


@pytest.mark.parametrize(
    "backbone",
    [
        ["model.mode=full", "deepspeed=zero2"],
        # Checkpoints without the frozen base (train/checkpoint.py), parameters partitioned.
        ["model.mode=lora", "model.lora.target_modules=[q_proj,v_proj]", "deepspeed=zero3"],
    ],
    ids=["full-zero2", "lora-zero3"],
)
def test_kill_one_rank_then_resume_matches(backbone, tiny_dataset, tmp_path):
    common = [
        f"data.dir={tiny_dataset}",
        "stage.epochs=2",
        "stage.content_warmup_epochs=1",
        "stage.phases=[collaborative,content]",
        "stage.max_steps_per_phase=4",
        "checkpoint.every_steps=2",
        *backbone,
    ]
    ref = launch("pretrain", [*common, f"run.dir={tmp_path / 'ref'}"])
    assert ref.returncode == 0, ref.stdout[-3000:] + ref.stderr[-3000:]

    killed = launch("pretrain", [*common, f"run.dir={tmp_path / 'run'}"], kill_at_step=5)
    assert killed.returncode != 0
    assert (tmp_path / "run" / "checkpoints" / "latest").read_text().strip() == "step00000004"

    resumed = launch("pretrain", [*common, f"run.dir={tmp_path / 'run'}"])
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout + resumed.stderr
    want, got = exported_tables(tmp_path / "ref"), exported_tables(tmp_path / "run")
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-6, atol=1e-7, err_msg=name)
    ref_state = read_backbone_state(tmp_path / "ref" / "export")
    run_state = read_backbone_state(tmp_path / "run" / "export")
    for key, value in ref_state.items():
        torch.testing.assert_close(run_state[key], value, rtol=1e-6, atol=1e-7)


PRETRAIN = ["stage.epochs=1", "stage.content_warmup_epochs=0", "stage.max_steps_per_phase=2"]


@pytest.fixture(scope="module")
def pretrained(tiny_dataset, tmp_path_factory) -> Path:
    """Export of a short 2-rank pretraining run (shared by the finetune and predict tests)."""
    run_dir = tmp_path_factory.mktemp("pretrained") / "pre"
    pre = launch("pretrain", [f"data.dir={tiny_dataset}", f"run.dir={run_dir}", *PRETRAIN])
    assert pre.returncode == 0, pre.stdout[-3000:] + pre.stderr[-3000:]
    return run_dir / "export"


@pytest.fixture(scope="module")
def served(tiny_dataset):
    """The tiny dataset at an http:// URL (python -m http.server on 127.0.0.1)."""
    with serve_directory(tiny_dataset) as url:
        yield url


def test_pretraining_from_a_url_equals_the_local_directory(served, pretrained, tmp_path):
    """Shards, manifest and tokenizer streamed over HTTP: the same export, bit for bit."""
    run = launch("pretrain", [f"data.dir={served}", f"run.dir={tmp_path / 'pre'}", *PRETRAIN])
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    want, got = exported_tables(pretrained.parent), exported_tables(tmp_path / "pre")
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    meta = json.loads((tmp_path / "pre" / "export" / "meta.json").read_text())
    assert meta["data_dir"] == served


def test_pretrain_then_finetune_from_export(tiny_dataset, pretrained, tmp_path):
    fine = launch(
        "finetune",
        [
            f"data.dir={tiny_dataset}",
            f"run.dir={tmp_path / 'fine'}",
            f"stage.init_from={pretrained}",
            "stage.epochs=2",
            "stage.max_steps_per_phase=2",
        ],
    )
    assert fine.returncode == 0, fine.stdout[-3000:] + fine.stderr[-3000:]
    metrics = json.loads((tmp_path / "fine" / "metrics.json").read_text())
    assert metrics["test"]["users"] > 0
    assert len(metrics["validation_history"]) == 2
    assert (tmp_path / "fine" / "best" / "meta.json").exists()
    assert (tmp_path / "fine" / "tensorboard").is_dir()


@pytest.mark.parametrize(
    "override,key,status",
    [
        # A kind: OmegaConf rejects it when the config is composed (cli/app.py: one line).
        ("model.mode=frozn", "model.mode", 2),
        ("stage.mask_fraction=1.5", "stage.mask_fraction", 2),  # a value: config.validate
    ],
)
def test_invalid_config_fails_before_work(tiny_dataset, tmp_path, override, key, status):
    proc = subprocess.run(
        [
            sys.executable,
            "launchers/pretrain.py",
            f"data.dir={tiny_dataset}",
            f"run.dir={tmp_path}",
            override,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == status
    assert key in proc.stdout + proc.stderr
    assert not (tmp_path / "checkpoints").exists()


def _read_predictions(out_dir: Path) -> dict[str, tuple[list[str], list[float]]]:
    import pyarrow.parquet as pq

    manifest = json.loads((out_dir / "manifest.json").read_text())
    rows = {}
    for part in manifest["parts"]:
        table = pq.read_table(out_dir / part["path"])
        assert table.num_rows == part["rows"]
        for rec in table.to_pylist():
            rows[rec["user"]] = (rec["items"], rec["scores"])
    assert len(rows) == manifest["users"]
    return rows


def test_predict_two_ranks_equals_one(tiny_dataset, served, pretrained, tmp_path):
    """2 ranks reading the dataset from its URL (id maps included) give what 1 rank reading the
    directory gives."""
    export = pretrained
    two = launch(
        "predict",
        [
            f"data.dir={served}",
            f"run.dir={tmp_path / 'p2'}",
            f"stage.init_from={export}",
            "predict.k=7",
        ],
    )
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    one = subprocess.run(
        [
            sys.executable,
            "launchers/predict.py",
            *TINY,
            f"data.dir={tiny_dataset}",
            f"run.dir={tmp_path / 'p1'}",
            f"stage.init_from={export}",
            "predict.k=7",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert one.returncode == 0, one.stdout[-3000:] + one.stderr[-3000:]
    got, want = (_read_predictions(tmp_path / d / "predictions") for d in ("p2", "p1"))
    assert got.keys() == want.keys() and len(got) > 0
    for user, (items, scores) in want.items():
        assert got[user][0] == items
        np.testing.assert_allclose(got[user][1], scores, rtol=1e-5, atol=1e-6)
    # Seen (train + validation) items are never recommended.
    from cllm4rec_dist.data.manifest import load_manifest
    from cllm4rec_dist.data.shards import iter_rows

    manifest = load_manifest(tiny_dataset)
    import pyarrow.parquet as pq

    raw = pq.read_table(Path(tiny_dataset) / "id_maps" / "items.parquet").column("raw_id")
    user_raw = pq.read_table(Path(tiny_dataset) / "id_maps" / "users.parquet").column("raw_id")
    for row in iter_rows(tiny_dataset, "recommendation", shuffle=False):
        seen = {raw[int(i)].as_py() for i in np.concatenate([row["train"], row["val"]])}
        assert not seen & set(want[user_raw[row["user"]].as_py()][0])
    assert manifest.num_users == len(want)
