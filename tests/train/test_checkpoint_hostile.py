"""Hostile and damaged checkpoints: nothing is unpickled, damage names the file, resume falls back."""

from __future__ import annotations

import logging
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from cllm4rec_dist.model.tables import DenseTable
from cllm4rec_dist.train.checkpoint import (
    CheckpointError,
    _safe_torch_load,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from cllm4rec_dist.train.state import TrainerState, TrainerStateError, load_state, save_state


class _Payload:
    """Unpickling this writes ``marker``: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


def _tables() -> dict:
    return {"user_collab": DenseTable(5, 3, seed=1), "item_collab": DenseTable(4, 3, seed=2)}


def _save(run_dir: Path, step: int) -> Path:
    return save_checkpoint(run_dir, TrainerState(global_step=step), None, _tables(), None)


def test_state_round_trip_restores_rng(tmp_path):
    torch.manual_seed(3), np.random.seed(4), random.seed(5)
    state = TrainerState(epoch=2, global_step=7, best_checkpoint="step00000007")
    save_state(tmp_path / "s.json", state)
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    assert load_state(tmp_path / "s.json") == state
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])
    assert got[2] == expected[2]


@pytest.mark.parametrize("name", ["trainer_rank0.json", "trainer_rank0.pt"])
def test_pickle_payload_is_refused_and_does_not_run(tmp_path, name):
    path = _save(tmp_path, 3)
    marker = tmp_path / "marker"
    (path / "trainer_rank0.json").unlink()
    torch.save({"trainer": _Payload(marker)}, path / name)
    with pytest.raises(CheckpointError, match=r"trainer_rank0\.(json|pt).*(pickle|code)"):
        load_checkpoint(path, None, _tables(), None)
    assert not marker.exists()
    (path / name).write_bytes(pickle.dumps(_Payload(marker), protocol=0))  # text-like pickle
    with pytest.raises((CheckpointError, TrainerStateError)):
        load_checkpoint(path, None, _tables(), None)
    assert not marker.exists()


def test_deepspeed_engine_files_load_weights_only(tmp_path):
    marker = tmp_path / "marker"
    torch.save({"module": _Payload(marker)}, tmp_path / "mp_rank_00_model_states.pt")
    with pytest.raises(CheckpointError, match="mp_rank_00_model_states.pt"):
        _safe_torch_load(str(tmp_path / "mp_rank_00_model_states.pt"))
    assert not marker.exists()
    torch.save({"module": {"w": torch.ones(2)}, "step": 3}, tmp_path / "ok.pt")
    assert _safe_torch_load(str(tmp_path / "ok.pt"))["step"] == 3


def test_deepspeed_optimizer_classes_are_allowed(tmp_path):
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    blob = {
        "loss_scaler": LossScaler(1.0),
        "zero_stage": ZeroStageEnum.gradients,
        "param_slice_mappings": [{"w": fragment_address(numel=4, start=0)}],
        "state": {"exp_avg": torch.zeros(4)},
    }
    torch.save(blob, tmp_path / "optim_states.pt")
    loaded = _safe_torch_load(str(tmp_path / "optim_states.pt"))
    assert loaded["zero_stage"] == ZeroStageEnum.gradients
    assert loaded["param_slice_mappings"][0]["w"].numel == 4


# --- resume picks the newest checkpoint that is whole --------------------------------------
def _three(run_dir: Path) -> list[Path]:
    return [_save(run_dir, step) for step in (1, 2, 3)]


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _point(run_dir: Path, name: str | None) -> None:
    pointer = run_dir / "checkpoints" / "latest"
    if name is None:
        pointer.unlink()
    else:
        pointer.write_text(name + "\n")


@pytest.mark.parametrize(
    ("damage", "expected", "logged"),
    [
        (lambda run, p: _point(run, None), "step00000003", "latest is missing"),
        (lambda run, p: _point(run, "step00000099"), "step00000003", "does not exist"),
        (lambda run, p: _point(run, "step00000001"), "step00000003", "names step00000001"),
        (
            lambda run, p: _truncate(p[2] / "tables" / "tables-rank00000-of-00001.safetensors"),
            "step00000002",
            "tables-rank00000-of-00001.safetensors",
        ),
        (lambda run, p: _truncate(p[2] / "trainer_rank0.json"), "step00000002", "trainer_rank0"),
        (lambda run, p: (p[2] / "COMPLETE").unlink(), "step00000002", "no COMPLETE"),
        (lambda run, p: (p[2] / "tables" / "index.json").write_text("{"), "step00000002", "index"),
    ],
    ids=["no-pointer", "dangling", "stale", "trunc-table", "trunc-state", "incomplete", "index"],
)
def test_latest_is_the_newest_whole_checkpoint(tmp_path, caplog, damage, expected, logged):
    paths = _three(tmp_path)
    damage(tmp_path, paths)
    with caplog.at_level(logging.WARNING, logger="cllm4rec_dist.train.checkpoint"):
        chosen = latest_checkpoint(tmp_path)
    assert chosen is not None and chosen.name == expected
    assert logged in caplog.text
    state = load_checkpoint(chosen, None, _tables(), None)
    assert state.global_step == int(expected[-1])


@pytest.mark.parametrize(
    "victim", ["tables/tables-rank00000-of-00001.safetensors", "trainer_rank0.json"]
)
def test_truncated_file_raises_naming_it(tmp_path, victim):
    path = _save(tmp_path, 1)
    _truncate(path / victim)
    with pytest.raises(CheckpointError, match=Path(victim).name.replace(".", r"\.")):
        load_checkpoint(path, None, _tables(), None)


def test_no_checkpoint_at_all(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    (tmp_path / "checkpoints" / "step00000005").mkdir(parents=True)  # never completed
    assert latest_checkpoint(tmp_path) is None


def test_checkpoint_of_another_dataset_is_refused(tmp_path):
    mine = {"manifest_sha256": "a" * 64, "num_users": 5, "num_items": 4}
    path = save_checkpoint(tmp_path, TrainerState(global_step=1), None, _tables(), None, mine)
    assert load_checkpoint(path, None, _tables(), None, dataset=mine).global_step == 1
    other = {**mine, "manifest_sha256": "b" * 64}
    with pytest.raises(CheckpointError, match=r"dataset\.json: checkpoint of another dataset"):
        load_checkpoint(path, None, _tables(), None, dataset=other)


def test_a_full_device_is_one_clear_error(tmp_path, monkeypatch):
    """torch.save on a full device says "basic_ios::clear: iostream error": the checkpoint
    names the device as full; a failure with space left stays what it was."""
    import shutil

    from cllm4rec_dist.train import checkpoint

    def fail(*args, **kwargs):
        raise RuntimeError("basic_ios::clear: iostream error")

    monkeypatch.setattr(checkpoint, "save_tables", fail)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(checkpoint.shutil, "disk_usage", lambda p: usage._replace(free=1 << 20))
    with pytest.raises(CheckpointError, match=r"step00000001: .*device is full \(1 MiB free\)"):
        _save(tmp_path, 1)
    monkeypatch.setattr(checkpoint.shutil, "disk_usage", lambda p: usage._replace(free=1 << 40))
    with pytest.raises(RuntimeError, match="iostream") as exc:
        _save(tmp_path, 2)
    assert not isinstance(exc.value, CheckpointError)
    assert latest_checkpoint(tmp_path) is None  # nothing half-written is taken for a checkpoint
