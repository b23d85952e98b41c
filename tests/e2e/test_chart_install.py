"""On a real cluster (kind), run by `make e2e` only when one is reachable: the chart installs with the image
`make docker-build` made (PAYBILL_E2E_IMAGE, loaded into kind by make e2e), its `helm test` passes, the same
scenario as tests/chart/test_install.py brings a Tenant to Active, and the release uninstalls.

The tenant database: PAYBILL_E2E_DATABASE_URL when set (reachable from the cluster), else a throwaway PostgreSQL
Deployment in the release's namespace (image PAYBILL_E2E_POSTGRES_IMAGE, default postgres:15)."""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RELEASE, NAMESPACE = "paybill", "paybill-e2e"
HELM = os.environ.get("PAYBILL_E2E_HELM", "")
IMAGE = os.environ.get("PAYBILL_E2E_IMAGE", "")
pytestmark = pytest.mark.skipif(not (HELM and IMAGE), reason="run by make e2e (PAYBILL_E2E_HELM, PAYBILL_E2E_IMAGE)")


def run(*args: str, stdin: str | None = None, timeout: float = 600) -> str:
    result = subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(args)}: {result.stderr}{result.stdout}"
    return result.stdout


def kubectl(*args: str, stdin: str | None = None) -> str:
    return run("kubectl", "-n", NAMESPACE, *args, stdin=stdin)


POSTGRES = """
apiVersion: apps/v1
kind: Deployment
metadata: {{name: postgres}}
spec:
  selector: {{matchLabels: {{app: postgres}}}}
  template:
    metadata: {{labels: {{app: postgres}}}}
    spec:
      containers:
        - name: postgres
          image: {image}
          env: [{{name: POSTGRES_PASSWORD, value: "{password}"}}]
          ports: [{{containerPort: 5432}}]
          readinessProbe: {{exec: {{command: [pg_isready, -U, postgres]}}, periodSeconds: 2}}
---
apiVersion: v1
kind: Service
metadata: {{name: postgres}}
spec:
  selector: {{app: postgres}}
  ports: [{{port: 5432}}]
"""


@pytest.fixture
def database() -> Iterator[str]:
    run("kubectl", "create", "namespace", NAMESPACE)
    try:
        url = os.environ.get("PAYBILL_E2E_DATABASE_URL")
        if not url:
            password = secrets.token_hex(16)
            image = os.environ.get("PAYBILL_E2E_POSTGRES_IMAGE", "postgres:15")
            kubectl("apply", "-f", "-", stdin=POSTGRES.format(image=image, password=password))
            kubectl("rollout", "status", "deployment/postgres", "--timeout=300s")
            url = f"postgresql://postgres:{password}@postgres.{NAMESPACE}.svc:5432/postgres"
        kubectl("create", "secret", "generic", "paybill-database", f"--from-literal=DATABASE_URL={url}")
        yield url
    finally:
        run("kubectl", "delete", "namespace", NAMESPACE, "--wait=false")


def test_the_chart_installs_passes_its_test_and_brings_a_tenant_to_active(database: str) -> None:
    repository, _, tag = IMAGE.rpartition(":")
    helm = [HELM, "--namespace", NAMESPACE]
    run(
        *helm,
        "install",
        RELEASE,
        str(REPO / "charts" / "paybill"),
        "--wait",
        "--timeout",
        "5m",
        "--set",
        f"image.repository={repository}",
        "--set",
        f"image.tag={tag}",
        "--set",
        "image.pullPolicy=Never",
    )
    try:
        run(*helm, "test", RELEASE, "--timeout", "5m")
        samples = REPO / "manifests" / "samples"
        for name in ("plans.yaml", "subscriptions.yaml", "tenants.yaml"):
            run("kubectl", "apply", "-f", str(samples / name))
        run("kubectl", "wait", "--for=condition=Ready", "tenant/acme", "--timeout=300s")
        run(*helm, "upgrade", RELEASE, str(REPO / "charts" / "paybill"), "--reuse-values", "--wait", "--timeout", "5m")
        run("kubectl", "wait", "--for=condition=Ready", "tenant/acme", "--timeout=120s")
    finally:
        for name in ("tenants.yaml", "subscriptions.yaml", "plans.yaml"):
            subprocess.run(
                [
                    "kubectl",
                    "delete",
                    "--ignore-not-found",
                    "--wait=true",
                    "--timeout=300s",
                    "-f",
                    str(REPO / "manifests" / "samples" / name),
                ],
                capture_output=True,
            )
        run(*helm, "uninstall", RELEASE, "--wait")
