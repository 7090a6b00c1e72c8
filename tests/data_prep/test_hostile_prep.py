"""The whole prep job on hostile input: empty or fully rejected input is an error naming the
file, user errors are one line with exit 2 and leave no output_dir/.hydra, and --validate
reports (never crashes on) damaged files and paths that leave the dataset."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import PREPARE, REPO, SMALL

from data_prep.pipeline.runner import EmptyDatasetError
from data_prep.pipeline.validate import validate_dir
from data_prep.readers.base import SchemaError

GOOD = "user,item\n" + "".join(f"u{u},i{(u + k) % 9}\n" for u in range(40) for k in range(4))


@pytest.fixture(scope="module")
def good_dataset(tmp_path_factory, prepare_table) -> Path:
    raw = tmp_path_factory.mktemp("raw") / "good.csv"
    raw.write_text(GOOD)
    out = tmp_path_factory.mktemp("good") / "data"
    prepare_table(raw, out)
    return out


@pytest.mark.parametrize(
    ("contents", "rejected"),
    [
        (b"user,item\n", None),
        (b"user,item\n,i1\nu\xff,i2\n" + b"   ,i3\n", "missing_field:user=2"),
        (b"user,item\nonly-one-field\n", "bad_csv_row=1"),
    ],
    ids=["header-only", "all-ids-rejected", "all-rows-malformed"],
)
def test_empty_or_fully_rejected_input_is_an_error(prepare_table, tmp_path, contents, rejected):
    raw = tmp_path / "in.csv"
    raw.write_bytes(contents)
    with pytest.raises(EmptyDatasetError, match=r"in\.csv: no interactions left") as err:
        prepare_table(raw, tmp_path / "out")
    assert "allow_empty=true" in str(err.value)
    if rejected:
        assert rejected in str(err.value)
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_allow_empty_writes_the_empty_dataset(prepare_table, tmp_path):
    raw = tmp_path / "in.csv"
    raw.write_bytes(b"user,item\n,i1\n")
    manifest = prepare_table(raw, tmp_path / "out", "allow_empty=true")
    assert manifest["counts"]["users"] == 0
    assert manifest["rejected"] == {"missing_field:user": 1}


def test_random_bytes_are_a_schema_error(prepare_table, tmp_path):
    raw = tmp_path / "in.csv"
    raw.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(SchemaError, match=r"in\.csv: no column 'user'"):
        prepare_table(raw, tmp_path / "out")


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    env.pop("CLLM4REC_DEBUG", None)
    return subprocess.run(
        [*PREPARE, *args], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300
    )


@pytest.mark.parametrize(
    ("contents", "extra", "message"),
    [
        (GOOD.encode(), ["source.user_col=customer"], r"good\.csv: no column 'customer' \(config key user_col\)"),
        (GOOD.encode(), ["split.val_fraction=2"], r"split\.val_fraction"),
        (b"user,item\n", [], r"good\.csv: no interactions left"),
    ],
    ids=["bad-column", "bad-value", "empty-input"],
)  # fmt: skip
def test_cli_user_error_is_one_line_and_exit_2(tmp_path, contents, extra, message):
    raw = tmp_path / "good.csv"
    raw.write_bytes(contents)
    out = tmp_path / "out"
    run = _cli(tmp_path, "source=table", f"source.path={raw}", f"output_dir={out}", *SMALL, *extra)
    assert run.returncode == 2, run.stderr[-2000:]
    errors = [line for line in run.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "Traceback" not in run.stderr, run.stderr[-2000:]
    assert re.search(message, errors[0]), errors[0]
    if "no interactions" in message:  # found after reading: the work files are gone
        assert not (out / ".prep_work").exists() and not (out / "manifest.json").exists()
    else:  # found by the checks, before anything was written: no .hydra, no log
        assert not out.exists()


def test_validate_reports_damage_without_crashing(good_dataset, tmp_path):
    assert validate_dir(good_dataset) == []
    broken = tmp_path / "broken"
    shutil.copytree(good_dataset, broken)
    users = broken / "id_maps" / "users.parquet"
    users.write_bytes(users.read_bytes()[:-30])
    part = next((broken / "splits" / "train").glob("part-*.parquet"))
    part.write_bytes(part.read_bytes()[:20])
    manifest = json.loads((broken / "manifest.json").read_text())
    manifest["corpora"]["content"]["shards"][0]["path"] = "../../outside.tar"
    manifest["files"]["../secret"] = {"sha256": "0" * 64, "bytes": 1}
    (broken / "manifest.json").write_text(json.dumps(manifest))
    problems = validate_dir(broken)
    text = "\n".join(problems)
    assert "id_maps/users.parquet: unreadable Parquet" in text
    assert "splits/train: unreadable Parquet" in text
    assert "../../outside.tar: path leaves the dataset directory" in text
    assert "../secret: path leaves the dataset directory" in text
    run = subprocess.run([*PREPARE, "--validate", str(broken)], capture_output=True, text=True,
                         cwd=REPO, timeout=120)  # fmt: skip
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr[-2000:]
