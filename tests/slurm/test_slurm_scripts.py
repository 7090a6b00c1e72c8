"""The batch scripts under a simulated Slurm (tests/helpers.py): two "nodes" on loopback
run a real 2-rank DeepSpeed job (CPU, gloo) through slurm/*.sbatch; USR1 to the batch shell is
forwarded to the ranks, the trainer checkpoints and exits 75 and the script requeues the job,
whose next run resumes; the Ray script builds a head + worker cluster and prepares a dataset."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
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


def _output(path: Path) -> str:
    return path.read_text() if path.exists() else ""


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


def test_usr1_checkpoints_requeues_and_the_requeued_job_resumes(tiny_dataset, tmp_path):
    env = slurm_env(tmp_path, HOSTS, MASTER_PORT=str(free_port()), SLURM_STUB_JOB_ID="777")
    cmd = [
        "sbatch",
        "--nodes=2",
        "--ntasks-per-node=1",
        "slurm/pretrain.sbatch",
        f"data.dir={tiny_dataset}",
        *TINY,
        "stage.epochs=40",
        "stage.content_warmup_epochs=0",
        "stage.max_steps_per_phase=3",
    ]
    latest = tmp_path / "runs" / "cllm4rec-pretrain" / "checkpoints" / "latest"
    log = tmp_path / "job.out"
    with log.open("w") as out:
        job = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while not latest.exists() and job.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert job.poll() is None and latest.exists(), _output(log)[-4000:]
        job.send_signal(signal.SIGUSR1)  # what --signal=B:USR1@<secs> does before the time limit
        assert job.wait(timeout=300) == 0, _output(log)[-4000:]
    text = _output(log)
    assert "forwarding it to the step" in text and "saved" in text
    calls = read_log(tmp_path / "calls.jsonl")
    assert {"tool": "srun-signal", "signal": "SIGUSR1"} in [
        {k: c[k] for k in ("tool", "signal")} for c in calls if c["tool"] == "srun-signal"
    ]
    assert ["requeue", "777"] in [c["argv"] for c in calls if c["tool"] == "scontrol"]
    saved = latest.read_text().strip()

    # Slurm runs the requeued job again: same name, same id, hence the same run.dir.
    env["SLURM_STUB_RESTART_COUNT"] = "1"
    # A fresh rendezvous port: here the requeued job starts on the same host the moment the
    # first one exits, and reusing its port can find it still bound (a rank then fails to start
    # the store while the other waits for it), which real requeues, minutes later, do not meet.
    env["MASTER_PORT"] = str(free_port())
    again = subprocess.run(
        [*cmd, "run.max_steps=2"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = again.stdout + again.stderr
    assert again.returncode == 0, out[-4000:]
    assert f"resumed from {latest.parent / saved}" in out
    assert "restart=1" in out


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


@pytest.mark.slow  # the same EXIT trap as above, on the failure path: opt-in (make test-all)
def test_failing_prep_still_tears_the_cluster_down(tmp_path):
    port = free_port()
    env = slurm_env(
        tmp_path,
        HOSTS[:1],
        RAY_PORT=str(port),
        RAY_AUTH_MODE="disabled",
        RAY_HEAD_ARGS=f"--object-store-memory=100000000 "
        f"--ray-client-server-port={free_port()} "
        f"--dashboard-port={free_port()}",
        RAY_START_TIMEOUT="120",
    )
    cmd = [
        "sbatch",
        "--nodes=1",
        "--cpus-per-task=1",
        "slurm/ray_prep.sbatch",
        "source=movielens",  # no such file: prepare.py fails once the cluster is up
        f"source.path={tmp_path / 'missing'}",
        f"output_dir={tmp_path / 'data'}",
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-4000:]
    assert "stopping the Ray cluster" in out
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
