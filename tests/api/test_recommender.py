"""The public API (issue 24): an export copied alone, its dataset gone, loads with
``Recommender.from_pretrained`` and ranks every user as ``launchers/predict.py`` (2 gloo ranks)
does; new users, similar items, vectors and ``save_pretrained`` round-trip; a missing, truncated
or foreign file of the export is one line naming it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from helpers import TINY, launch

from cllm4rec_dist import Recommender
from cllm4rec_dist.api import UnknownIdError
from cllm4rec_dist.export import SEEN, ExportError
from data_prep.presets import TINY_CATALOG, prepare_dataset

REPO = Path(__file__).resolve().parents[2]
K = 20


def _served(tmp_path_factory, model: list[str]) -> tuple[Path, list[dict]]:
    root = tmp_path_factory.mktemp("api")
    data = prepare_dataset(root / "data", [*TINY_CATALOG, "split.cold_item_fraction=0.2"])
    cmd = [
        sys.executable, str(REPO / "launchers" / "pretrain.py"), *TINY, *model, f"data.dir={data}",
        f"run.dir={root / 'pre'}", "stage.epochs=1", "stage.max_steps_per_phase=3",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    export = root / "pre" / "export"
    proc = launch(
        "predict",
        [
            f"data.dir={data}",
            f"stage.init_from={export}",
            f"run.dir={root / 'p'}",
            f"predict.k={K}",
            *model,
        ],
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    parts = sorted((root / "p" / "predictions").glob("part-*.parquet"))
    rows = pa.concat_tables(pq.read_table(p) for p in parts).to_pylist()
    alone = tmp_path_factory.mktemp("alone") / "model"
    shutil.copytree(export, alone)
    shutil.rmtree(data)
    shutil.rmtree(root / "pre")
    return alone, rows


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> tuple[Path, list[dict]]:
    """(an export copied alone into a fresh directory, predict's rows for it on 2 ranks); the
    dataset and the run it came from are deleted."""
    return _served(tmp_path_factory, [])


@pytest.fixture(scope="module")
def served_skip(tmp_path_factory) -> tuple[Path, list[dict]]:
    """The same with the pretrained recipe's head (the ID skip, a scaled LM) and mean pooling:
    the export's meta carries them to the Recommender."""
    model = ["model.id_skip=true", "model.lm_scale=0.5", "model.rec_pool=mean"]
    return _served(tmp_path_factory, model)


@pytest.mark.parametrize("prefilter", [False, True], ids=["fp32", "bf16-prefilter"])
def test_an_export_alone_ranks_every_user_as_predict_does(served, prefilter):
    export, rows = served
    rec = Recommender.from_pretrained(export, prefilter=prefilter)
    got = rec.recommend(users=[r["user"] for r in rows], k=K)
    assert len(got) == len(rows) > 0
    for row, (items, scores) in zip(rows, got):
        assert items == row["items"], row["user"]
        np.testing.assert_allclose(scores, row["scores"], rtol=1e-5, atol=1e-6)
    card = (export / "README.md").read_text()
    assert "manifest sha256" in card and "from_pretrained" in card


def test_the_skip_head_and_pooling_serve_as_predict_ranks(served_skip):
    export, rows = served_skip
    rec = Recommender.from_pretrained(export, prefilter=False)
    assert rec.model.id_skip and rec.model.lm_scale == 0.5 and rec.model.rec_pool == "mean"
    got = rec.recommend(users=[r["user"] for r in rows], k=K)
    for row, (items, scores) in zip(rows, got):
        assert items == row["items"], row["user"]
        np.testing.assert_allclose(scores, row["scores"], rtol=1e-5, atol=1e-6)


def test_scoring_with_other_head_settings_than_trained_is_one_line(served_skip, tmp_path):
    """predict takes model.* from its command line: one that scores differently from how the
    export was trained (here: no skip) is refused before any work, naming the key."""
    export, _ = served_skip
    env = {**os.environ, "DS_ACCELERATOR": "cpu"}
    env.pop("CLLM4REC_DEBUG", None)
    cmd = [
        sys.executable, "launchers/predict.py", f"data.dir={tmp_path / 'data'}",
        f"stage.init_from={export}", f"run.dir={tmp_path / 'p'}", "model.rec_pool=mean",
        "model.lm_scale=0.5",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out[-2000:]
    assert "model.id_skip" in out and "Traceback" not in out, out[-2000:]
    assert not (tmp_path / "p" / "predictions").exists()


def test_masks_and_new_users(served):
    export, rows = served
    rec = Recommender.from_pretrained(export)
    cold = rec.assets.unranked.tolist()  # the dataset's cold items: no trained rows
    assert len(cold) == round(0.2 * rec.num_items)
    cold_raw = {rec.item_ids[i] for i in cold}
    user = rows[0]["user"]
    seen_items, unmasked = rec.recommend(users=[user], k=rec.num_items, exclude_seen=False)[0]
    masked = rec.recommend(users=[user], k=rec.num_items)[0][0]
    assert not cold_raw & set(seen_items) and len(seen_items) == rec.num_items - len(cold)
    assert len(masked) < len(seen_items) and set(masked) < set(seen_items)
    # The vectors are what recommend scores: user . item, with nothing masked but unranked items.
    scores = rec.user_vectors(users=[user]) @ rec.item_vectors().T
    np.testing.assert_allclose(
        scores[0, [rec.item_ids.index(i) for i in seen_items]], unmasked, rtol=1e-5
    )
    history = [rec.item_ids[0], rec.item_ids[5], rec.item_ids[7]]
    (items, new_scores), again = rec.recommend(histories=[history, history], k=5)
    assert again == (items, new_scores) and len(items) == 5
    assert not set(items) & (set(history) | cold_raw) and new_scores == sorted(new_scores)[::-1]
    with pytest.raises(UnknownIdError, match="unknown user id 'nobody'"):
        rec.recommend(users=["nobody"])
    with pytest.raises(ValueError, match="k must be"):
        rec.recommend(users=[user], k=0)


def test_similar_items_are_the_nearest_rows(served):
    rec = Recommender.from_pretrained(served[0])
    cold = rec.assets.unranked.tolist()
    unit = torch.nn.functional.normalize(rec.item_vectors(), dim=1)
    items, scores = rec.similar_items([rec.item_ids[3]], k=4)[0]
    cosine = (unit @ unit[3]).numpy()
    cosine[[3, *cold]] = -np.inf
    want = np.argsort(-cosine, kind="stable")[:4]
    assert items == [rec.item_ids[i] for i in want]
    np.testing.assert_allclose(scores, cosine[want], rtol=1e-5)


def test_save_pretrained_round_trips(served, tmp_path):
    export, rows = served
    rec = Recommender.from_pretrained(export)
    users = [r["user"] for r in rows[:10]]
    again = Recommender.from_pretrained(rec.save_pretrained(tmp_path / "copy"))
    assert again.recommend(users=users) == rec.recommend(users=users)


def _broken(export: Path, tmp_path: Path, name: str) -> Path:
    copy = tmp_path / name.replace("/", "_")
    shutil.copytree(export, copy)
    return copy


@pytest.mark.parametrize(
    "victim",
    [SEEN, "id_maps/items.parquet", "tokenizer/tokenizer.json", "serving.json",
     "tables/item_collab.safetensors", "backbone/state.safetensors"],
)  # fmt: skip
def test_truncated_or_foreign_files_are_one_line_naming_them(served, tmp_path, victim):
    copy = _broken(served[0], tmp_path, victim)
    path = copy / victim
    os.truncate(path, path.stat().st_size // 2)
    with pytest.raises(ExportError, match=path.name) as err:
        Recommender.from_pretrained(copy)
    assert "\n" not in str(err.value)
    path.write_text("{}")  # a foreign file of the right name
    with pytest.raises(ExportError, match=path.name) as err:
        Recommender.from_pretrained(copy)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("version", [1, 99])
def test_format_version_is_checked(served, tmp_path, version):
    copy = _broken(served[0], tmp_path, f"v{version}")
    meta = json.loads((copy / "meta.json").read_text())
    (copy / "meta.json").write_text(json.dumps({**meta, "format_version": version}))
    with pytest.raises(ExportError, match=f"format_version {version}"):
        Recommender.from_pretrained(copy)
