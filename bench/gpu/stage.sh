#!/usr/bin/env bash
# Stage what the GPU check carries to the device machine (run here, where registries are
# reachable): .whl/ holds Python 3.12 x86-64 wheels of the packages that machine lacks, pinned to
# the versions in .venv; .gpu_data/ml100k is ml-100k prepared by launchers/prepare.py (Ray's 79 MB
# wheel cannot travel, so the data is prepared here). Both folders are git-ignored; the device
# call names them in `carry`. Prints the size of all that travels.
#
#   bash bench/gpu/stage.sh [RAW_ML100K_DIR]      (default ../shared/data/ml-100k)
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=.venv/bin/python
RAW=${1:-../shared/data/ml-100k}
WHL=.whl
DATA=.gpu_data/ml100k

# Import name is not always the distribution name; versions come from the venv.
PURE=(hjson pydantic annotated-types typing-inspection typing_extensions hydra-core omegaconf
  webdataset braceexpand gguf)
BINARY=(pydantic_core)
SDIST=(deepspeed antlr4-python3-runtime)
version() { "$PY" -c 'import importlib.metadata as m, sys; print(m.version(sys.argv[1]))' "$1"; }
pins() { for name in "$@"; do echo "$name==$(version "$name")"; done; }

rm -rf "$WHL" && mkdir -p "$WHL"
mapfile -t pinned < <(pins "${PURE[@]}" "${BINARY[@]}")
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  -d "$WHL" "${pinned[@]}"
# DeepSpeed and antlr4 ship as sdists: pure-Python wheels built here (DeepSpeed's ops JIT-build
# on first use; the check's AdamW is torch's, so none is built).
mapfile -t pinned < <(pins "${SDIST[@]}")
"$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$WHL" "${pinned[@]}"

rm -rf "$DATA" && mkdir -p "$(dirname "$DATA")"
RAY_AUTH_MODE=disabled "$PY" launchers/prepare.py source=movielens "source.path=$RAW" \
  filter.min_rating=3 progress=false "output_dir=$DATA" >/dev/null

ls -l "$WHL"
du -sh "$WHL" "$DATA"
# What a device call sends: tracked and untracked-not-ignored files, plus the carried folders.
"$PY" bench/gpu/travel_size.py "$WHL" "$DATA"
