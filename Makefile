# `make test` and `make demo` work on a fresh machine: they create .venv when it is missing and
# install the project with torch pinned (constraints.txt) so pip never pulls a CUDA build.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# DeepSpeed picks its CPU accelerator on machines without CUDA; say it explicitly.
export DS_ACCELERATOR ?= cpu
export RAY_AUTH_MODE ?= disabled
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup test test-all lint format demo bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c constraints.txt -e '.[dev,bench]'
	touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check cllm4rec_dist data_prep launchers bench tests experiments
	$(VENV)/bin/ruff format --check cllm4rec_dist data_prep launchers bench tests experiments
	$(VENV)/bin/shellcheck -x .ci/run slurm/*.sbatch slurm/*.sh launchers/*.sh bench/gpu/*.sh

format: $(STAMP)
	$(VENV)/bin/ruff format cllm4rec_dist data_prep launchers bench tests experiments
	$(VENV)/bin/ruff check --fix cllm4rec_dist data_prep launchers bench tests experiments

# Default run: unit tests plus the 2-rank CPU (gloo / DeepSpeed) tests; `slow` ones are opt-in.
test: $(STAMP) lint
	$(PY) -m pytest -m "not slow" -q tests

test-all: $(STAMP)
	$(PY) -m pytest -q tests

demo: $(STAMP)
	bash launchers/demo.sh

clean:
	rm -rf demo_out bench_out outputs runs .pytest_cache
