# sensord — two commands: `make run` and `make test`. Everything else is a helper.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test venv services lint typecheck pytest bench bench-ingest clean help install uninstall

help:
	@echo "make run    - set up, then run sensord fed by simulated sensors (Ctrl-C stops)"
	@echo "make test   - set up, then lint (ruff), types (mypy --strict) and pytest"
	@echo "make bench  - every benchmark (ingest, rules, notify, simulator, latency, history), JSON on stdout"

$(STAMP): pyproject.toml
	@bash scripts/venv.sh "$(PYTHON)" "$(VENV)"
	@touch $@

venv: $(STAMP)

services:
	@bash scripts/ensure-services.sh

run: venv services
	@VENV=$(VENV) bash scripts/run-demo.sh

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

pytest: venv services
	@bash scripts/ensure-test-tools.sh
	$(BIN)/pytest $(PYTEST_ARGS)

test: lint typecheck pytest

# every benchmark, one JSON object on stdout; `make bench BENCH="ingest rules"` picks some.
# `make bench-ingest BENCH_ARGS="--messages 50000"` runs the ingest one with its options.
bench: venv services
	@$(BIN)/python -m bench.all $(BENCH)

bench-ingest: venv services
	@$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info

install:
	@bash scripts/install.sh

uninstall:
	@bash scripts/install.sh uninstall $(if $(PURGE),--purge)
