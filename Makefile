# Two entry points for a fresh machine; each installs what it needs into .venv first.
#   make up     the whole stack on the built-in simulated fleet (classifier :4001, LiteLLM :4000)
#   make test   lint, type-check and the full test suite (what .ci/run runs)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: up up-dev test lint bench
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

up: $(STAMP)
	$(BIN)/torchrouter up

up-dev: $(STAMP)
	$(BIN)/torchrouter up --dev

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	scripts/install-system-deps.sh
	$(BIN)/torchrouter validate
	$(BIN)/pytest -q -p no:cacheprovider

bench: $(STAMP)
	command -v wrk >/dev/null || apt-get install -y -qq --no-install-recommends wrk
	$(BIN)/python -m benchmarks.bench_matrix
	$(BIN)/python -m benchmarks.bench_ttft
	$(BIN)/python -m benchmarks.bench_overhead
	$(BIN)/python -m benchmarks.bench_wait_estimate
	$(BIN)/python -m benchmarks.bench_stream_shape
	$(BIN)/python -m benchmarks.bench_cancel_on_disconnect
	$(BIN)/python -m benchmarks.bench_tiers
	$(BIN)/python -m benchmarks.bench_ranker
