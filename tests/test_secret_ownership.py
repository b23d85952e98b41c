"""The operator reads, updates or deletes one of its Secrets only if the Secret's controller is the owning object
(by uid). A Secret of that name it did not make is a conflict: never adopted, merged into, deleted, nor a
source of a password."""

from __future__ import annotations

import base64
import itertools
from typing import Any

import psycopg
import pytest

from paybill.database import TenantDatabases
from paybill.database.server import LocalPostgres
from paybill.lifecycle.tenant import (
    CREDENTIALS_SECRET,
    SecretAction,
    SecretConflict,
    opaque_secret,
    owned_secret,
    owner_reference,
    secret_action,
)
from test_isolation_hardening import agent_policy, onboard, secret, seed, wait_phase, wait_policy
from test_tenant_lifecycle import submit

API = "paybill.dev/v1alpha1"
_numbers = itertools.count()

POLICY = {"metadata": {"name": "yyy", "uid": "uid-policy"}}
OTHER_POLICY = {"metadata": {"name": "yyy", "uid": "uid-earlier-policy-of-that-name"}}


def _secret(owners: list[dict[str, Any]] | None, **fields: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "agent-yyy", "namespace": "tenant-acme"}
    if owners is not None:
        meta["ownerReferences"] = owners
    return opaque_secret(meta, fields)


DESIRED = _secret([owner_reference(POLICY, "AgentPolicy")], password="p", uri="u")
NOT_CONTROLLER = {**owner_reference(POLICY, "AgentPolicy"), "controller": False}


@pytest.mark.parametrize(
    ("existing", "action"),
    [
        (None, SecretAction.CREATE),
        (_secret([owner_reference(POLICY, "AgentPolicy")], password="p", uri="u"), SecretAction.KEEP),
        (_secret([owner_reference(POLICY, "AgentPolicy")], password="p", uri="u", extra="x"), SecretAction.KEEP),
        (_secret([owner_reference(POLICY, "AgentPolicy")], password="p"), SecretAction.UPDATE),
        (_secret(None, password="chosen-by-tenant", **{"app-token": "unrelated"}), SecretAction.CONFLICT),
        (_secret([], password="p", uri="u"), SecretAction.CONFLICT),
        (_secret([owner_reference(OTHER_POLICY, "AgentPolicy")], password="p", uri="u"), SecretAction.CONFLICT),
        (_secret([owner_reference(POLICY, "AgentWorkflow")], password="p", uri="u"), SecretAction.CONFLICT),
        (_secret([owner_reference(POLICY, "Tenant")], password="p", uri="u"), SecretAction.CONFLICT),
        (_secret([NOT_CONTROLLER], password="p", uri="u"), SecretAction.CONFLICT),
        (
            _secret([{**owner_reference(POLICY, "AgentPolicy"), "apiVersion": "evil.dev/v1"}], password="p", uri="u"),
            SecretAction.CONFLICT,
        ),
    ],
)
def test_secret_action_acts_only_on_a_secret_the_owner_controls(
    existing: dict[str, Any] | None, action: SecretAction
) -> None:
    assert secret_action(existing, DESIRED) == action


def test_owned_secret_never_hands_out_a_foreign_secret() -> None:
    assert owned_secret(None, POLICY, "AgentPolicy") is None
    mine = _secret([owner_reference(POLICY, "AgentPolicy")], password="p")
    assert owned_secret(mine, POLICY, "AgentPolicy") is mine
    for foreign in (
        _secret(None, password="chosen-by-tenant"),
        _secret([owner_reference(OTHER_POLICY, "AgentPolicy")], password="p"),
    ):
        with pytest.raises(
            SecretConflict, match="secret tenant-acme/agent-yyy exists and is not controlled by AgentPolicy yyy"
        ) as raised:
            owned_secret(foreign, POLICY, "AgentPolicy")
        assert "chosen-by-tenant" not in str(raised.value)


def _raw(cluster: Any, name: str, namespace: str) -> dict[str, Any]:
    return cluster.kube.get("v1", "secrets", name, namespace)


def _squat(cluster: Any, name: str, namespace: str, **fields: str) -> dict[str, Any]:
    return cluster.kube.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {"name": name, "namespace": namespace},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in fields.items()},
        }
    )


def _warned(cluster: Any, reason: str, name: str) -> list[dict[str, Any]] | None:
    return [
        e
        for e in cluster.kube.list("v1", "events")
        if e.get("reason") == reason and e["involvedObject"]["name"] == name and e.get("type") == "Warning"
    ] or None


def _refused(dsn: str, role: str, password: str) -> None:
    conninfo = psycopg.conninfo.conninfo_to_dict(dsn)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(
            host=conninfo.get("host"),
            port=conninfo.get("port"),
            dbname="paybill_pooled",
            user=role,
            password=password,
            connect_timeout=3,
        ).close()


def test_a_foreign_agent_secret_is_a_conflict_never_adopted_nor_deleted(operator: Any, postgres: LocalPostgres) -> None:
    n = next(_numbers)
    tenant = f"squat{n}"
    namespace = f"tenant-{tenant}"
    onboard(operator, tenant)
    wait_phase(operator, tenant, "Active")
    before = _squat(operator, "agent-yyy", namespace, password="chosen-by-tenant", **{"app-token": "unrelated"})

    operator.kube.apply(agent_policy(namespace, "yyy"))
    status = wait_policy(operator, namespace, "yyy", "Conflict")
    assert status["conditions"][-1]["reason"] == "SecretConflict"
    assert (
        f"secret {namespace}/agent-yyy exists and is not controlled by AgentPolicy yyy"
        in status["conditions"][-1]["message"]
    )
    operator.eventually(lambda: _warned(operator, "SecretConflict", "yyy"))
    after = _raw(operator, "agent-yyy", namespace)
    assert (
        after["data"] == before["data"]
        and after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    )
    assert not after["metadata"].get("ownerReferences")
    role = TenantDatabases(postgres.dsn).agent_role(tenant, namespace, "yyy")
    _refused(postgres.dsn, role, "chosen-by-tenant")
    said = str(operator.kube.list(API, "agentpolicies", namespace)) + str(operator.kube.list("v1", "events"))
    assert "chosen-by-tenant" not in said

    operator.kube.delete(API, "agentpolicies", "yyy", namespace)
    operator.eventually(lambda: operator.kube.get(API, "agentpolicies", "yyy", namespace) is None)
    assert _raw(operator, "agent-yyy", namespace)["data"] == before["data"]

    operator.kube.apply(agent_policy(namespace, "zzz"))  # the normal path: made, owned, deleted with the policy
    wait_policy(operator, namespace, "zzz", "Ready")
    policy_uid = operator.kube.get(API, "agentpolicies", "zzz", namespace)["metadata"]["uid"]
    made = _raw(operator, "agent-zzz", namespace)
    assert [(r["kind"], r["uid"], r["controller"]) for r in made["metadata"]["ownerReferences"]] == [
        ("AgentPolicy", policy_uid, True)
    ]
    with psycopg.connect(secret(operator, "agent-zzz", namespace)["uri"], connect_timeout=3) as conn:
        assert conn.execute("SELECT count(*) FROM orders").fetchone() == (0,)
    operator.kube.delete(API, "agentpolicies", "zzz", namespace)
    operator.eventually(lambda: _raw(operator, "agent-zzz", namespace) is None)
    assert _raw(operator, "agent-yyy", namespace)["data"] == before["data"]


def test_a_foreign_tenant_credentials_secret_is_a_conflict_and_no_password_source(
    operator: Any, postgres: LocalPostgres
) -> None:
    """The namespace is the Tenant's (controlled by its uid) but a Secret paybill-database was there first."""
    n = next(_numbers)
    tenant = f"precreds{n}"
    namespace = f"tenant-{tenant}"
    operator.kube.apply(
        {"apiVersion": API, "kind": "Tenant", "metadata": {"name": tenant}, "spec": {"planRef": f"plan-late{n}"}}
    )  # no such plan yet: the tenant waits
    uid = operator.eventually(lambda: operator.kube.get(API, "tenants", tenant))["metadata"]["uid"]
    operator.kube.create(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": namespace,
                "labels": {"paybill.dev/tenant": tenant},
                "ownerReferences": [owner_reference({"metadata": {"name": tenant, "uid": uid}})],
            },
        }
    )
    before = _squat(operator, CREDENTIALS_SECRET, namespace, password="chosen-by-tenant", **{"app-token": "unrelated"})
    operator.kube.apply(
        {
            "apiVersion": API,
            "kind": "Plan",
            "metadata": {"name": f"plan-late{n}"},
            "spec": {"tier": "pooled", "isolation": "pooled"},
        }
    )
    operator.kube.merge_patch(API, "tenants", tenant, {"metadata": {"annotations": {"trigger.paybill.dev/t": "1"}}})

    def conflict() -> dict[str, Any] | None:
        conditions = ((operator.kube.get(API, "tenants", tenant) or {}).get("status") or {}).get("conditions") or []
        return next((c for c in conditions if c.get("reason") == "SecretConflict"), None)

    found = operator.eventually(conflict, timeout=40)
    assert (
        f"secret {namespace}/{CREDENTIALS_SECRET} exists and is not controlled by Tenant {tenant}" in found["message"]
    )
    operator.eventually(lambda: _warned(operator, "SecretConflict", tenant))
    after = _raw(operator, CREDENTIALS_SECRET, namespace)
    assert after["data"] == before["data"] and not after["metadata"].get("ownerReferences")
    _refused(postgres.dsn, TenantDatabases(postgres.dsn).tenant_role(tenant), "chosen-by-tenant")
    assert "chosen-by-tenant" not in str(operator.kube.list(API, "tenants")) + str(operator.kube.list("v1", "events"))

    operator.kube.delete("v1", "secrets", CREDENTIALS_SECRET, namespace)  # gone: the tenant makes its own
    operator.kube.merge_patch(API, "tenants", tenant, {"metadata": {"annotations": {"trigger.paybill.dev/t": "2"}}})
    status = wait_phase(operator, tenant, "Active")
    assert status["credentialsSecret"] == CREDENTIALS_SECRET
    made = _raw(operator, CREDENTIALS_SECRET, namespace)
    assert [r["uid"] for r in made["metadata"]["ownerReferences"]] == [uid]
    assert secret(operator, CREDENTIALS_SECRET, namespace)["password"] != "chosen-by-tenant"


def _workflow(namespace: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "AgentWorkflow",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "principal": "agent:bot",
            "policyRef": "support",
            "steps": [{"name": "read", "kind": "query", "sql": "SELECT id FROM orders"}],
        },
    }


def _workflow_status(cluster: Any, namespace: str, name: str) -> dict[str, Any]:
    return (cluster.kube.get(API, "agentworkflows", name, namespace) or {}).get("status") or {}


def test_a_foreign_results_secret_stops_the_workflow_before_any_step(operator: Any) -> None:
    n = next(_numbers)
    tenant = f"results{n}"
    namespace = f"tenant-{tenant}"
    onboard(operator, tenant)
    wait_phase(operator, tenant, "Active")
    seed(operator, tenant, 5)
    operator.kube.apply(agent_policy(namespace, "support"))
    wait_policy(operator, namespace, "support", "Ready")
    before = _squat(operator, "agentworkflow-w-results", namespace, rows="chosen-by-tenant")

    submit(operator, _workflow(namespace, "w"))
    status = operator.eventually(
        lambda: (
            (s := _workflow_status(operator, namespace, "w")).get("conditions")
            and s["conditions"][-1]["reason"] == "SecretConflict"
            and s
        )
    )
    assert status["phase"] == "Pending" and not status.get("steps")
    assert (
        f"secret {namespace}/agentworkflow-w-results exists and is not controlled by AgentWorkflow w"
        in status["conditions"][-1]["message"]
    )
    operator.eventually(lambda: _warned(operator, "SecretConflict", "w"))
    after = _raw(operator, "agentworkflow-w-results", namespace)
    assert after["data"] == before["data"] and not after["metadata"].get("ownerReferences")
    operator.kube.delete(API, "agentworkflows", "w", namespace)
    operator.eventually(lambda: operator.kube.get(API, "agentworkflows", "w", namespace) is None)
    assert _raw(operator, "agentworkflow-w-results", namespace)["data"] == before["data"]

    submit(operator, _workflow(namespace, "v"))  # the normal path: the results Secret is the workflow's
    operator.eventually(lambda: _workflow_status(operator, namespace, "v").get("phase") == "Succeeded")
    uid = operator.kube.get(API, "agentworkflows", "v", namespace)["metadata"]["uid"]
    made = _raw(operator, "agentworkflow-v-results", namespace)
    assert [(r["kind"], r["uid"]) for r in made["metadata"]["ownerReferences"]] == [("AgentWorkflow", uid)]
