# syntax=docker/dockerfile:1
# The Paybill operator's image. `make docker-build` tags it as the chart's default image,
# ghcr.io/paybill/paybill:<the chart's appVersion>. Every base is pinned by digest (refresh one with
# `docker buildx imagetools inspect IMAGE:TAG`); tests/chart/test_dockerfile.py checks the rules this file keeps.
ARG PYTHON_BASE=python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91
ARG TERRAFORM_BASE=hashicorp/terraform:1.11.4@sha256:5820b87995595425074f881500a037b0ccd41158d0d9b44d78f5f120612f2d3d

# Terraform, as HashiCorp builds it (a static binary).
FROM ${TERRAFORM_BASE} AS terraform

# The operator and its dependencies in a virtual environment, at the versions `make test` ran (constraints.txt).
# EXTRAS: the cloud adapters' SDKs (Plan spec.provisioning.cloud); empty for an image without them.
FROM ${PYTHON_BASE} AS build
ARG EXTRAS=clouds
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
# A C compiler, in this stage only: setup.py compiles the policy engine's hot modules with mypyc
# (paybill/policy/compiled.py lists them); the runtime gets the built extension modules, never gcc.
RUN apt-get update \
 && apt-get install --yes --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py constraints.txt README.md ./
COPY operator/ operator/
# The pinned pglast's sources: setup.py compiles the C tree readers (policy/treedicts.c, treeprotobuf.c) against them.
RUN python -m venv /opt/paybill \
 && /opt/paybill/bin/pip download --no-deps --no-binary pglast -c constraints.txt -d build/pglast-sdist pglast \
 && /opt/paybill/bin/pip install --no-compile -c constraints.txt ".${EXTRAS:+[$EXTRAS]}" \
 && /opt/paybill/bin/python -c "import paybill.cli, paybill.handlers, kopf, psycopg, pglast" \
 && /opt/paybill/bin/python -c "from paybill.policy import compiled as c; assert c.built() == list(c.COMPILED) and not c.stale()" \
 && /opt/paybill/bin/python -c "from paybill.policy import tree, treedicts as d, treeprotobuf as p; assert tree.READER is d.parse and tree.SERIALIZER is p.parse"

# The runtime: Python, the PostgreSQL client tools (pg_dump/psql for final backups), Terraform, the venv.
FROM ${PYTHON_BASE} AS runtime
RUN apt-get update \
 && apt-get install --yes --no-install-recommends postgresql-client-15 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 paybill \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/paybill --no-create-home --shell /usr/sbin/nologin paybill \
 && install --directory --owner 10001 --group 10001 --mode 0700 /var/lib/paybill
COPY --from=terraform /bin/terraform /usr/local/bin/terraform
COPY --from=build /opt/paybill /opt/paybill
ENV PATH=/opt/paybill/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HOME=/var/lib/paybill \
    CHECKPOINT_DISABLE=1 TF_IN_AUTOMATION=1
LABEL org.opencontainers.image.title="paybill" \
      org.opencontainers.image.description="Paybill operator: multi-tenant SaaS with a policy gate for AI agents" \
      org.opencontainers.image.version="0.1.0"
# The chart runs it as this user too (podSecurityContext.runAsUser), with a read-only root file system.
USER 10001:10001
WORKDIR /var/lib/paybill
RUN pg_dump --version && terraform version && paybill --help >/dev/null
ENTRYPOINT ["paybill"]
CMD ["operator"]
