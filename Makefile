# Paybill. `make demo` and `make test` install everything they need into .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PEER := .venv-peer

.PHONY: install demo test test-fast lint crds emulator operator e2e bench fuzz clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
	$(BIN)/python -m pip install --quiet -e '.[emulator,test]' 2>&1 | grep -v '^WARNING: Location' || true
	@# no PostgreSQL server binaries on this machine: the bundled server (pgserver wheel) instead
	$(BIN)/python -c "import sys; from paybill.database.server import find_binaries; sys.exit(find_binaries() is None)" \
	  || $(BIN)/python -m pip install --quiet -e '.[pgserver]'
	$(BIN)/python -c "import paybill, kopf, kmock, psycopg, pglast, postgast, cel"
	touch $@

demo: install  ## the whole stack locally, from nothing (RESUME=1 keeps the last run's database); tenants go Active
	$(BIN)/paybill demo $(if $(RESUME),--resume)

test: install lint  ## lint, types, then the full suite (real PostgreSQL, emulated API server, real kopf and kubectl)
	$(BIN)/python -m pytest

test-fast: install  ## without the slow groups (operator end to end, kubectl, demo)
	$(BIN)/python -m pytest -m "not slow"

bench: install $(PEER)/.installed-stamp  ## benchmarks side by side in one run; writes BENCHMARKS.md
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench

# The peer gateway (postgres-mcp) needs Python >= 3.12 and pins pglast 7, which excludes ours: its own venv.
# pglast 7.2.0 itself is not on every index; any 7.x parses the same PostgreSQL 17 grammar.
$(PEER)/.installed-stamp:
	@py="$${PEER_PYTHON:-}"; \
	for candidate in python3.13 python3.12 $$(ls -d $$HOME/.pyenv/versions/3.1[2-9]*/bin/python3 2>/dev/null); do \
	  [ -n "$$py" ] && break; \
	  $$candidate -c 'import sys; assert sys.version_info >= (3, 12)' 2>/dev/null && py=$$candidate; \
	done; \
	if [ -z "$$py" ]; then echo "bench: no Python >= 3.12 for postgres-mcp; its rows will say not installed"; exit 0; fi; \
	$$py -m venv $(PEER) && \
	$(PEER)/bin/python -m pip install --quiet --no-deps postgres-mcp==0.3.0 && \
	$(PEER)/bin/python -m pip install --quiet 'attrs>=25.3' 'humanize>=4.8' 'instructor>=1.7.9' 'mcp[cli]>=1.5,<2' \
	  'pglast>=7.2,<8' 'psycopg-pool>=3.2.6' 'psycopg[binary]>=3.2.6' && \
	$(PEER)/bin/python -c 'from postgres_mcp.sql.safe_sql import SafeSqlDriver' && touch $@

fuzz: install  ## the long grammar-fuzzing campaign of the agent gate (PAYBILL_FUZZ_CAMPAIGN statements, 100000)
	$(BIN)/python -m bench.fuzz --benchmarks BENCHMARKS.md

lint: install  ## ruff (lint and format) and mypy
	$(BIN)/ruff check operator tests bench
	$(BIN)/ruff format --check operator tests bench
	$(BIN)/mypy

crds: install  ## regenerate crds/ (and the chart's copy) from operator/paybill/api
	$(BIN)/paybill crds --out crds
	mkdir -p charts/paybill/crds && cp crds/*.yaml charts/paybill/crds/

emulator: install  ## the emulated API server on 127.0.0.1:8001 with a kubeconfig in .state/
	$(BIN)/paybill emulator

operator: install  ## the operator against the current kubeconfig
	$(BIN)/paybill operator

e2e: install  ## against a real cluster (kind + Helm); skips cleanly when none is reachable
	@if command -v kubectl >/dev/null && kubectl version --request-timeout=5s >/dev/null 2>&1 \
	    && ! kubectl version -o json 2>/dev/null | grep -q emulated; then \
	  kubectl apply -f crds/ && $(BIN)/python -m pytest tests/e2e; \
	else echo "e2e: no real Kubernetes cluster reachable; skipped"; fi

clean:
	rm -rf .state .pytest_cache .ruff_cache $(PEER)
