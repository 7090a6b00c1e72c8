#!/usr/bin/env bash
# `make demo`: the whole pipeline on the built-in synthetic catalog, on CPU, with 2 DeepSpeed ranks:
# data prep (Ray) -> pretrain -> finetune (validation picks the best epoch) -> test metrics beside
# a popularity baseline on the same split.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${DEMO_OUT:-demo_out}
PY=.venv/bin/python
export DS_ACCELERATOR=cpu OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} TOKENIZERS_PARALLELISM=false
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-disabled} PYTHONUNBUFFERED=1 # local Ray binds 127.0.0.1 only
port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
DS=(.venv/bin/deepspeed --num_gpus 2 --no_local_rank)
MODEL=(model.mode=full deepspeed=zero2 optim.lr=1e-3)
start=$(date +%s)

rm -rf "$OUT"
echo "== 1/4 data prep (synthetic catalog) -> $OUT/data"
"$PY" data_prep/prepare.py source=synthetic output_dir="$OUT/data"

echo "== 2/4 pretraining on 2 ranks -> $OUT/pretrain"
"${DS[@]}" --master_port "$(port)" launchers/pretrain.py data.dir="$OUT/data" \
  run.dir="$OUT/pretrain" "${MODEL[@]}" run.progress_bar=false

echo "== 3/4 finetuning on 2 ranks -> $OUT/finetune"
"${DS[@]}" --master_port "$(port)" launchers/finetune.py data.dir="$OUT/data" \
  run.dir="$OUT/finetune" stage.init_from="$OUT/pretrain/export" "${MODEL[@]}" \
  run.progress_bar=false

echo "== 4/4 popularity baseline on the same split"
"$PY" launchers/baseline.py data_dir="$OUT/data" method=popularity output="$OUT/popularity.json" \
  > /dev/null

"$PY" -m cllm4rec_dist.eval.report --model "$OUT/finetune/metrics.json" \
  --baseline "$OUT/popularity.json"
echo "demo finished in $(( $(date +%s) - start )) s"
echo "TensorBoard: .venv/bin/tensorboard --logdir $OUT --host 127.0.0.1 --port 6006"
