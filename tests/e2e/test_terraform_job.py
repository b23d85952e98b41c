"""On a real cluster (kind), run by `make e2e` only when one is reachable: the operator installed with the Terraform
Job executor (PAYBILL_TERRAFORM_EXECUTOR=job) brings a silo tenant on the `local` module to Ready through a real Job
run by the real Job controller and kubelet in the image `make docker-build` made, and its deletion destroys through
another Job. The emulated API server has neither: tests/terraform/test_job_executor.py plays them there."""

from __future__ import annotations

import json
import secrets
from typing import Any

import pytest
from test_chart_install import HELM, IMAGE, NAMESPACE, RELEASE, REPO, database, kubectl, run

__all__ = ["database"]  # the fixture, shared with the chart's scenario
pytestmark = pytest.mark.skipif(not (HELM and IMAGE), reason="run by make e2e (PAYBILL_E2E_HELM, PAYBILL_E2E_IMAGE)")
PLAN: dict[str, Any] = {
    "apiVersion": "paybill.dev/v1alpha1",
    "kind": "Plan",
    "metadata": {"name": "e2e-silo-job"},
    "spec": {"tier": "e2e", "isolation": "silo", "provisioning": {"cloud": "local", "region": "us-east-1"}},
}


def test_a_silo_tenant_is_provisioned_and_destroyed_through_kubernetes_jobs(database: str) -> None:
    repository, _, tag = IMAGE.rpartition(":")
    env = [("PAYBILL_TERRAFORM_TIMEOUT", "600")]
    settings = [f"extraEnv[{i}].name={name},extraEnv[{i}].value={value}" for i, (name, value) in enumerate(env)]
    run(
        HELM,
        "--namespace",
        NAMESPACE,
        "install",
        RELEASE,
        str(REPO / "charts" / "paybill"),
        "--wait",
        "--timeout",
        "5m",
        "--set",
        "terraform.executor=job",  # the Jobs run the operator's image under the chart's paybill-terraform account
        "--set",
        f"image.repository={repository}",
        "--set",
        f"image.tag={tag}",
        "--set",
        "image.pullPolicy=Never",
        *[arg for setting in settings for arg in ("--set", setting)],
    )
    tenant = f"e2e-job-{secrets.token_hex(3)}"
    try:
        run("kubectl", "apply", "-f", "-", stdin=json.dumps(PLAN))
        manifest = {"apiVersion": "paybill.dev/v1alpha1", "kind": "Tenant", "metadata": {"name": tenant}}
        run(
            "kubectl", "apply", "-f", "-", stdin=json.dumps({**manifest, "spec": {"planRef": PLAN["metadata"]["name"]}})
        )
        run("kubectl", "wait", "--for=condition=Ready", f"tenant/{tenant}", "--timeout=600s")
        jobs = json.loads(kubectl("get", "jobs", "-l", f"paybill.dev/tenant={tenant}", "-o", "json"))["items"]
        assert jobs and all(
            any(c["type"] == "Complete" and c["status"] == "True" for c in job["status"].get("conditions", []))
            for job in jobs
        )
        infrastructure = json.loads(run("kubectl", "get", f"tenant/{tenant}", "-o", "json"))["status"]["infrastructure"]
        assert infrastructure["lastResult"] == "Succeeded" and infrastructure["adds"] == 4
        run("kubectl", "delete", f"tenant/{tenant}", "--timeout=600s")
    finally:
        run("kubectl", "delete", "--ignore-not-found", f"tenant/{tenant}", "plan/e2e-silo-job", "--wait=false")
        run(HELM, "--namespace", NAMESPACE, "uninstall", RELEASE, "--wait")
