#!/usr/bin/env bash
# One training rank, started by srun (one task per GPU): maps Slurm's task ids to the variables
# torch.distributed / deepspeed.init_distributed read, then becomes the trainer (exec, so the
# signals srun forwards reach it directly). MASTER_ADDR / MASTER_PORT come from the batch script.
set -euo pipefail
export RANK=${SLURM_PROCID:?} WORLD_SIZE=${SLURM_NTASKS:?} LOCAL_RANK=${SLURM_LOCALID:?}
export NODE_RANK=${SLURM_NODEID:-0}
: "${MASTER_ADDR:?set by the batch script}" "${MASTER_PORT:?set by the batch script}"
exec "$@"
