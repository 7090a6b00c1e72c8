"""Every command of the README's pipeline table runs as written, on a tiny catalog with cold
items and users (the placeholders DATA, PRE, FT, ... become folders of a temporary directory,
and the model and the epochs are made tiny with extra overrides). The commands are read from
README.md itself, so the test fails when the README and the launchers drift apart.

The ``cluster`` row (``sbatch``) needs Slurm: tests/slurm runs those scripts.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import DEEPSPEED, TINY

from cllm4rec_dist.distributed.spawn import free_port
from data_prep.presets import TINY_CATALOG

REPO = Path(__file__).resolve().parents[1]

PLACEHOLDERS = ("DATA2", "DATA", "PRE", "FT", "EV", "P2", "P", "I", "U")
COLD = ["split.cold_item_fraction=0.2", "split.cold_user_fraction=0.15"]
# What the tiny run adds to a README command, by launcher (the README's own arguments first).
SIZES = {
    "pretrain": [*TINY, "stage.epochs=1", "stage.max_steps_per_phase=2"],
    "finetune": [*TINY, "stage.epochs=1", "stage.max_steps_per_phase=2"],
    "evaluate": TINY,
    "predict": TINY,
    "infer_items": TINY,
    "fold_in": [*TINY, "infer.steps=2"],
    "baseline": ["multvae.epochs=2", "progress=false"],
    "prepare": [],
    "plan": [],
}
# What each launcher must have written (the table's "writes" column), relative to the run.
WRITES = {
    "prepare": ["manifest.json"],
    "pretrain": ["export/meta.json", "checkpoints/latest"],
    "finetune": ["best/meta.json", "metrics.json"],
    "evaluate": ["metrics.json"],
    "predict": ["predictions/manifest.json"],
    "infer_items": ["export/meta.json"],
    "fold_in": ["export/meta.json"],
}


def readme_commands() -> list[str]:
    """The code spans of the pipeline table's command column that start a launcher, in order;
    a ``a\\|b`` alternative is one command per choice."""
    text = (REPO / "README.md").read_text()
    table = text.split("## The pipeline", 1)[1].split("\n\n", 2)[1]
    commands = []
    for row in table.splitlines()[2:]:
        cells = row.replace("\\|", "\x00").split("|")
        for span in re.findall(r"`([^`]+)`", cells[2]):
            if not span.startswith(("python ", "deepspeed ")):
                continue
            choice = re.search(r"(\S+=)(\S*\x00\S*)", span)
            options = choice.group(2).split("\x00") if choice else [None]
            for option in options:
                commands.append(span if option is None else span.replace(choice.group(0),
                                                                       choice.group(1) + option))  # fmt: skip
        cold = re.findall(r"`(predict\.cold_items=\S+ predict\.users=[^`]+)`", cells[3])
        if cold:  # "predict with ...": the predict row's command on the new export
            predict = next(c for c in commands if "launchers/predict.py" in c)
            overrides = cold[0].split("\x00")[0]  # users=cold (FILE: a file of the user's own)
            commands.append(
                predict.replace("stage.init_from=FT/best", "stage.init_from=U/export").replace(
                    "run.dir=P ", "run.dir=P2 "
                )
                + " "
                + overrides
            )
    return commands


def concrete(command: str, root: Path, port: int) -> tuple[str, list[str]]:
    """(launcher name, argv) of a README command: placeholders become folders of ``root``."""
    argv = shlex.split(command.replace("<training overrides>", "<training-overrides>"))
    script = next(a for a in argv if a.startswith("launchers/"))
    name = Path(script).stem
    out: list[str] = []
    for arg in argv:
        if arg == "python":
            out.append(sys.executable)
        elif arg == "deepspeed":
            out.extend([str(DEEPSPEED), "--master_port", str(port)])
        elif arg == "…" and out[-1] == str(port):
            out.extend(["--num_gpus", "1", "--no_local_rank"])
        elif arg == "…" or arg == "<training-overrides>":
            out.extend(
                [*TINY_CATALOG, *COLD] if name == "prepare" else [f"data.dir={root / 'DATA'}"]
            )
        elif arg == "N":
            out.append("1")
        elif arg == "source=<reader>" or arg == "[source.path=…]":
            out.extend([*TINY_CATALOG, *COLD] if arg == "source=<reader>" else [])
        else:
            key, eq, value = arg.partition("=")
            for ph in PLACEHOLDERS:
                if eq and (value == ph or value.startswith(ph + "/")):
                    value = str(root / ph) + value[len(ph) :]
                    break
            if key == "output" and value == "b.json":
                value = str(root / "b.json")
            out.append(f"{key}{eq}{value}" if eq else arg)
    return name, [*out, *SIZES[name]]


def test_the_readme_commands_parse_as_expected():
    commands = readme_commands()
    launchers = [re.search(r"launchers/(\w+)\.py", c).group(1) for c in commands]
    assert launchers == [
        "prepare", "pretrain", "finetune", "evaluate", "predict", "baseline", "baseline",
        "baseline", "prepare", "infer_items", "fold_in", "predict", "plan",
    ]  # fmt: skip


@pytest.mark.distributed
def test_every_readme_pipeline_command_runs(tmp_path):
    env = dict(os.environ, DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("CLLM4REC_DEBUG", None)
    for command in readme_commands():
        name, argv = concrete(command, tmp_path, free_port())
        proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        shown = f"{command}\n{shlex.join(argv)}\n{(proc.stdout + proc.stderr)[-3000:]}"
        assert proc.returncode == 0, shown
        assert "Traceback" not in proc.stdout + proc.stderr, shown
        # What the terminal shows: the start-up line first (plain python; deepspeed's launcher
        # prints its own lines before), no false checkpoint warning, a table at the end.
        if argv[0] == sys.executable:
            assert proc.stderr.startswith(f"{name}: loading "), shown
        assert "replacing the existing checkpoint" not in proc.stdout + proc.stderr, shown
        if name in ("finetune", "evaluate", "baseline"):
            assert re.search(r"^(split|model) +recall@20 ", proc.stdout, re.M), shown
        run = re.search(r"(?:run\.dir|output_dir)=(\S+)", " ".join(argv))
        for relative in WRITES.get(name, []):
            assert (Path(run.group(1)) / relative).exists(), f"{relative} missing\n{shown}"
    assert (tmp_path / "b.json").is_file()
    assert (tmp_path / "P2" / "predictions" / "manifest.json").is_file()
