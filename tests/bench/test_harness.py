"""bench/harness.py's work directories: a bench empties only what a bench made."""

import pytest

from bench.harness import fresh_work_dir
from cllm4rec_dist.cli.outputs import MARKER


def test_a_users_directory_is_refused_and_kept(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit) as exc:
        fresh_work_dir(tmp_path, "bench_x")
    assert exc.value.code == 2
    assert (tmp_path / "notes.txt").read_text() == "mine"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(tmp_path) in err[0]


def test_a_benchs_own_directory_is_emptied(tmp_path):
    work = fresh_work_dir(tmp_path / "work", "bench_x")  # absent: made
    (work / "data").mkdir()
    assert fresh_work_dir(work, "bench_x") == work  # its mark: emptied and marked again
    assert sorted(p.name for p in work.iterdir()) == [MARKER]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (
        fresh_work_dir(empty, "bench_x") / MARKER
    ).is_file()  # an empty directory holds nothing to lose
