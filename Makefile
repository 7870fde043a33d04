# probefleet developer commands. `make dev` and `make test` install what they need.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install dev test lint typecheck bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "make: no python3.11 or python3 found (set PYTHON=...)" >&2; exit 2; }
	@$(PYTHON) -c "import sys; sys.exit(sys.version_info < (3, 11))" || { echo "make: $(PYTHON) is older than 3.11" >&2; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install probefleet with every extra

dev: $(STAMP) ## run NATS, PostgreSQL, a controller and probes in three regions
	$(VENV)/bin/probefleet dev

test: $(STAMP) ## run the test suite against real NATS and PostgreSQL
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP) ## ruff
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP) ## mypy
	$(VENV)/bin/mypy

bench: $(STAMP) ## end-to-end benchmarks; results go to bench/RESULTS.md
	$(PY) -m bench.run $(BENCH_ARGS)

clean: ## remove the venv and local data
	rm -rf $(VENV) .probefleet .pytest_cache .mypy_cache .ruff_cache
