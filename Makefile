# sensord — two commands: `make run` and `make test`. Everything else is a helper.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test venv services lint typecheck pytest bench bench-ingest chaos soak clean help install uninstall cluster-start cluster-stop cluster-status test-cluster test-slow

help:
	@echo "make run    - set up, then run sensord fed by simulated sensors (Ctrl-C stops)"
	@echo "make test   - set up, then lint (ruff, import contracts), types (mypy --strict) and pytest"
	@echo "make bench  - every benchmark (ingest, rules, notify, simulator, latency, history, product, ceiling, formats, telemetry, cluster), JSON on stdout"
	@echo "make chaos  - load + faults for CHAOS_MINUTES (5), then reconcile: JSON report + summary"
	@echo "make soak   - SOAK_MINUTES (30) at SOAK_RATE (5000) readings/s, no faults: RSS drift"

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
	$(BIN)/lint-imports  # the pure-core contract in pyproject.toml ([tool.importlinter])

typecheck: venv
	$(BIN)/mypy

# two worker processes, each running whole files (their module fixtures, private brokers
# on free ports); PYTEST_WORKERS= runs the suite in one process
PYTEST_WORKERS ?= -n 2 --dist loadfile

pytest: venv services
	@bash scripts/ensure-test-tools.sh
	$(BIN)/pytest $(PYTEST_WORKERS) $(PYTEST_ARGS)

test: lint typecheck pytest

# every benchmark, one JSON object on stdout; `make bench BENCH="ingest rules"` picks some.
# `make bench-ingest BENCH_ARGS="--messages 50000"` runs the ingest one with its options.
bench: venv services
	@$(BIN)/python -m bench.all $(BENCH)

bench-ingest: venv services
	@$(BIN)/python -m bench $(BENCH_ARGS)

# not part of `make test` (a one-minute variant is in `make test-slow`): docs/chaos.md. The JSON report goes to
# the run's temporary directory unless CHAOS_REPORT names a file; exit 1 when a target is missed.
CHAOS_MINUTES ?= 5
CHAOS_RATE ?= 500
SOAK_MINUTES ?= 30
SOAK_RATE ?= 5000

chaos: venv services
	$(BIN)/python -m tests.chaos chaos --minutes $(CHAOS_MINUTES) --rate $(CHAOS_RATE) $(if $(CHAOS_REPORT),--report $(CHAOS_REPORT))

soak: venv services
	$(BIN)/python -m tests.chaos soak --minutes $(SOAK_MINUTES) --rate $(SOAK_RATE) $(if $(CHAOS_REPORT),--report $(CHAOS_REPORT))

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info

install:
	@bash scripts/install.sh

uninstall:
	@bash scripts/install.sh uninstall $(if $(PURGE),--purge)

# a local 3-node RabbitMQ cluster (docs/scale-out.md): private names, ports 5681-5683,
# never the machine's own node; `make cluster-stop` stops everything it started
cluster-start: venv
	@PYTHON=$(BIN)/python bash scripts/rabbitmq-cluster.sh start $(CLUSTER_ARGS)

cluster-stop: venv
	@PYTHON=$(BIN)/python bash scripts/rabbitmq-cluster.sh stop

cluster-status: venv
	@PYTHON=$(BIN)/python bash scripts/rabbitmq-cluster.sh status

# the cluster tests that take minutes (rolling restart, a 60 s cut-off, three edges and
# three notifiers); the short leader-kill test runs in `make test`
test-cluster: venv services
	$(BIN)/pytest -m cluster tests/cluster $(PYTEST_ARGS)

test-slow: venv services
	$(BIN)/pytest -m slow $(PYTEST_ARGS)
