# Paybill. `make demo` and `make test` install everything they need into .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test test-fast lint crds emulator operator e2e bench fuzz clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
	$(BIN)/python -m pip install --quiet -e '.[test]' 2>&1 | grep -v '^WARNING: Location' || true
	$(BIN)/python -c "import paybill, kopf, kmock, psycopg, pglast, postgast, cel"
	touch $@

demo: install  ## the whole stack locally: emulated API + PostgreSQL + operator; tenants go Active
	$(BIN)/paybill demo

test: install  ## the full suite (real PostgreSQL, emulated API server, real kopf and kubectl)
	$(BIN)/python -m pytest

test-fast: install  ## without the slow groups (operator end to end, kubectl, demo)
	$(BIN)/python -m pytest -m "not slow"

bench: install  ## benchmarks side by side in one run; writes BENCHMARKS.md
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench

fuzz: install  ## the long grammar-fuzzing campaign of the agent gate (PAYBILL_FUZZ_CAMPAIGN statements, 100000)
	$(BIN)/python -m bench.fuzz

lint: install
	$(BIN)/ruff check operator tests

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
	rm -rf .state .pytest_cache .ruff_cache
