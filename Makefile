# The two commands of the README: `make run` and `make test`. Each sets everything up first.
# `make run` installs what serving needs (every store and Redis driver); `make test`,
# `make bench` and the linters install the development extra on top.
# bash with pipefail: an install piped through its progress filter still fails when pip does.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup setup-dev deps run demo bench soak soak-long chaos test lint typecheck check clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "convmem needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# pip's own progress (one line per package it collects), after a line that says what is
# happening: the first install takes a minute or more.
$(BIN)/.installed-all: pyproject.toml | $(BIN)/python
	@echo "installing convmem with its store and Redis drivers into $(VENV) (the first time takes a minute or two) ..."
	$(BIN)/pip install --progress-bar off -e ".[all]" | awk '/^(Collecting|Successfully installed)/'
	@touch $@

$(BIN)/.installed-dev: pyproject.toml | $(BIN)/python
	@echo "installing convmem with its development tools into $(VENV) (the first time takes several minutes) ..."
	$(BIN)/pip install --progress-bar off -e ".[dev]" | awk '/^(Collecting|Successfully installed)/'
	@touch $@ $(BIN)/.installed-all

setup: $(BIN)/.installed-all

setup-dev: $(BIN)/.installed-dev

deps:
	@scripts/install-system-deps.sh

run: setup
	$(BIN)/convmem serve

demo: setup
	$(BIN)/convmem demo

# The benchmark is a project of the repository (bench/convmem_bench), not of the wheel.
bench: setup-dev deps
	@scripts/ensure-services.sh
	PYTHONPATH=bench $(BIN)/python -m convmem_bench --out bench

# Many MCP clients through HAProxy against 1, 2 and 3 instances, a minute each; the
# figures go into BENCHMARKS.md (a short run is part of make test).
soak: setup-dev deps
	@scripts/ensure-services.sh
	PYTHONPATH=bench $(BIN)/python -m convmem_bench.soak --out bench --document BENCHMARKS.md

# Faults under load, longer and harder than in `make test`, and 10,000 fuzz cases each;
# writes RELIABILITY.md from what it measured (even when a scenario fails, then fails).
chaos: setup-dev deps
	@scripts/ensure-services.sh
	rm -f bench/reliability.jsonl
	CONVMEM_CHAOS=full CONVMEM_CHAOS_RESULTS=$(CURDIR)/bench/reliability.jsonl \
		$(BIN)/pytest tests/chaos -p no:cacheprovider; status=$$?; \
		PYTHONPATH=bench $(BIN)/python -m tests.chaos.report bench/reliability.jsonl RELIABILITY.md > RELIABILITY.md.new; \
		mv RELIABILITY.md.new RELIABILITY.md; exit $$status

# An hour of steady load through HAProxy with a fault every three minutes (Redis restarted
# and hung, store connections cut, an instance SIGKILLed): memory, descriptors and
# connections sampled, every acknowledged chat looked for in the store; into RELIABILITY.md.
soak-long: setup-dev deps
	@scripts/ensure-services.sh
	PYTHONPATH=bench $(BIN)/python -m convmem_bench.endurance --out bench --document RELIABILITY.md

lint: setup-dev
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: setup-dev
	$(BIN)/mypy

test: setup-dev deps lint typecheck
	@scripts/ensure-services.sh
	$(BIN)/pytest

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache data
