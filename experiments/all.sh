#!/usr/bin/env bash
# The quality runs of docs/results.md: four datasets end to end (prepare -> popularity + EASE ->
# pretrain -> finetune on 2 CPU ranks), the ml-100k ablations, then the PNG training curves.
#   bash experiments/all.sh [OUT]        (OUT defaults to /tmp/quality; never inside the repo)
# Every step whose outputs exist is reused, so a rerun only does what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-/tmp/quality}
PY=.venv/bin/python
export DS_ACCELERATOR=cpu OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} TOKENIZERS_PARALLELISM=false
export RAY_AUTH_MODE=disabled

"$PY" -m experiments.run ml100k --out "$OUT/ml100k" --variants cllm4rec no_finetune
"$PY" -m experiments.run lastfm --out "$OUT/lastfm"
"$PY" -m experiments.run scientific --out "$OUT/scientific"
# Beauty EASE inverts a 12,101 x 12,101 matrix: about 6 GB of RAM.
"$PY" -m experiments.run beauty --out "$OUT/beauty"
"$PY" -m experiments.run ml100k --out "$OUT/ml100k" --variants lambda_v0 frozen lora
"$PY" -m experiments.run ml100k --out "$OUT/ml100k" --variants frozen --seeds 0 1 2

for d in ml100k lastfm scientific beauty; do
  mapfile -t runs < <("$PY" -c 'import json, sys
print("\n".join(json.load(open(sys.argv[1]))["rows"]["cllm4rec"]["per_seed"][0]["run_dirs"]))' \
    "$OUT/$d/results.json")
  "$PY" experiments/plot_curves.py "${runs[@]}" --out "docs/results/$d.png" --title "$d"
done
