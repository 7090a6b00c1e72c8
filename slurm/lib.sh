# shellcheck shell=bash
# Shared by slurm/*.sbatch (sourced, not run). Slurm runs a batch script from a copy in its spool
# directory, so the scripts locate the repository through CLLM4REC_REPO or the submit directory.
#
# Environment read here (all optional):
#   CLLM4REC_REPO      repository root (default: $SLURM_SUBMIT_DIR, i.e. submit from the root)
#   CLLM4REC_PYTHON    interpreter with the project installed (default: <repo>/.venv/bin/python
#                      if present, else python3 on PATH)
#   CLLM4REC_RUNS      base directory of run directories (default: <repo>/runs)
#   MASTER_PORT        rendezvous port (default: 20000 + job id mod 20000, stable across requeues)

REPO=${CLLM4REC_REPO:-${SLURM_SUBMIT_DIR:?submit from the repository root or set CLLM4REC_REPO}}
if [[ -z ${CLLM4REC_PYTHON:-} ]]; then
  if [[ -x $REPO/.venv/bin/python ]]; then CLLM4REC_PYTHON=$REPO/.venv/bin/python
  else CLLM4REC_PYTHON=python3; fi
fi
export CLLM4REC_REPO=$REPO CLLM4REC_PYTHON PYTHONUNBUFFERED=1
# EX_TEMPFAIL from the trainer: it saved a checkpoint after SIGUSR1/SIGTERM (cllm4rec_dist/train/
# preemption.py, PREEMPTED_EXIT_CODE); the job is requeued and resumes from it.
readonly PREEMPTED_EXIT_CODE=75

log() { printf '%s [%s %s] %s\n' "$(date '+%F %T')" "${SLURM_JOB_NAME:-job}" \
  "${SLURM_JOB_ID:-?}" "$*" >&2; }

# The job's hosts, one per line, in Slurm's order.
job_hosts() { scontrol show hostnames "${SLURM_JOB_NODELIST:?not inside a Slurm job}"; }

# run_dir: one directory per job name, so a requeued job (same name, same id) finds its own
# checkpoints and resumes; a new submission with the same --job-name continues that run too.
run_dir() { printf '%s/%s\n' "${CLLM4REC_RUNS:-$REPO/runs}" "${SLURM_JOB_NAME:?}"; }

# effective_run_dir OVERRIDES...: the run.dir the job will use: the last of run.dir=,
# +run.dir= or ++run.dir= (Hydra accepts all three), else run_dir.
effective_run_dir() {
  local dir arg
  dir=$(run_dir)
  for arg in "$@"; do
    [[ $arg =~ ^\+{0,2}run\.dir=(.*)$ ]] && dir=${BASH_REMATCH[1]}
  done
  printf '%s\n' "$dir"
}

# has_override KEY ARGS...: true if a Hydra override of KEY is among ARGS.
has_override() {
  local key=$1 arg
  shift
  for arg in "$@"; do
    [[ $arg == "$key="* || $arg == "+$key="* || $arg == "++$key="* ]] && return 0
  done
  return 1
}

# Signal forwarding (installed by launch_job). Slurm sends --signal=B:USR1@<secs> to the batch
# shell only, and SIGTERM (preemption, scancel) to every process of the job; both are passed to
# the running step, whose srun forwards them to every task: each rank finishes its step,
# checkpoints and exits 75.
STEP_PID=
forward_signal() {
  log "received SIG$1; forwarding it to the step (pid ${STEP_PID:-none})"
  [[ -n $STEP_PID ]] && kill -s "$1" "$STEP_PID" 2>/dev/null || true
}

# run_step CMD...: run CMD in the background (so traps run while it works), wait for it through
# any number of forwarded signals, and return its exit status.
run_step() {
  "$@" &
  STEP_PID=$!
  local rc
  while :; do
    rc=0
    wait "$STEP_PID" || rc=$?
    # A trapped signal interrupts `wait` with 128+n while the step runs on: wait again.
    if ((rc > 128)) && kill -0 "$STEP_PID" 2>/dev/null; then continue; fi
    if ((rc > 128)); then
      # The step ended while the trap ran: its real status is still waitable once (127 if the
      # first wait had already collected it, as for a step killed by a signal).
      local again=0
      wait "$STEP_PID" 2>/dev/null || again=$?
      ((again == 127)) || rc=$again
    fi
    STEP_PID=
    return "$rc"
  done
}

# launch_job LAUNCHER OVERRIDES...: one srun task per GPU (slurm/task.sh maps Slurm's task ids to
# RANK / WORLD_SIZE / LOCAL_RANK), rendezvous on the first host; requeue on exit status 75.
launch_job() {
  local launcher=$1
  shift
  local -a overrides=()
  local dir
  dir=$(effective_run_dir "$@")
  has_override run.dir "$@" || overrides+=("run.dir=$dir")
  overrides+=("$@")
  # Written by the trainer (rank 0) after its preemption checkpoint; see below.
  local marker=$dir/PREEMPTED
  rm -f "$marker"
  local -a hosts
  mapfile -t hosts < <(job_hosts)
  MASTER_ADDR=${hosts[0]:?no hosts in SLURM_JOB_NODELIST}
  MASTER_PORT=${MASTER_PORT:-$((20000 + ${SLURM_JOB_ID:?} % 20000))}
  export MASTER_ADDR MASTER_PORT
  log "launcher=$launcher nodes=${SLURM_JOB_NUM_NODES:-?} tasks=${SLURM_NTASKS:-?}" \
    "master=$MASTER_ADDR:$MASTER_PORT restart=${SLURM_RESTART_COUNT:-0}"
  log "overrides: ${overrides[*]}"
  trap 'forward_signal USR1' USR1
  trap 'forward_signal TERM' TERM
  cd "$REPO" || return
  local rc=0
  run_step srun --kill-on-bad-exit=1 "$REPO/slurm/task.sh" \
    "$CLLM4REC_PYTHON" "launchers/$launcher.py" "${overrides[@]}" || rc=$?
  # With --kill-on-bad-exit srun may report a rank that was still shutting down as killed
  # (143) instead of 75, so the trainer's marker counts as well.
  if ((rc == PREEMPTED_EXIT_CODE)) || [[ -f $marker ]]; then
    log "trainer checkpointed and exited $rc: requeueing job $SLURM_JOB_ID"
    scontrol requeue "$SLURM_JOB_ID"
    return 0
  fi
  log "step finished with status $rc"
  return "$rc"
}
