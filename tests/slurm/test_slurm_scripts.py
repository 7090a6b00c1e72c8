"""What one node cannot show, under a simulated Slurm (tests/helpers.py): two "nodes" on loopback
(127.0.0.1, 127.0.0.2) run a real 2-rank DeepSpeed job (CPU, gloo) through slurm/*.sbatch, one
rank per node, rendezvous on the first; the Ray script builds a head on one node and a worker on
the other and prepares a dataset. Everything a single node shows (a 2-task job, USR1 ->
checkpoint -> requeue -> exact resume, the Ray prep job and its teardown) runs under a real
Slurm in test_real_slurm.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import TINY, read_log, slurm_env

from cllm4rec_dist.distributed.spawn import free_port
from data_prep.presets import TINY_CATALOG

REPO = Path(__file__).resolve().parents[2]
HOSTS = ["127.0.0.1", "127.0.0.2"]  # two "nodes", both loopback
SCRIPTS = [
    *sorted((REPO / "slurm").glob("*.sbatch")),
    REPO / "slurm" / "lib.sh",
    REPO / "slurm" / "task.sh",
]

pytestmark = pytest.mark.distributed


def test_scripts_are_shellcheck_clean():
    shellcheck = Path(sys.executable).with_name("shellcheck")
    proc = subprocess.run(
        [str(shellcheck), "-x", *map(str, SCRIPTS)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_finetune_then_predict_jobs_on_two_simulated_nodes(tiny_dataset, tmp_path):
    env = slurm_env(tmp_path, HOSTS, MASTER_PORT=str(free_port()))
    cmd = [
        "sbatch",
        "--nodes=2",
        "--ntasks-per-node=1",
        "slurm/finetune.sbatch",
        f"data.dir={tiny_dataset}",
        "stage.init_from=none",
        *TINY,
        "stage.epochs=1",
        "stage.max_steps_per_phase=2",
        "model.mode=full",
        "deepspeed=zero1",
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "world size 2" in out

    run_dir = tmp_path / "runs" / "cllm4rec-finetune"  # base dir + the #SBATCH job name
    assert (run_dir / "metrics.json").exists()
    assert (run_dir / "export" / "meta.json").exists()
    calls = read_log(tmp_path / "calls.jsonl")
    sbatch = next(c for c in calls if c["tool"] == "sbatch")
    assert sbatch["options"]["nodes"] == "2" and sbatch["options"]["requeue"] == "1"
    assert sbatch["options"]["signal"].startswith("B:USR1@")
    sruns = [c for c in calls if c["tool"] == "srun"]
    assert len(sruns) == 1 and sruns[0]["ntasks"] == 2
    assert sruns[0]["options"]["kill-on-bad-exit"] == "1"
    assert ["show", "hostnames", "127.0.0.1,127.0.0.2"] in [
        c["argv"] for c in calls if c["tool"] == "scontrol"
    ]
    assert not [c for c in calls if c["tool"] == "scontrol" and c["argv"][0] == "requeue"]

    # Prediction from that export, through predict.sbatch on the same two "nodes".
    env["MASTER_PORT"] = str(free_port())
    predict = [
        "sbatch",
        "--nodes=2",
        "--ntasks-per-node=1",
        "slurm/predict.sbatch",
        f"data.dir={tiny_dataset}",
        *TINY,
        "model.mode=full",
        f"stage.init_from={run_dir / 'export'}",
    ]
    proc = subprocess.run(predict, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert (tmp_path / "runs" / "cllm4rec-predict" / "predictions" / "manifest.json").exists()


def test_ray_prep_head_and_worker_on_loopback(tmp_path):
    port, client, dashboard = free_port(), free_port(), free_port()
    small = "--object-store-memory=100000000"
    env = slurm_env(
        tmp_path,
        HOSTS,
        RAY_PORT=str(port),
        RAY_AUTH_MODE="disabled",
        RAY_HEAD_ARGS=f"{small} --ray-client-server-port={client} --dashboard-port={dashboard}",
        RAY_WORKER_ARGS=small,
        RAY_START_TIMEOUT="120",
    )
    out_dir = tmp_path / "data"
    cmd = [
        "sbatch",
        "--nodes=2",
        "--cpus-per-task=1",
        "slurm/ray_prep.sbatch",
        *TINY_CATALOG,
        f"output_dir={out_dir}",
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "Ray cluster up: 2 node(s)" in out
    assert (out_dir / "manifest.json").exists()
    sruns = [c for c in read_log(tmp_path / "calls.jsonl") if c["tool"] == "srun"]
    head = [c for c in sruns if "--head" in c["argv"]]
    worker = [c for c in sruns if "--address=" in " ".join(c["argv"])]
    assert len(head) == 1 and head[0]["options"]["nodelist"] == "127.0.0.1"
    assert len(worker) == 1 and worker[0]["options"]["exclude"] == "127.0.0.1"
    # The EXIT trap stopped both Ray nodes: no raylet of this cluster is left.
    left = subprocess.run(
        ["pgrep", "-f", f"gcs_server.*--gcs_server_port={port}"], capture_output=True, text=True
    )
    assert left.stdout.strip() == "", left.stdout


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], "/runs/job"),
        (["run.dir=/a"], "/a"),
        (["+run.dir=/b"], "/b"),
        (["++run.dir=/c", "stage=x"], "/c"),
        (["run.dir=/a", "+run.dir=/d"], "/d"),
        (["xrun.dir=/no"], "/runs/job"),
    ],
)
def test_run_dir_override_spellings(args, expected):
    """The preemption marker is looked for in the run.dir Hydra will use, however spelled."""
    script = f'source "{REPO}/slurm/lib.sh"; effective_run_dir "$@"'
    env = {"CLLM4REC_REPO": str(REPO), "CLLM4REC_RUNS": "/runs", "SLURM_JOB_NAME": "job"}
    out = subprocess.run(
        ["bash", "-c", script, "bash", *args], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == expected
