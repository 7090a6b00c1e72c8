"""The pieces every command shares (cllm4rec_dist/cli): output directories it may write, one
line per mistake, the command-line check with the nearest valid key, finite numbers, tables."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from cllm4rec_dist.cli.app import CONFIGS, compose_problem, nearest
from cllm4rec_dist.cli.checks import non_finite_problem, non_finite_values
from cllm4rec_dist.cli.console import grid, metrics_grid
from cllm4rec_dist.cli.errors import one_line, report
from cllm4rec_dist.cli.outputs import (
    MARKER,
    OutputError,
    begin_staged,
    check_output_dir,
    claim_output_dir,
    publish,
    staged_dir,
    write_output_file,
    writer_of,
)
from cllm4rec_dist.config import register

register()


def _user_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("precious")
    return folder


def test_a_directory_holding_a_users_file_is_refused_and_kept(tmp_path):
    folder = _user_dir(tmp_path)
    with pytest.raises(OutputError, match="holds files infer_items did not write"):
        check_output_dir(folder, "infer_items")
    with pytest.raises(OutputError), staged_dir(folder, "infer_items") as tmp:
        (tmp / "x").write_text("new")
    assert (folder / "notes.txt").read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no staging left behind


def test_a_directory_of_another_command_is_refused(tmp_path):
    out = claim_output_dir(tmp_path / "run", "pretrain")
    assert writer_of(out) == "pretrain"
    with pytest.raises(OutputError, match="was written by pretrain"):
        check_output_dir(out, "infer_items")
    check_output_dir(out, "pretrain")  # its own: allowed


def test_a_file_where_a_directory_goes_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match="not a directory"):
        check_output_dir(tmp_path / "f", "predict")


def test_staged_output_replaces_only_its_own_earlier_output_whole(tmp_path):
    out = tmp_path / "export"
    with staged_dir(out, "fold_in") as tmp:
        (tmp / "a").write_text("1")
        (tmp / "stale").write_text("1")
    with staged_dir(out, "fold_in") as tmp:
        (tmp / "a").write_text("2")
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "a"]
    assert (out / "a").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]
    with pytest.raises(RuntimeError), staged_dir(out, "fold_in") as tmp:
        (tmp / "a").write_text("3")
        raise RuntimeError("crash while writing")
    assert (out / "a").read_text() == "2"  # the failed write left the old output as it was


def test_legacy_output_is_recognised_by_its_layout(tmp_path):
    out = tmp_path / "predictions"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps({"parts": []}))
    with pytest.raises(OutputError):
        check_output_dir(out, "predict")
    legacy = lambda p: (p / "manifest.json").exists()  # noqa: E731
    check_output_dir(out, "predict", legacy)
    tmp = begin_staged(out, "predict", legacy)
    publish(tmp, out, "predict", legacy)
    assert writer_of(out) == "predict" and not (out / "manifest.json").exists()


def test_an_interrupted_staging_of_someone_else_is_not_removed(tmp_path):
    leftover = tmp_path / ".export.tmp"
    leftover.mkdir()
    (leftover / "notes.txt").write_text("precious")
    with pytest.raises(OutputError):
        begin_staged(tmp_path / "export", "infer_items")
    assert (leftover / "notes.txt").exists()


def test_output_files_replace_only_their_own(tmp_path):
    theirs = tmp_path / "notes.json"
    theirs.write_text('{"mine": 1}')
    own = lambda p: "method" in json.loads(p.read_text())  # noqa: E731
    with pytest.raises(OutputError, match="not written by baseline"):
        write_output_file(theirs, '{"method": "ease"}', "baseline", own)
    assert theirs.read_text() == '{"mine": 1}'
    ours = write_output_file(tmp_path / "sub" / "b.json", '{"method": "ease"}', "baseline", own)
    write_output_file(ours, '{"method": "pop"}', "baseline", own)
    assert json.loads(ours.read_text()) == {"method": "pop"}
    with pytest.raises(OutputError, match="is a directory"):
        write_output_file(tmp_path, "{}", "baseline", own)


def test_one_line_and_report(capsys, monkeypatch):
    assert one_line("a\n  b\tc") == "a b c"
    assert len(one_line("x" * 5000)) == 600
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        report("bad\nvalue", traceback_hint=False)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "error: bad value\n"


def test_only_one_rank_of_a_launch_prints_the_error(tmp_path):
    """Two ranks of one launch (same parent, same master port) fail with the same error: the
    line appears once."""
    code = "import sys; from cllm4rec_dist.cli.errors import report; report('the same error')"
    launch = uuid.uuid4().hex  # a launch of its own (the claim is keyed by address and port)
    env = dict(os.environ, WORLD_SIZE="2", MASTER_ADDR=launch, MASTER_PORT="1")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            env={**env, "RANK": str(r)},
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for r in range(2)
    ]
    outs = [p.communicate(timeout=60)[1] for p in procs]
    assert [p.returncode for p in procs] == [2, 2]
    assert sum(out.count("error: the same error") for out in outs) == 1


@pytest.mark.parametrize(
    "overrides,expected",
    [
        (["stage.epoch=3"], "unknown config key `stage.epoch` (did you mean stage.epochs?)"),
        (["+stage.epoch=3"], "the schema has no key `stage.epoch` (did you mean stage.epochs?)"),
        (["+foo.bar=1"], "the schema has no key `foo`"),
        (["model=debg"], "(did you mean model=debug?)"),
        (["stage.epochs=abc"], "invalid config `stage.epochs`"),
        (["tables.init_sd=0.1"], "did you mean tables.init_std?"),
        (["stage.epochs=[1,"], "cannot parse the command line"),
    ],
)
def test_command_line_mistakes_name_the_nearest_key(overrides, expected):
    problem = compose_problem(CONFIGS, "pretrain", overrides, "1.3")
    assert problem is not None and expected in problem
    assert "\n" not in problem


@pytest.mark.parametrize(
    "overrides",
    [["stage.epochs=3"], ["++stage.epochs=3"], ["+deepspeed.extra.foo=1"], ["hydra.run.dir=/x"],
     ["experiment=gpt2_zero3_full"], ["stage.init_from=none"]],
)  # fmt: skip
def test_valid_command_lines_pass(overrides):
    assert compose_problem(CONFIGS, "pretrain", overrides, "1.3") is None


def test_nearest_prefers_siblings():
    keys = ["stage.epochs", "stage.phases", "optim.lr", "tables.lr", "epochs"]
    assert nearest("stage.epoch", keys) == "stage.epochs"
    assert nearest("tables.lrr", keys) == "tables.lr"
    assert nearest("zzz.qqq", keys) is None


def test_non_finite_values_are_found_everywhere_but_skipped_sections():
    cfg = OmegaConf.create(
        {"optim": {"lr": float("inf")}, "ks": [1.0, float("nan")], "extra": {"x": float("inf")}}
    )
    assert [k for k, _ in non_finite_values(cfg, skip=("extra",))] == ["optim.lr", "ks[1]"]
    assert non_finite_problem(cfg, skip=("extra",)).startswith(
        "invalid config `optim.lr`: inf is not a finite number"
    )
    assert non_finite_problem(OmegaConf.create({"a": 1.0})) is None


def test_tables_align_columns():
    text = grid(["split", "recall@20", "users"], [["val", 0.5, 41], ["test", 0.25, 7]])
    lines = text.splitlines()
    assert lines[0] == "split  recall@20  users"
    assert lines[1] == "val       0.5000     41"
    assert lines[2] == "test      0.2500      7"
    assert metrics_grid({"test": {"ndcg@20": 0.1, "users": 3.0}}).splitlines()[1].split() == [
        "test",
        "0.1000",
        "3",
    ]
