"""The batch scripts under a real one-node Slurm (tests/slurm/one_node_slurm.py: munged,
slurmctld and slurmd started here), submitted with ``sbatch`` as a user would:

- a 2-task pretraining (DeepSpeed, CPU, gloo) that finishes;
- the same job sent ``USR1`` on its batch shell (what ``--signal=B:USR1@<secs>`` does before
  the time limit): the trainer checkpoints and exits 75, the script requeues the job, Slurm runs
  it again and it resumes, ending with the same export as the uninterrupted job;
- the Ray prep job (a Ray head under srun, prepare.py joining it): the same dataset as a local
  run, and its Ray cluster torn down when prepare fails.

What one node cannot show (two nodes: rendezvous across hosts, the Ray worker step) stays with
the simulated Slurm of test_slurm_scripts.py. Without root or the packages the tests skip and
say why; under ``CLLM4REC_REQUIRE_SLURM=1`` (set by .ci/run) they fail instead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import TINY
from one_node_slurm import FINAL_STATES, OneNodeSlurm, SlurmUnavailable, start

from cllm4rec_dist.distributed.spawn import free_port
from cllm4rec_dist.export import read_backbone_state, read_exported_rows, read_meta
from data_prep.presets import TINY_CATALOG

REPO = Path(__file__).resolve().parents[2]
# What one 2-core node gives in place of the scripts' 2 nodes x 8 GPUs x 8 CPUs.
ONE_NODE = ["--nodes=1", "--ntasks-per-node=2", "--cpus-per-task=1", "--gpus-per-node=0"]

pytestmark = [pytest.mark.real_slurm, pytest.mark.distributed]


# Long enough (60 epochs x 3 steps) that USR1 sent after the step-3 checkpoint lands mid-run.
PRETRAIN = [
    *TINY,
    "stage.epochs=60",
    "stage.max_steps_per_phase=3",
    "checkpoint.every_steps=3",
    "model.mode=full",
    "deepspeed=zero1",
]


@pytest.fixture(scope="module")
def slurm():
    try:
        cluster = start()
    except SlurmUnavailable as err:
        if os.environ.get("CLLM4REC_REQUIRE_SLURM") == "1":
            pytest.fail(f"CLLM4REC_REQUIRE_SLURM=1 but no Slurm could be started: {err}")
        pytest.skip(f"no Slurm can be started here: {err}")
    yield cluster
    cluster.stop()


def _job_env(tmp: Path, **extra: str) -> dict[str, str]:
    return {
        "CLLM4REC_PYTHON": sys.executable,
        "CLLM4REC_RUNS": str(tmp / "runs"),
        "DS_ACCELERATOR": "cpu",
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
        "RAY_AUTH_MODE": "disabled",
        **extra,
    }


def _submit(
    slurm: OneNodeSlurm, tmp: Path, options: list[str], script: str, args: list[str], **env: str
) -> tuple[str, Path]:
    """sbatch from the repository root (the scripts find it as SLURM_SUBMIT_DIR); returns the
    job id and its output file."""
    out = tmp / "job.out"
    job = slurm.sbatch(
        [*options, f"--output={out}", f"slurm/{script}", *args], cwd=REPO, env=_job_env(tmp, **env)
    )
    return job, out


def _text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def _finished(slurm: OneNodeSlurm, job: str, out: Path, timeout: float = 600) -> dict:
    info = slurm.wait(job, timeout=timeout)
    assert info["JobState"] == "COMPLETED", f"{info}\n{_text(out)[-4000:]}\n{slurm.logs()}"
    return info


def _export(run_dir: Path) -> dict[str, np.ndarray]:
    export = run_dir / "export"
    meta = read_meta(export)
    sizes = {"user": meta.num_users, "item": meta.num_items}
    tables = {
        name: read_exported_rows(export, name, 0, sizes[name.split("_")[0]]).numpy()
        for name in ("user_collab", "item_collab", "user_content", "item_content")
    }
    state = read_backbone_state(export, meta)
    assert state is not None, f"{export} has no backbone state"
    return {**tables, **{f"backbone.{k}": v.numpy() for k, v in state.items()}}


@pytest.fixture(scope="module")
def uninterrupted(slurm, tiny_dataset, tmp_path_factory) -> Path:
    """The pretraining job run to its end: 2 srun tasks on the node."""
    tmp = tmp_path_factory.mktemp("uninterrupted")
    job, out = _submit(
        slurm, tmp, ONE_NODE, "pretrain.sbatch", [f"data.dir={tiny_dataset}", *PRETRAIN],
        MASTER_PORT=str(free_port()),
    )  # fmt: skip
    _finished(slurm, job, out)
    text = _text(out)
    assert "world size 2" in text and "tasks=2" in text, text[-4000:]
    return tmp / "runs" / "cllm4rec-pretrain"


def test_pretraining_with_two_tasks_finishes(uninterrupted):
    assert (uninterrupted / "export" / "meta.json").exists()
    assert not (uninterrupted / "PREEMPTED").exists()


def test_usr1_requeues_and_the_job_resumes_exactly(slurm, tiny_dataset, uninterrupted, tmp_path):
    job, out = _submit(
        slurm, tmp_path, ONE_NODE, "pretrain.sbatch", [f"data.dir={tiny_dataset}", *PRETRAIN],
        MASTER_PORT=str(free_port()),
    )  # fmt: skip
    run_dir = tmp_path / "runs" / "cllm4rec-pretrain"
    latest = run_dir / "checkpoints" / "latest"
    slurm.wait(job, until=lambda state: latest.exists() or state not in ("PENDING", "RUNNING"))
    assert slurm.job(job)["JobState"] == "RUNNING", _text(out)[-4000:]
    # Slurm's own delivery of --signal=B:USR1@<secs>: to the batch shell only.
    slurm.run("scancel", "--signal=USR1", "--batch", job)
    # A requeue passes through COMPLETING (and REQUEUED) while the step is torn down; wait for
    # the job to be pending again, or for a final state that fails the assertion below.
    info = slurm.wait(job, until=lambda state: state == "PENDING" or state in FINAL_STATES)
    assert info["JobState"] == "PENDING" and info["Restarts"] == "1", f"{info}\n{_text(out)}"
    # Slurm holds a requeued job (Reason=BeginTime) for about two minutes; start it sooner, once
    # the node is idle and two seconds have passed (slurmd refuses to launch a job again within
    # the second it was killed in: "already killed, do not launch batch job").
    slurm.wait_node_idle()
    time.sleep(2)
    slurm.run("scontrol", "update", f"JobId={job}", "StartTime=now")
    _finished(slurm, job, out)

    text = _text(out)  # --open-mode=append: both runs of the job
    assert "received SIGUSR1; forwarding it to the step" in text, text[-4000:]
    assert f"requeueing job {job}" in text and "restart=1" in text, text[-4000:]
    assert "resumed from" in text, text[-4000:]
    want, got = _export(uninterrupted), _export(run_dir)
    assert want.keys() == got.keys()
    for name, value in want.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)


@pytest.fixture
def ray_env():
    """(GCS port, environment) of a prep job's Ray head: free ports, a small object store, its
    session files in a temp dir short enough for Ray's socket paths, removed afterwards."""
    port, temp = free_port(), tempfile.mkdtemp(prefix="ray-")
    head = (
        f"--object-store-memory=100000000 --ray-client-server-port={free_port()} "
        f"--dashboard-port={free_port()} --temp-dir={temp}"
    )
    yield port, {"RAY_PORT": str(port), "RAY_HEAD_ARGS": head, "RAY_START_TIMEOUT": "120"}
    shutil.rmtree(temp, ignore_errors=True)


def _ray_left(port: int) -> str:
    left = subprocess.run(
        ["pgrep", "-f", f"gcs_server.*--gcs_server_port={port}"], capture_output=True, text=True
    )
    return left.stdout.strip()


RAY_NODE = ["--nodes=1", "--ntasks-per-node=1", "--cpus-per-task=2"]


def test_ray_prep_job_writes_the_same_dataset(slurm, tiny_dataset, ray_env, tmp_path):
    port, env = ray_env
    data = tmp_path / "data"
    job, out = _submit(
        slurm, tmp_path, RAY_NODE, "ray_prep.sbatch", [*TINY_CATALOG, f"output_dir={data}"], **env
    )
    _finished(slurm, job, out)
    text = _text(out)
    assert "Ray cluster up: 1 node(s)" in text and "stopping the Ray cluster" in text, text
    want = json.loads((tiny_dataset / "manifest.json").read_text())
    got = json.loads((data / "manifest.json").read_text())
    assert got["corpora"] == want["corpora"] and got["files"] == want["files"]
    assert _ray_left(port) == ""


@pytest.mark.slow  # the same EXIT trap on the failure path: opt-in (make test-all)
def test_failing_prep_job_still_tears_the_ray_cluster_down(slurm, ray_env, tmp_path):
    port, env = ray_env
    args = [
        "source=movielens",  # no such file: prepare.py fails once the cluster is up
        f"source.path={tmp_path / 'missing'}",
        f"output_dir={tmp_path / 'data'}",
    ]
    job, out = _submit(slurm, tmp_path, RAY_NODE, "ray_prep.sbatch", args, **env)
    info = slurm.wait(job)
    assert info["JobState"] == "FAILED", f"{info}\n{_text(out)}"
    assert "stopping the Ray cluster" in _text(out)
    assert _ray_left(port) == ""
