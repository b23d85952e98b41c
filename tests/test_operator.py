"""The operator end to end: real kopf in-process, the emulated API server, a real PostgreSQL."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from kopf.testing import KopfRunner

from paybill.database import TenantDatabases
from paybill.lifecycle.conditions import is_true

REPO = Path(__file__).resolve().parents[1]
API = "paybill.dev/v1alpha1"
pytestmark = pytest.mark.slow


def samples() -> list[dict[str, Any]]:
    docs = []
    for path in sorted((REPO / "manifests" / "samples").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def _tenant(cluster: Any, name: str) -> dict[str, Any]:
    return cluster.kube.get(API, "tenants", name) or {}


def _ready(cluster: Any, name: str) -> dict[str, Any] | None:
    tenant = _tenant(cluster, name)
    return tenant if is_true((tenant.get("status") or {}).get("conditions", []), "Ready") else None


def test_sample_tenants_become_active_with_namespace_role_and_events(operator: Any, postgres: Any) -> None:
    kube = operator.kube
    for doc in samples():
        kube.apply(doc)
    for name, isolation in (("acme", "pooled"), ("globex", "pooled"), ("initech", "bridge")):
        tenant = operator.eventually(lambda n=name: _ready(operator, n))
        status = tenant["status"]
        assert status["phase"] == "Active" and status["isolation"] == isolation
        assert status["observedGeneration"] == tenant["metadata"]["generation"]
        said = {c["type"] for c in status["conditions"]}  # DataHealthy once a later reconcile checked the data
        assert (
            {"Ready", "NamespaceReady", "DatabaseReady", "Billing"}
            <= said
            <= {"Ready", "NamespaceReady", "DatabaseReady", "Billing", "DataHealthy"}
        )
        namespace = kube.get("v1", "namespaces", f"tenant-{name}")
        assert namespace["metadata"]["labels"]["paybill.dev/tenant"] == name
        assert namespace["metadata"]["ownerReferences"][0]["uid"] == tenant["metadata"]["uid"]
        annotations = tenant["metadata"].get("annotations", {})
        assert all(len(v) < 1024 for k, v in annotations.items() if k.startswith("paybill.dev/"))
    with psycopg.connect(postgres.dsn) as conn:
        roles = {r for (r,) in conn.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE 't\\_%'")}
    names = TenantDatabases(postgres.dsn)
    assert {names.tenant_role("acme"), names.tenant_role("globex"), names.tenant_role("initech")} <= roles
    events = kube.list("v1", "events")
    reasons = {(e["involvedObject"]["name"], e["reason"]) for e in events}
    assert ("acme", "Active") in reasons and ("acme", "NamespaceCreated") in reasons
    for subscription in ("acme", "globex", "initech"):
        assert operator.eventually(
            lambda s=subscription: is_true(
                (kube.get(API, "subscriptions", s).get("status") or {}).get("conditions", []), "Ready"
            )
        )


def test_missing_plan_waits_then_converges(operator: Any) -> None:
    kube = operator.kube
    kube.apply({"apiVersion": API, "kind": "Tenant", "metadata": {"name": "early"}, "spec": {"planRef": "later"}})
    pending = operator.eventually(
        lambda: (
            (_tenant(operator, "early").get("status") or {}).get("phase") == "Pending" and _tenant(operator, "early")
        )
    )
    ready = next(c for c in pending["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and ready["reason"] == "PlanNotFound"
    events = [e for e in kube.list("v1", "events") if e["involvedObject"]["name"] == "early"]
    assert any(e["type"] == "Warning" and e["reason"] == "PlanNotFound" for e in events)
    kube.apply(
        {
            "apiVersion": API,
            "kind": "Plan",
            "metadata": {"name": "later"},
            "spec": {"tier": "later", "isolation": "silo"},
        }
    )
    assert operator.eventually(lambda: _ready(operator, "early"), timeout=30)["status"]["isolation"] == "silo"


def test_a_foreign_namespace_is_not_taken_over(operator: Any) -> None:
    kube = operator.kube
    kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "tenant-squatter"}})
    kube.apply(
        {
            "apiVersion": API,
            "kind": "Plan",
            "metadata": {"name": "free"},
            "spec": {"tier": "free", "isolation": "pooled"},
        }
    )
    kube.apply({"apiVersion": API, "kind": "Tenant", "metadata": {"name": "squatter"}, "spec": {"planRef": "free"}})
    failed = operator.eventually(
        lambda: (
            (_tenant(operator, "squatter").get("status") or {}).get("phase") == "Failed"
            and _tenant(operator, "squatter")
        )
    )
    reasons = {c["type"]: c["reason"] for c in failed["status"]["conditions"]}
    assert reasons == {"Ready": "NamespaceConflict", "NamespaceReady": "NamespaceConflict"}
    assert "paybill.dev/tenant" not in (kube.get("v1", "namespaces", "tenant-squatter")["metadata"].get("labels") or {})


def test_deleting_a_tenant_offboards_namespace_and_role(operator: Any, postgres: Any) -> None:
    kube = operator.kube
    kube.apply(
        {
            "apiVersion": API,
            "kind": "Plan",
            "metadata": {"name": "free"},
            "spec": {"tier": "free", "isolation": "pooled"},
        }
    )
    kube.apply({"apiVersion": API, "kind": "Tenant", "metadata": {"name": "leaver"}, "spec": {"planRef": "free"}})
    tenant = operator.eventually(lambda: _ready(operator, "leaver"))
    assert "paybill.dev/finalizer" in tenant["metadata"]["finalizers"]
    kube.delete(API, "tenants", "leaver")
    operator.eventually(lambda: kube.get(API, "tenants", "leaver") is None)
    assert kube.get("v1", "namespaces", "tenant-leaver") is None
    with psycopg.connect(postgres.dsn) as conn:
        assert (
            conn.execute(
                "SELECT 1 FROM pg_roles WHERE rolname = %s", (TenantDatabases(postgres.dsn).tenant_role("leaver"),)
            ).fetchone()
            is None
        )


def test_a_dead_database_is_reported_and_retried(cluster: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    monkeypatch.setenv("PAYBILL_DATABASE_URL", "postgresql://paybill:s3cret@127.0.0.1:9/paybill")
    with KopfRunner(["run", "--all-namespaces", "--standalone", "-m", "paybill.handlers"], timeout=60) as runner:
        cluster.kube.apply(
            {
                "apiVersion": API,
                "kind": "Plan",
                "metadata": {"name": "free"},
                "spec": {"tier": "free", "isolation": "pooled"},
            }
        )
        cluster.kube.apply(
            {"apiVersion": API, "kind": "Tenant", "metadata": {"name": "t"}, "spec": {"planRef": "free"}}
        )
        tenant = cluster.eventually(
            lambda: (
                any(
                    c["reason"] == "DatabaseUnavailable"
                    for c in (_tenant(cluster, "t").get("status") or {}).get("conditions", [])
                )
                and _tenant(cluster, "t")
            )
        )
        assert tenant["status"]["phase"] == "Failed"  # retried with backoff
        messages = " ".join(c["message"] for c in tenant["status"]["conditions"])
        events = " ".join(e["message"] for e in cluster.kube.list("v1", "events"))
    assert "s3cret" not in messages + events + runner.output
    assert "cannot connect to the tenant database server" in messages


def test_without_a_database_tenants_wait_and_say_so_once(cluster: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never Ready without its data: a tenant of an operator with no PAYBILL_DATABASE_URL waits, and says why
    in status and in one Warning Event however often it is retried."""
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    monkeypatch.delenv("PAYBILL_DATABASE_URL", raising=False)
    with KopfRunner(["run", "--all-namespaces", "--standalone", "-m", "paybill.handlers"], timeout=60):
        cluster.kube.apply(
            {
                "apiVersion": API,
                "kind": "Plan",
                "metadata": {"name": "free"},
                "spec": {"tier": "free", "isolation": "pooled"},
            }
        )
        cluster.kube.apply(
            {"apiVersion": API, "kind": "Tenant", "metadata": {"name": "t"}, "spec": {"planRef": "free"}}
        )
        cluster.eventually(lambda: cluster.kopf_retries("tenants", "t") >= 2, timeout=40)  # retried at least once
        conditions = {c["type"]: c for c in _tenant(cluster, "t")["status"]["conditions"]}
    assert _tenant(cluster, "t")["status"]["phase"] == "Pending"
    assert (conditions["Ready"]["status"], conditions["Ready"]["reason"]) == ("False", "DatabaseNotConfigured")
    assert (conditions["DatabaseReady"]["status"], conditions["DatabaseReady"]["reason"]) == ("False", "NotConfigured")
    assert "PAYBILL_DATABASE_URL" in conditions["Ready"]["message"]
    said = [
        e["reason"]
        for e in cluster.kube.list("v1", "events")
        if e["involvedObject"]["name"] == "t" and e["type"] == "Warning"
    ]
    assert said == ["DatabaseNotConfigured"]


@pytest.mark.kubectl
@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kubectl_wait_for_ready_with_the_operator_running(operator: Any) -> None:
    env = {"KUBECONFIG": str(operator.kubeconfig), "PATH": "/usr/bin:/bin:/usr/local/bin", "HOME": "/tmp"}
    subprocess.run(
        ["kubectl", "apply", "-f", str(REPO / "manifests" / "samples")], check=True, env=env, capture_output=True
    )
    waited = subprocess.run(
        ["kubectl", "wait", "--for=condition=Ready", "tenant/acme", "--timeout=120s"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert waited.returncode == 0, waited.stderr
    assert "tenant.paybill.dev/acme condition met" in waited.stdout


def test_a_spec_edited_and_edited_back_at_once_is_observed(operator: Any) -> None:
    """Two edits back to back (the second undoing the first) may reach kopf as one unchanged spec; the
    generation moved on all the same, and status.observedGeneration must follow it."""
    from test_tenant_lifecycle import onboard, wait_phase

    name = onboard(operator, "pooled")
    wait_phase(operator, name, "Active")
    for policy in ("retain", "snapshot", "retain", "snapshot"):
        operator.kube.merge_patch(API, "tenants", name, {"spec": {"deletionPolicy": policy}})
    generation = _tenant(operator, name)["metadata"]["generation"]
    assert operator.eventually(
        lambda: _tenant(operator, name)["status"].get("observedGeneration") == generation, timeout=60
    )
