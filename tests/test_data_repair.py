"""Faults injected behind the operator's back into a provisioned tenant's data: each is noticed within one resync
period, said in a condition and a Warning Event while it is broken, and repaired (issue 13, items 1 and 7)."""

from __future__ import annotations

import base64
import itertools
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from paybill.database.server import LocalPostgres

API = "paybill.dev/v1alpha1"
pytestmark = pytest.mark.slow
_names = itertools.count()


@pytest.fixture
def resync_often(monkeypatch: pytest.MonkeyPatch) -> None:
    """Set before the operator starts (list it before `operator`): the periodic check runs every 2 s."""
    monkeypatch.setenv("PAYBILL_RESYNC_SECONDS", "2")


def active_tenant(cluster: Any) -> tuple[str, dict[str, Any]]:
    name = f"fault{next(_names)}"
    cluster.kube.apply(
        {
            "apiVersion": API,
            "kind": "Plan",
            "metadata": {"name": "pooled"},
            "spec": {"tier": "pro", "isolation": "pooled"},
        }
    )
    cluster.kube.apply({"apiVersion": API, "kind": "Tenant", "metadata": {"name": name}, "spec": {"planRef": "pooled"}})
    status = cluster.eventually(lambda: healthy(cluster, name), timeout=60)
    return name, status


def healthy(cluster: Any, name: str) -> dict[str, Any] | None:
    status = (cluster.kube.get(API, "tenants", name) or {}).get("status") or {}
    conditions = {c["type"]: c["status"] for c in status.get("conditions") or []}
    ok = status.get("phase") == "Active" and conditions.get("Ready") == "True"
    return status if ok and conditions.get("DataHealthy") == "True" else None


def logs_in(cluster: Any, name: str) -> bool:
    secret = cluster.kube.get("v1", "secrets", "paybill-database", f"tenant-{name}")
    try:
        psycopg.connect(base64.b64decode(secret["data"]["uri"]).decode(), connect_timeout=3).close()
    except psycopg.OperationalError:
        return False
    return True


def reasons(cluster: Any, name: str) -> list[str]:
    return [e["reason"] for e in cluster.kube.list("v1", "events") if e["involvedObject"]["name"] == name]


def warnings(cluster: Any, name: str) -> list[str]:
    return [
        e["reason"]
        for e in cluster.kube.list("v1", "events")
        if e["involvedObject"]["name"] == name and e["type"] == "Warning"
    ]


FAULTS: dict[str, tuple[str, Callable[[psycopg.Connection, str, str], object]]] = {
    "login disabled": ("AccessChanged", lambda conn, _tenant, role: conn.execute(f'ALTER ROLE "{role}" NOLOGIN')),
    "password changed": (
        "CredentialsRejected",
        lambda conn, _tenant, role: conn.execute(f"ALTER ROLE \"{role}\" PASSWORD 'rotated-behind-its-back'"),
    ),
    "placement record lost": (
        "PlacementMissing",
        lambda conn, tenant, _role: conn.execute("DELETE FROM paybill.placements WHERE tenant = %s", (tenant,)),
    ),
}


@pytest.mark.parametrize("fault", FAULTS)
def test_broken_data_is_noticed_said_and_repaired(
    resync_often: None, operator: Any, postgres: LocalPostgres, fault: str
) -> None:
    name, status = active_tenant(operator)
    assert logs_in(operator, name)
    reason, inject = FAULTS[fault]
    injected_at = [0.0]

    def noticed() -> bool:
        """The fault is said; injected again every 5 s until it is, since a reconcile already under way (a touch
        from onboarding) may put it right before any check sees it: repaired, but not noticed."""
        if reason in warnings(operator, name):
            return True
        if time.monotonic() - injected_at[0] > 5:
            with psycopg.connect(postgres.dsn, autocommit=True) as conn:
                inject(conn, name, status["database"]["role"])
            injected_at[0] = time.monotonic()
        return False

    assert operator.eventually(noticed, timeout=60)
    operator.eventually(lambda: "DataRepaired" in reasons(operator, name), timeout=40)  # after a verifying look
    operator.eventually(lambda: healthy(operator, name), timeout=40)
    assert logs_in(operator, name)


def agent_logs_in(cluster: Any, namespace: str) -> bool:
    secret = cluster.kube.get("v1", "secrets", "agent-support", namespace)
    if secret is None:
        return False
    try:
        psycopg.connect(base64.b64decode(secret["data"]["uri"]).decode(), connect_timeout=3).close()
    except psycopg.OperationalError:
        return False
    return True


def test_a_deleted_agent_secret_is_made_again_with_a_login_that_works(operator: Any) -> None:
    """The AgentPolicy's Secret is its agent's only copy of the password: deleted by hand, the operator makes a
    new password, sets it on the agent's role and publishes it again (issue 13 finding)."""
    from test_tenant_lifecycle import agent_policy, wait_policy

    name, _ = active_tenant(operator)
    namespace = f"tenant-{name}"
    operator.kube.apply(agent_policy(namespace))
    wait_policy(operator, namespace, "Ready")
    assert agent_logs_in(operator, namespace)
    before = operator.kube.get("v1", "secrets", "agent-support", namespace)["data"]["password"]
    operator.kube.delete("v1", "secrets", "agent-support", namespace)
    operator.eventually(lambda: agent_logs_in(operator, namespace), timeout=40)
    assert operator.kube.get("v1", "secrets", "agent-support", namespace)["data"]["password"] != before


def test_a_resync_finds_a_ready_agent_policy_whose_secret_is_gone(cluster: Any) -> None:
    """What no watch saw (a Secret deleted while the operator was down) the resync finds; a policy whose Secret
    is there, or that is not Ready yet, is left alone."""
    from paybill.handlers.repair import resync_agent_secrets

    for policy, phase in (("lost", "Ready"), ("kept", "Ready"), ("new", "Pending")):
        cluster.kube.create(
            {
                "apiVersion": API,
                "kind": "AgentPolicy",
                "metadata": {"name": policy, "namespace": "default"},
                "spec": {"subjects": [{"serviceAccount": "tenant-agent", "agent": "agent:a"}], "rules": []},
            }
        )
        cluster.kube.request(
            "PATCH",
            f"/apis/{API}/namespaces/default/agentpolicies/{policy}/status",
            {"status": {"phase": phase}},
            content_type="application/merge-patch+json",
        )
    cluster.kube.create(
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "agent-kept", "namespace": "default"}}
    )
    assert resync_agent_secrets(cluster.kube) == [("default", "lost")]
    annotations = cluster.kube.get(API, "agentpolicies", "lost", "default")["metadata"].get("annotations") or {}
    assert any(key.startswith("trigger.paybill.dev/") for key in annotations)
