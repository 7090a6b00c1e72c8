"""Issue 25's probe, one regression test per finding, with the probe's input: no command writes
over what it did not create, and every mistake is one line and exit status 2.

Most cases run the command's entry function in this process (what the launcher calls after
Hydra composed the config), so they cost no start-up; two run the real launchers, to count the
lines a user sees."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from helpers import TINY, compose_prep, compose_train
from omegaconf import OmegaConf
from safetensors.torch import save_file

from cllm4rec_dist.baselines.entry import run_baseline
from cllm4rec_dist.cli.outputs import MARKER
from cllm4rec_dist.config import ConfigError, validate
from cllm4rec_dist.data.id_maps import IdFileError
from cllm4rec_dist.data.loader import PhasePosition, phase_loader
from cllm4rec_dist.data.manifest import load_manifest
from cllm4rec_dist.data.samples import ShardError
from cllm4rec_dist.export import ExportFileError, load_export
from cllm4rec_dist.infer.entry import run_fold_in, run_infer_items, run_predict
from cllm4rec_dist.model.tables import DenseTable
from cllm4rec_dist.train.entry import run_stage

REPO = Path(__file__).resolve().parents[2]


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def _exits_2(fn, cfg, capsys) -> str:
    capsys.readouterr()  # what earlier steps of the test printed
    with pytest.raises(SystemExit) as exit_info:
        fn(cfg)
    assert exit_info.value.code == 2
    return _one_error_line(capsys)


@pytest.fixture(autouse=True)
def _one_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("CLLM4REC_DEBUG", raising=False)


@pytest.fixture
def users_dir(tmp_path) -> Path:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("precious")
    return folder


def _untouched(folder: Path) -> None:
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
    assert (folder / "notes.txt").read_text() == "precious"


# --- data loss: every command that takes an output path refuses a directory it did not write ---


def _fake_export(root: Path) -> Path:
    """Enough of an export to pass the checks that run before anything is loaded."""
    root.mkdir(parents=True)
    (root / "meta.json").write_text("{}")
    return root


@pytest.mark.parametrize(
    "command,run,overrides",
    [
        ("pretrain", run_stage, lambda d: [f"run.dir={d}"]),
        ("predict", run_predict, lambda d: [f"predict.output_dir={d}"]),
        ("infer", run_infer_items, lambda d: [f"infer.output_dir={d}"]),
        ("infer", run_fold_in, lambda d: [f"infer.output_dir={d}"]),
    ],
    ids=["pretrain-run.dir", "predict.output_dir", "infer_items-output_dir", "fold_in-output_dir"],
)
def test_training_and_inference_outputs_keep_a_users_directory(
    command, run, overrides, tiny_dataset, users_dir, tmp_path, capsys
):
    export = _fake_export(tmp_path / "export")
    root = "pretrain" if command == "pretrain" else command
    cfg = compose_train(
        root,
        [f"data.dir={tiny_dataset}", f"stage.init_from={export}", *overrides(users_dir)]
        + ([] if command == "pretrain" else [f"run.dir={tmp_path / 'run'}"]),
    )
    line = _exits_2(run, cfg, capsys)
    assert str(users_dir) in line and "did not write" in line
    _untouched(users_dir)


def test_infer_output_pointed_at_the_training_run_is_refused(tiny_dataset, tmp_path, capsys):
    """The probe's case: infer.output_dir=<the training run> deleted its checkpoints."""
    run = tmp_path / "ft"
    (run / "checkpoints" / "step00000001").mkdir(parents=True)
    (run / MARKER).write_text(json.dumps({"command": "finetune"}))
    (run / "metrics.json").write_text("{}")
    before = sorted(str(p.relative_to(run)) for p in run.rglob("*"))
    cfg = compose_train("infer", [f"data.dir={tiny_dataset}", f"run.dir={tmp_path / 'i'}",
                                  f"stage.init_from={_fake_export(tmp_path / 'e')}",
                                  f"infer.output_dir={run}"])  # fmt: skip
    assert "was written by finetune" in _exits_2(run_infer_items, cfg, capsys)
    assert sorted(str(p.relative_to(run)) for p in run.rglob("*")) == before


def test_prepare_and_baseline_outputs_keep_the_users_files(
    tiny_dataset, users_dir, tmp_path, capsys
):

    from data_prep.cli import prepare

    cfg = compose_prep(["source=synthetic", f"output_dir={users_dir}", "progress=false"])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        prepare(cfg)
    assert exit_info.value.code == 2
    assert "prepare did not write" in _one_error_line(capsys)
    _untouched(users_dir)
    baseline = OmegaConf.merge(
        OmegaConf.structured(_baseline_schema()),
        {"data_dir": str(tiny_dataset), "output": str(users_dir / "notes.txt"), "progress": False},
    )
    assert "not written by baseline" in _exits_2(run_baseline, baseline, capsys)
    _untouched(users_dir)


def _baseline_schema():
    from cllm4rec_dist.baselines.config import BaselineConfig

    return BaselineConfig


# --- A (readers): tests/reliability/test_reliability_readers.py, "non-utf8" cases ---

# --- B: non-finite floats ------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    ["optim.lr", "optim.weight_decay", "tables.eps", "tables.lr", "tables.init_std",
     "stage.lambda_v", "softmax.alpha", "infer.ridge"],
)  # fmt: skip
@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_non_finite_values_are_refused(key, value):
    cfg = compose_train("pretrain", ["data.dir=/x", f"{key}={value}"])
    with pytest.raises(ConfigError, match=f"`{key}`: .*not a finite number"):
        validate(cfg)


# --- C, D: a users or items file with only its header --------------------------------------


@pytest.mark.parametrize("kind", ["items", "users"])
def test_header_only_files_are_one_line(kind, tiny_dataset, tmp_path, capsys):
    path = tmp_path / f"{kind}.csv"
    path.write_text("item,text\n" if kind == "items" else "user,item\n")
    cfg = compose_train("infer", [f"data.dir={tiny_dataset}", f"run.dir={tmp_path / 'run'}",
                                  f"stage.init_from={_fake_export(tmp_path / 'e')}",
                                  f"infer.{kind}_file={path}"])  # fmt: skip
    line = _exits_2(run_infer_items if kind == "items" else run_fold_in, cfg, capsys)
    assert f"{path}: no rows" in line


def test_header_only_users_file_of_predict_is_refused(tiny_dataset, tmp_path):
    from cllm4rec_dist.data.cold import history_rows

    path = tmp_path / "users.csv"
    path.write_text("user,item\n")
    with pytest.raises(IdFileError, match="no rows"):
        history_rows(path, tiny_dataset)


# --- E: growing from an id map changed after it was written --------------------------------


def test_growing_from_a_changed_id_map_is_refused(prepare_table, tmp_path):
    csv = tmp_path / "t.csv"
    csv.write_text("user,item\n" + "".join(f"u{u},i{(u * 7 + k) % 9}\n" for u in range(24)
                                           for k in range(4)))  # fmt: skip
    old = tmp_path / "old"
    prepare_table(csv, old)
    users = old / "id_maps" / "users.parquet"
    table = pq.read_table(users)
    ids = table["raw_id"].to_pylist()
    ids[1] = ids[0]  # the probe's edit: a duplicate raw id
    pq.write_table(pa.table({"raw_id": ids, "index": table["index"]}), users)
    with pytest.raises(ValueError, match=r"users.parquet: sha256 differs"):
        prepare_table(csv, tmp_path / "new", f"id_maps_from={old}")
    assert not (tmp_path / "new" / "manifest.json").exists()
    from data_prep.pipeline.validate import validate_dir

    assert any("appear more than once" in p for p in validate_dir(old))


# --- F: the planner's cluster and catalog values -------------------------------------------


@pytest.mark.parametrize(
    "override,key",
    [("plan.num_users=-5", "plan.num_users"), ("plan.device_memory_gib=nan",
     "plan.device_memory_gib"), ("plan.nodes=0", "plan.nodes")],
)  # fmt: skip
def test_plan_values_are_refused(override, key, tiny_dataset):
    from hydra import compose, initialize_config_dir

    from cllm4rec_dist.planning.estimate import make_plan
    from cllm4rec_dist.planning.schema import register_plan

    register_plan()
    with initialize_config_dir(str(REPO / "configs"), version_base="1.3"):
        cfg = compose("plan", [f"data.dir={tiny_dataset}", override])
    with pytest.raises(ConfigError, match=f"`{key}`"):
        make_plan(cfg, [])


# --- G: baselines on an empty dataset or a missing directory --------------------------------


@pytest.mark.parametrize("method", ["popularity", "ease", "multvae"])
def test_baselines_refuse_an_empty_or_missing_dataset(method, prepare_table, tmp_path, capsys):
    csv = tmp_path / "empty.csv"
    csv.write_text("user,item\n")
    empty = tmp_path / "empty"
    prepare_table(csv, empty, "allow_empty=true")
    for data_dir, says in ((empty, "no train interactions"), (tmp_path / "nowhere", "not found")):
        cfg = OmegaConf.merge(
            OmegaConf.structured(_baseline_schema()),
            {"data_dir": str(data_dir), "method": method, "progress": False},
        )
        assert says in _exits_2(run_baseline, cfg, capsys)


# --- H: a truncated table or backbone state in an export -----------------------------------


def _export_files(root: Path) -> tuple[Path, Path]:
    (root / "tables").mkdir(parents=True)
    (root / "backbone").mkdir()
    table = root / "tables" / "item_collab.safetensors"
    save_file({"weight": torch.ones(8, 3)}, str(table))
    state = root / "backbone" / "state.pt"
    torch.save(torch.nn.Linear(3, 3).state_dict(), state)
    (root / "meta.json").write_text(json.dumps({"num_items": 8, "backbone_state": True}))
    return table, state


@pytest.mark.parametrize("which", ["table", "state"])
def test_truncated_export_files_are_named(which, tmp_path):
    table, state = _export_files(tmp_path / "export")
    victim = table if which == "table" else state
    os.truncate(victim, victim.stat().st_size // 2)
    with pytest.raises(ExportFileError, match=str(victim)) as err:
        load_export(tmp_path / "export", torch.nn.Linear(3, 3), {"item_collab": DenseTable(8, 3)})
    assert "\n" not in str(err.value)


# --- I: a shard whose sha256 differs, read by a DataLoader worker ---------------------------


def test_a_workers_shard_error_keeps_its_one_line(tiny_dataset, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    shard = load_manifest(data).corpus("collaborative").shards[0]
    path = data / shard.path
    raw = bytearray(path.read_bytes())
    raw[600] ^= 0xFF
    path.write_bytes(bytes(raw))
    position = PhasePosition(str(data), "collaborative", 0, 1, 0, 0, 0, 100, 2, 0, 4)
    with pytest.raises(ShardError) as err:
        list(phase_loader(position, lambda rows, rng: len(rows), num_workers=1))
    assert str(err.value) == f"{path}: sha256 differs from the manifest's (corrupted or replaced)"


# --- clumsy input: finetune without init_from, resuming with another model ------------------


def test_finetune_needs_init_from_or_an_explicit_none(tiny_dataset, tmp_path, capsys):
    cfg = compose_train("finetune", [f"data.dir={tiny_dataset}", f"run.dir={tmp_path / 'r'}"])
    assert "stage.init_from=none trains from random tables" in _exits_2(run_stage, cfg, capsys)
    assert not (tmp_path / "r").exists()


def test_resuming_with_another_model_names_the_keys(tiny_dataset, tmp_path, capsys):
    run = tmp_path / "run"
    common = [f"data.dir={tiny_dataset}", f"run.dir={run}"]
    (run / "checkpoints" / "step00000003").mkdir(parents=True)
    (run / MARKER).write_text(json.dumps({"command": "pretrain"}))
    saved = OmegaConf.to_yaml(compose_train("pretrain", common), resolve=True)
    (run / "config.yaml").write_text(saved)
    cfg = compose_train("pretrain", [*common, "model.mode=full", "model.hidden_size=16"])
    line = _exits_2(run_stage, cfg, capsys)
    assert "model.hidden_size: 32 -> 16" in line and "model.mode: frozen -> full" in line
    assert "checkpoint.resume=false" in line
    assert (run / "config.yaml").read_text() == saved  # nothing rewritten before the check


def test_starting_over_keeps_the_earlier_checkpoints_aside(tiny_dataset, tmp_path):
    from cllm4rec_dist.train.entry import prepare_run_dir

    run = tmp_path / "run"
    old = run / "checkpoints" / "step00000100"
    old.mkdir(parents=True)
    (old / "COMPLETE").write_text("{}")
    (run / MARKER).write_text(json.dumps({"command": "pretrain"}))
    cfg = compose_train(
        "pretrain", [f"data.dir={tiny_dataset}", f"run.dir={run}", "checkpoint.resume=false"]
    )
    prepare_run_dir(cfg)
    kept = [p for p in run.iterdir() if p.name.startswith("checkpoints.before-")]
    assert len(kept) == 1 and (kept[0] / "step00000100" / "COMPLETE").exists()
    assert not (run / "checkpoints").exists()  # a fresh run cannot resume from step 100


# --- the launchers themselves: what the terminal shows --------------------------------------


def _launch(script: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("CLLM4REC_DEBUG", "WORLD_SIZE")}
    cmd = [sys.executable, f"launchers/{script}", *TINY, *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_a_typo_is_one_line_with_the_nearest_key(tmp_path):
    proc = _launch("pretrain.py", "data.dir=/x", f"run.dir={tmp_path / 'r'}", "stage.epoch=3")
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert lines == [
        "pretrain: loading torch, DeepSpeed and the model stack ...",
        "error: unknown config key `stage.epoch` (did you mean stage.epochs?)",
    ]


def test_infer_items_into_a_users_directory_keeps_it(tiny_dataset, users_dir, tmp_path):
    export = _fake_export(tmp_path / "export")
    proc = _launch("infer_items.py", f"data.dir={tiny_dataset}", f"stage.init_from={export}",
                   f"run.dir={tmp_path / 'run'}", f"infer.output_dir={users_dir}")  # fmt: skip
    out = (proc.stdout + proc.stderr).strip().splitlines()
    assert proc.returncode == 2 and len(out) <= 3 and out[-1].startswith("error: "), out
    _untouched(users_dir)
