# probefleet developer commands. `make dev` and `make test` install what they need.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install dev test chaos lint typecheck bench dist lock refresh-digests clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

LOCKED := requirements/build.txt requirements/dev.txt

# Every install comes from the lock: exact versions with hashes, nothing resolved on the
# day. A changed lock rebuilds the venv from scratch, so nothing outside the lock stays.
$(STAMP): pyproject.toml uv.lock $(LOCKED)
	@test -n "$(PYTHON)" || { echo "make: no python3.11 or python3 found (set PYTHON=...)" >&2; exit 2; }
	@$(PYTHON) -c "import sys; sys.exit(sys.version_info < (3, 11))" || { echo "make: $(PYTHON) is older than 3.11" >&2; exit 2; }
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes --no-deps $(addprefix -r ,$(LOCKED))
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install probefleet with every extra

dev: $(STAMP) ## run NATS, PostgreSQL, a controller and probes in three regions
	$(VENV)/bin/probefleet dev

test: $(STAMP) ## run the test suite against real NATS and PostgreSQL
	$(PY) -m pytest -q $(PYTEST_ARGS)

# `make test` runs tests/chaos in its short form; this is the full one (10 kills, a 20 s
# freeze, a 10-minute controller outage: about 20 minutes). Each scenario prints a
# `chaos {...}` line of figures; docs/reliability.md says what they mean.
chaos: $(STAMP) ## fault-injection suite, full form: real processes killed, frozen, restarted
	PROBEFLEET_CHAOS=full $(PY) -m pytest -q -s tests/chaos $(PYTEST_ARGS)

lint: $(STAMP) ## ruff, and the lock agrees with pyproject.toml
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/uv lock --check --quiet

TYPECHECK := $(VENV)/typecheck
typecheck: $(STAMP) ## mypy, on the package probefleet as the wheel lays it out
	rm -rf $(TYPECHECK) && mkdir -p $(TYPECHECK)/probefleet
	for d in controller probe shared; do ln -s "$(CURDIR)/$$d" $(TYPECHECK)/probefleet/$$d; done
	ln -s "$(CURDIR)/shared/client" $(TYPECHECK)/probefleet/client
	MYPYPATH=$(TYPECHECK) $(VENV)/bin/mypy -p probefleet

bench: $(STAMP) ## end-to-end benchmarks; results go to bench/RESULTS.md
	$(PY) -m bench.run $(BENCH_ARGS)

# The build leaves probefleet.egg-info in the checkout; it goes at once, since metadata
# found on the path (the checkout, when it is the current folder) hides the venv's own.
dist: $(STAMP) ## build the sdist and the wheel into dist/ (with the locked setuptools)
	rm -rf dist build probefleet.egg-info
	$(PY) -m build --no-isolation --outdir dist . ; status=$$?; rm -rf build probefleet.egg-info; exit $$status

# `make lock` is the only thing that changes versions: it re-resolves every dependency to
# the newest release pyproject.toml allows (uv.lock, one resolution for every platform and
# extra) and exports hashed requirement files that plain pip installs.
EXTRAS := probe controller all dev
lock: $(STAMP) ## refresh uv.lock and requirements/*.txt to the newest allowed versions
	$(VENV)/bin/uv lock --upgrade
	$(foreach x,$(EXTRAS),$(VENV)/bin/uv export --frozen --no-emit-project --no-default-groups --quiet --extra $(x) -o requirements/$(x).txt &&) true
	$(VENV)/bin/uv export --frozen --no-emit-project --only-group build --quiet -o requirements/build.txt

refresh-digests: ## pin the Dockerfiles' base image to the digest its tag names today (needs the registry)
	deploy/refresh-digests.sh deploy/Dockerfile.controller deploy/Dockerfile.probe

clean: ## remove the venv and local data
	rm -rf $(VENV) .probefleet .pytest_cache .mypy_cache .ruff_cache dist build
