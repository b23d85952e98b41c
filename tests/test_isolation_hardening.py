"""Tenant isolation attacks through the operator (real kopf, the emulated API server, real PostgreSQL with
scram-sha-256): agent policies whose role names collided under the old mapping, names squatted before the
operator got to them, and a tenant reaching for the operator's locks while another tenant is suspended."""

from __future__ import annotations

import base64
import itertools
import time
from typing import Any

import psycopg
import pytest
from psycopg import sql

from paybill.database import TenantDatabases
from paybill.database.server import LocalPostgres

API = "paybill.dev/v1alpha1"
OLD_ADVISORY_KEYS = ("paybill-audit", "paybill-pooled", "paybill-control")
pytestmark = pytest.mark.slow
_numbers = itertools.count()


def onboard(cluster: Any, name: str, isolation: str = "pooled") -> None:
    cluster.kube.apply(
        {
            "apiVersion": API,
            "kind": "Plan",
            "metadata": {"name": f"plan-{isolation}"},
            "spec": {"tier": isolation, "isolation": isolation},
        }
    )
    cluster.kube.apply(
        {"apiVersion": API, "kind": "Tenant", "metadata": {"name": name}, "spec": {"planRef": f"plan-{isolation}"}}
    )


def tenant_status(cluster: Any, name: str) -> dict[str, Any]:
    return (cluster.kube.get(API, "tenants", name) or {}).get("status") or {}


def wait_phase(cluster: Any, name: str, phase: str) -> dict[str, Any]:
    return cluster.eventually(
        lambda: tenant_status(cluster, name) if tenant_status(cluster, name).get("phase") == phase else None, timeout=40
    )


def secret(cluster: Any, name: str, namespace: str) -> dict[str, str]:
    found = cluster.kube.get("v1", "secrets", name, namespace)
    return {k: base64.b64decode(v).decode() for k, v in found["data"].items()}


def tenant_login(cluster: Any, name: str) -> psycopg.Connection:
    return psycopg.connect(
        secret(cluster, "paybill-database", f"tenant-{name}")["uri"], autocommit=True, connect_timeout=3
    )


def seed(cluster: Any, name: str, order_id: int) -> None:
    with tenant_login(cluster, name) as conn:
        conn.execute("INSERT INTO customers (tenant_id, id, name) VALUES (%s, 1, 'c')", (name,))
        conn.execute(
            "INSERT INTO orders (tenant_id, id, customer_id, status, total) VALUES (%s, %s, 1, 'open', 1)",
            (name, order_id),
        )


def agent_policy(namespace: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "AgentPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "subjects": [{"serviceAccount": "tenant-agent", "agent": "agent:bot"}],
            "rules": [
                {"id": "read-orders", "effect": "allow", "actions": ["select"], "tables": ["orders"]},
                {
                    "id": "fix-status",
                    "effect": "allow",
                    "actions": ["update"],
                    "tables": ["orders"],
                    "columns": ["status"],
                    "requireWhere": True,
                },
            ],
        },
    }


def policy_status(cluster: Any, namespace: str, name: str) -> dict[str, Any]:
    return (cluster.kube.get(API, "agentpolicies", name, namespace) or {}).get("status") or {}


def wait_policy(cluster: Any, namespace: str, name: str, phase: str) -> dict[str, Any]:
    return cluster.eventually(
        lambda: (
            policy_status(cluster, namespace, name)
            if policy_status(cluster, namespace, name).get("phase") == phase
            else None
        ),
        timeout=40,
    )


def agent_login(cluster: Any, namespace: str, policy: str) -> psycopg.Connection:
    return psycopg.connect(secret(cluster, f"agent-{policy}", namespace)["uri"], autocommit=True, connect_timeout=3)


def test_policies_whose_role_names_collided_get_their_own_roles_and_stay_isolated(operator: Any) -> None:
    """Old mapping: policy support-acme in tenant corpN and policy support in tenant acme-corpN were both
    agent_support_acme_corpN, and the second one took the first one's role over."""
    n = next(_numbers)
    attacker, victim = f"corp{n}", f"acme-corp{n}"
    for name, order_id in ((attacker, 1), (victim, 2)):
        onboard(operator, name)
        wait_phase(operator, name, "Active")
        seed(operator, name, order_id)
    victim_ns, attacker_ns = f"tenant-{victim}", f"tenant-{attacker}"
    operator.kube.apply(agent_policy(victim_ns, "support"))
    victim_role = wait_policy(operator, victim_ns, "support", "Ready")["role"]
    victim_password = secret(operator, "agent-support", victim_ns)["password"]
    operator.kube.apply(agent_policy(attacker_ns, "support-acme"))
    attacker_role = wait_policy(operator, attacker_ns, "support-acme", "Ready")["role"]

    assert attacker_role != victim_role
    for role in (attacker_role, victim_role):  # opaque: no tenant or policy name in the role's name
        assert not any(part in role for part in ("corp", "acme", "support"))
    with agent_login(operator, victim_ns, "support") as conn:  # the victim's password still opens its role
        assert secret(operator, "agent-support", victim_ns)["password"] == victim_password
        assert conn.execute("SELECT current_user, tenant_id, id FROM orders").fetchall() == [(victim_role, victim, 2)]
    with agent_login(operator, attacker_ns, "support-acme") as conn:
        assert conn.execute("SELECT tenant_id, id FROM orders").fetchall() == [(attacker, 1)]
        assert conn.execute("UPDATE orders SET status = 'pwned' WHERE id = 2").rowcount == 0
    with tenant_login(operator, victim) as conn:
        assert conn.execute("SELECT status FROM orders WHERE id = 2").fetchone() == ("open",)

    operator.kube.delete(API, "agentpolicies", "support-acme", attacker_ns)  # the victim's agent stays in
    operator.eventually(lambda: operator.kube.get(API, "agentpolicies", "support-acme", attacker_ns) is None)
    with agent_login(operator, victim_ns, "support") as conn:
        assert conn.execute("SELECT count(*) FROM orders").fetchone() == (1,)
    assert policy_status(operator, victim_ns, "support")["phase"] == "Ready"


def test_roles_squatted_before_the_operator_got_to_them_are_never_adopted(
    operator: Any, postgres: LocalPostgres
) -> None:
    n = next(_numbers)
    names = TenantDatabases(postgres.dsn)
    tenant, squatted = f"owner{n}", f"squatted{n}"
    namespace = f"tenant-{tenant}"
    would_be = {"agent": names.agent_role(tenant, namespace, "support"), "tenant": names.tenant_role(squatted)}
    with psycopg.connect(postgres.dsn, autocommit=True) as admin:
        for role in would_be.values():
            admin.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'squatter'").format(sql.Identifier(role)))
        before = dict(
            admin.execute(
                "SELECT rolname, rolpassword FROM pg_authid WHERE rolname = ANY(%s)", (list(would_be.values()),)
            ).fetchall()
        )

    onboard(operator, squatted)  # a Tenant whose role name is taken: refused, said in status and an Event
    conflict = operator.eventually(
        lambda: next(
            (c for c in tenant_status(operator, squatted).get("conditions", []) if c.get("reason") == "NameConflict"),
            None,
        ),
        timeout=40,
    )
    assert f"role {would_be['tenant']} exists and was not created by Paybill" in conflict["message"]

    onboard(operator, tenant)
    wait_phase(operator, tenant, "Active")
    operator.kube.apply(agent_policy(namespace, "support"))  # an AgentPolicy whose role name is taken
    status = wait_policy(operator, namespace, "support", "Conflict")
    assert status["conditions"][-1]["reason"] == "NameConflict"
    assert f"role {would_be['agent']} exists and was not created by Paybill" in status["conditions"][-1]["message"]
    events = operator.eventually(
        lambda: (
            [
                e
                for e in operator.kube.list("v1", "events")
                if e.get("reason") == "NameConflict" and e["involvedObject"]["name"] in (squatted, "support")
            ]
            or None
        )
    )
    assert {e["involvedObject"]["name"] for e in events} == {squatted, "support"}
    assert operator.kube.get("v1", "secrets", "agent-support", namespace) is None
    superuser_password = str(psycopg.conninfo.conninfo_to_dict(postgres.dsn)["password"])
    said = (
        str(operator.kube.list(API, "tenants"))
        + str(operator.kube.list(API, "agentpolicies", namespace))
        + str(operator.kube.list("v1", "events"))
    )
    assert superuser_password not in said and "squatter" not in said
    with psycopg.connect(postgres.dsn, dbname="paybill_pooled", autocommit=True) as admin:  # left as they were
        after = dict(
            admin.execute(
                "SELECT rolname, rolpassword FROM pg_authid WHERE rolname = ANY(%s)", (list(would_be.values()),)
            ).fetchall()
        )
        assert after == before
        for role in would_be.values():
            assert admin.execute(
                "SELECT has_table_privilege(%s, 'app.orders', 'SELECT'), pg_has_role(%s, "
                "'paybill_pooled_tenants', 'MEMBER')",
                (role, role),
            ).fetchone() == (False, False)


def test_a_tenant_reaching_for_the_operators_locks_delays_no_suspension(operator: Any, postgres: LocalPostgres) -> None:
    n = next(_numbers)
    hostile, other = f"hostile{n}", f"other{n}"
    for name in (hostile, other):
        onboard(operator, name)
        wait_phase(operator, name, "Active")
    credentials = secret(operator, "paybill-database", f"tenant-{hostile}")
    for database in ("postgres", "template1"):  # the operator's database does not take tenant logins
        with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
            psycopg.connect(psycopg.conninfo.make_conninfo(credentials["uri"], dbname=database), connect_timeout=3)
    with tenant_login(operator, hostile) as conn:  # nor may it take an advisory lock where it can log in
        for key in OLD_ADVISORY_KEYS:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (key,))
    # Whoever holds those keys now (a tenant could, before), the operator does not wait for them.
    holders = [
        psycopg.connect(postgres.dsn, dbname=database, autocommit=True) for database in ("postgres", "paybill_pooled")
    ]
    try:
        for holder in holders:
            for key in OLD_ADVISORY_KEYS:
                holder.execute("SELECT pg_advisory_lock(hashtext(%s))", (key,))
        started = time.monotonic()
        operator.kube.merge_patch(API, "tenants", other, {"spec": {"suspended": True}})
        wait_phase(operator, other, "Suspended")
        took = time.monotonic() - started
    finally:
        for holder in holders:
            holder.close()
    assert took < 30, f"suspension took {took:.1f}s"  # blocked behind the locks, it would never end
    with pytest.raises(psycopg.OperationalError, match="not permitted to log in"):
        tenant_login(operator, other)


def test_a_namespace_labelled_as_a_tenants_gets_none_of_its_data(operator: Any) -> None:
    """Anyone who can create a namespace can label it paybill.dev/tenant=<victim>: the label names a tenant,
    it does not make the namespace that tenant's. Only the namespace the Tenant controls (by uid) is."""
    n = next(_numbers)
    victim, rogue = f"labelled{n}", f"rogue{n}"
    onboard(operator, victim)
    wait_phase(operator, victim, "Active")
    seed(operator, victim, 7)
    operator.kube.apply(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": rogue, "labels": {"paybill.dev/tenant": victim}}}
    )
    operator.kube.apply(agent_policy(rogue, "support"))
    status = operator.eventually(lambda: policy_status(operator, rogue, "support") or None)
    assert status["phase"] != "Ready"
    assert status["conditions"][-1]["reason"] == "TenantNotFound"
    assert operator.kube.get("v1", "secrets", "agent-support", rogue) is None

    operator.kube.apply(agent_policy(f"tenant-{victim}", "support"))  # the tenant's own namespace still works
    wait_policy(operator, f"tenant-{victim}", "support", "Ready")


@pytest.fixture
def quick_idle_sweep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYBILL_IDLE_TRANSACTION_SECONDS", "1")


def test_a_tenant_that_turns_off_its_idle_timeout_and_locks_a_shared_table_is_ended(
    quick_idle_sweep: None, operator: Any
) -> None:
    n = next(_numbers)
    attacker, victim = f"locker{n}", f"reader{n}"
    for name in (attacker, victim):
        onboard(operator, name)
        wait_phase(operator, name, "Active")
    locker = tenant_login(operator, attacker)
    try:
        locker.execute("SET idle_in_transaction_session_timeout = 0")
        locker.execute("BEGIN")
        locker.execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")

        def ended() -> bool:
            try:
                locker.execute("SELECT 1")
            except psycopg.OperationalError:
                return True
            return False

        operator.eventually(ended, timeout=30, interval=3)  # each probe restarts the idle clock
        with tenant_login(operator, victim) as conn:
            assert conn.execute("SELECT count(*) FROM orders").fetchone() == (0,)
    finally:
        locker.close()
