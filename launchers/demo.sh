#!/usr/bin/env bash
# `make demo`: the whole pipeline on the built-in synthetic catalog, on CPU, with 2 DeepSpeed ranks,
# with the default recipe: data prep (Ray) -> pretrain -> finetune (validation picks the best
# epoch) -> test metrics beside popularity and EASE on the same split. The screen shows the
# stage headers, one progress bar per phase and the final table; DeepSpeed's, Ray's and the
# trainer's log lines go to each stage's log file under $OUT/logs.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${DEMO_OUT:-demo_out}
PY=.venv/bin/python
export DS_ACCELERATOR=cpu OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} TOKENIZERS_PARALLELISM=false
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-disabled} PYTHONUNBUFFERED=1 # local Ray binds 127.0.0.1 only
port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
DS=(.venv/bin/deepspeed --num_gpus 2 --no_local_rank)
LOGS="$OUT/logs"
start=$(date +%s)

# Runs "$@" with its output in $LOGS/$name.log; progress bars (tqdm writes them with \r) are
# echoed to the terminal, everything else stays in the log. On failure the log's tail is shown.
stage() {
  local name=$1
  shift
  if ! "$@" > >(tee "$LOGS/$name.log" | tr '\r' '\n' | grep --line-buffered -E '^epoch [0-9]+ .*\|' \
    | sed -u -E 's/\].*/]/' | awk '{ printf "\r  %s", $0; fflush() } END { print "" }') 2>&1; then
    echo "failed: $name; last lines of $LOGS/$name.log:" >&2
    tail -n 30 "$LOGS/$name.log" >&2
    exit 1
  fi
}

# $OUT is replaced only when it is the demo's own (its marker, or the layout an earlier demo left):
# DEMO_OUT pointed at anything else is refused, never emptied.
MARKER="$OUT/.cllm4rec-output.json"
if [ -d "$OUT" ] && [ -n "$(ls -A "$OUT")" ]; then
  if grep -qs '"command": "demo"' "$MARKER" || { [ ! -e "$MARKER" ] && [ -f "$OUT/logs/prepare.log" ] \
    && [ -f "$OUT/data/manifest.json" ]; }; then
    rm -rf "$OUT"
  else
    echo "error: $OUT holds files the demo did not write; set DEMO_OUT to a new or empty directory" >&2
    exit 2
  fi
elif [ -e "$OUT" ] && [ ! -d "$OUT" ]; then
  echo "error: $OUT exists and is not a directory; set DEMO_OUT to a new or empty directory" >&2
  exit 2
fi
mkdir -p "$LOGS"
printf '{"command": "demo"}\n' > "$MARKER"
# A few cold items and users (held out of training, docs/data_prep.md "Split rule") so that the
# README's infer_items and fold_in commands have rows to infer on this catalog.
echo "== 1/4 data prep (synthetic catalog, 5 % cold items and users) -> $OUT/data"
"$PY" launchers/prepare.py source=synthetic output_dir="$OUT/data" progress=false \
  split.cold_item_fraction=0.05 split.cold_user_fraction=0.05 \
  > "$LOGS/prepare.log" 2>&1 || { tail -n 30 "$LOGS/prepare.log" >&2; exit 1; }

echo "== 2/4 pretraining on 2 ranks -> $OUT/pretrain"
stage pretrain "${DS[@]}" --master_port "$(port)" launchers/pretrain.py data.dir="$OUT/data" \
  run.dir="$OUT/pretrain"

echo "== 3/4 finetuning on 2 ranks -> $OUT/finetune"
stage finetune "${DS[@]}" --master_port "$(port)" launchers/finetune.py data.dir="$OUT/data" \
  run.dir="$OUT/finetune" stage.init_from="$OUT/pretrain/export"

echo "== 4/4 popularity and EASE baselines on the same split"
for method in popularity ease; do
  "$PY" launchers/baseline.py data_dir="$OUT/data" method=$method output="$OUT/$method.json" \
    > "$LOGS/$method.log" 2>&1 || { tail -n 30 "$LOGS/$method.log" >&2; exit 1; }
done

"$PY" -m cllm4rec_dist.eval.report --model "$OUT/finetune/metrics.json" \
  --baseline "$OUT/popularity.json" --baseline "$OUT/ease.json"
echo "demo finished in $(( $(date +%s) - start )) s; logs in $LOGS"
echo "TensorBoard: .venv/bin/tensorboard --logdir $OUT --host 127.0.0.1 --port 6006"
