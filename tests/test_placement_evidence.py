"""A placement read from a Tenant's status is evidence, never an order (issue 13, an outsider's V4-V6 and V8/S4).

Status is written by the operator alone in the chart, but anyone who can write tenants/status could point it at
another tenant's data: the operator installs agents and repairs a lost placement record only where its own records
(the deterministic names it gives each tenant, the names it created for it, the placement record) bear status out.
Data kept under a name by a Tenant offboarded with deletionPolicy retain is refused to a later Tenant of the name
unless that Tenant adopts it by an annotation naming the earlier Tenant's uid (audited, with an Event).

The real operator, the emulated API server and the session's real PostgreSQL.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from paybill.api.tenant import ADOPT_RETAINED_DATA
from paybill.audit import AuditLog
from paybill.database import TenantDatabases
from paybill.database.placement import BRIDGE_DATABASE
from paybill.database.server import LocalPostgres
from test_tenant_lifecycle import agent_policy, credentials, login, onboard, status, wait_phase

API = "paybill.dev/v1alpha1"
pytestmark = pytest.mark.slow
_touches = itertools.count()


def admin(postgres: LocalPostgres, database: str) -> psycopg.Connection:
    return psycopg.connect(psycopg.conninfo.make_conninfo(postgres.dsn, dbname=database), autocommit=True)


def forge_status(cluster: Any, name: str, database: dict[str, str]) -> None:
    """What anyone who may write tenants/status could do."""
    cluster.kube.merge_patch(API, "tenants", name, {"status": {"database": database}}, subresource="status")


def control(postgres: LocalPostgres) -> psycopg.Connection:
    """The operator's own database (its records and the audit log)."""
    return psycopg.connect(postgres.dsn, autocommit=True)


def lose_record(postgres: LocalPostgres, name: str) -> None:
    with control(postgres) as conn:
        conn.execute("DELETE FROM paybill.placements WHERE tenant = %s", (name,))


def touch(cluster: Any, name: str, namespace: str | None = None, plural: str = "tenants") -> None:
    """A change kopf sees (status alone is not one): the object's reconcile runs."""
    annotation = {"trigger.paybill.dev/test": str(next(_touches))}
    cluster.kube.merge_patch(API, plural, name, {"metadata": {"annotations": annotation}}, namespace)


def attack(
    cluster: Any, name: str, forged: dict[str, str], trigger: Callable[[], None], landed: Callable[[], bool]
) -> None:
    """Forge the Tenant's status and trigger what reads it, again whenever a reconcile still under way from its
    onboarding wrote the real placement back, until the attack is refused or did its damage."""

    def attempt() -> bool:
        if status(cluster, name).get("database") != forged:
            forge_status(cluster, name, forged)
            trigger()
        return landed()

    cluster.eventually(attempt, timeout=90, interval=0.5)


def condition(cluster: Any, name: str, type_: str) -> dict[str, Any]:
    return next((c for c in status(cluster, name).get("conditions") or [] if c["type"] == type_), {})


def warned(cluster: Any, name: str, reason: str, namespace: str | None = None) -> list[dict[str, Any]]:
    return [
        e
        for e in cluster.kube.list("v1", "events", namespace)
        if e["involvedObject"]["name"] == name and e["reason"] == reason and e["type"] == "Warning"
    ]


def granted(postgres: LocalPostgres, database: str, role: str) -> list[str]:
    """What `role` may do in `database` and its app tables (nothing, for a role that is not the database's)."""
    with admin(postgres, database) as conn:
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
            return []
        rows = conn.execute(
            "SELECT 'CONNECT' WHERE has_database_privilege(%s, current_database(), 'CONNECT') "
            "UNION ALL SELECT c.relname || ':' || p.privilege FROM pg_class c JOIN pg_namespace n "
            "ON n.oid = c.relnamespace, unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE']) AS p(privilege) "
            "WHERE n.nspname = 'app' AND c.relkind = 'r' AND has_table_privilege(%s, c.oid, p.privilege)",
            (role, role),
        ).fetchall()
    return [row[0] for row in rows]


def rows(postgres: LocalPostgres, database: str) -> int:
    with admin(postgres, database) as conn:
        found = conn.execute("SELECT count(*) FROM app.customers").fetchone()
    return int(found[0]) if found else 0


def victim_with_a_row(cluster: Any) -> tuple[str, dict[str, str]]:
    victim = onboard(cluster, "silo")
    placement = wait_phase(cluster, victim, "Active")["database"]
    with login(cluster, victim) as conn:
        conn.execute("INSERT INTO customers (tenant_id, id, name) VALUES (%s, 1, 'a private record')", (victim,))
    return victim, placement


def test_an_agent_policy_is_never_installed_where_a_forged_tenant_status_points(
    operator: Any, postgres: LocalPostgres
) -> None:
    """V4: the attacker's Tenant status names the victim's silo database; its agent must get nothing there."""
    _, victims = victim_with_a_row(operator)
    attacker = onboard(operator, "bridge")
    wait_phase(operator, attacker, "Active")
    namespace = f"tenant-{attacker}"
    role = TenantDatabases(postgres.dsn).agent_role(attacker, namespace, "support")

    def policy() -> dict[str, Any]:
        return (operator.kube.get(API, "agentpolicies", "support", namespace) or {}).get("status") or {}

    def install() -> None:
        operator.kube.apply(agent_policy(namespace))  # created, then reconciled again on each touch
        touch(operator, "support", namespace, "agentpolicies")

    attack(
        operator,
        attacker,
        victims,
        install,
        lambda: policy().get("phase") == "Conflict" or granted(postgres, victims["database"], role) != [],
    )
    assert granted(postgres, victims["database"], role) == []  # no login, no grant in the victim's database
    said = policy()
    ready = next(c for c in said["conditions"] if c["type"] == "Ready")
    assert (said["phase"], ready["reason"]) == ("Conflict", "PlacementMismatch"), said
    assert victims["database"] in ready["message"] and "status" in ready["message"]
    assert warned(operator, "support", "PlacementMismatch", namespace)


def test_a_lost_record_is_never_remade_where_a_forged_status_points(operator: Any, postgres: LocalPostgres) -> None:
    """V5: the record lost, status names the victim's database under the attacker's own role: the reconcile that
    remakes the record must refuse it, never grant the attacker's role anything there nor publish it."""
    _, victims = victim_with_a_row(operator)
    attacker = onboard(operator, "silo")
    own = wait_phase(operator, attacker, "Active")["database"]

    def lose_and_touch() -> None:
        lose_record(postgres, attacker)
        touch(operator, attacker)

    def landed() -> bool:
        refused = condition(operator, attacker, "DatabaseReady").get("reason") == "PlacementMismatch"
        return refused or granted(postgres, victims["database"], own["role"]) != []

    attack(operator, attacker, {**victims, "role": own["role"]}, lose_and_touch, landed)
    assert granted(postgres, victims["database"], own["role"]) == []
    said = condition(operator, attacker, "DatabaseReady")
    assert victims["database"] in said["message"], said
    assert condition(operator, attacker, "Ready")["reason"] == "PlacementMismatch"
    assert warned(operator, attacker, "PlacementMismatch")
    assert credentials(operator, attacker)["database"] == own["database"]  # the Secret still names its own data
    assert rows(postgres, victims["database"]) == 1


def test_a_stale_status_and_a_lost_record_never_empty_the_data(operator: Any, postgres: LocalPostgres) -> None:
    """V6: the data is silo, the record lost, status stale (the bridge placement the tenant would have had): the
    reconcile must not place the tenant again there (an empty schema) and then 'move' that emptiness over its
    rows."""
    name, placement = victim_with_a_row(operator)
    role = placement["role"]
    stale = {"isolation": "bridge", "database": BRIDGE_DATABASE, "schema": role, "role": role}

    def lose_and_touch() -> None:
        lose_record(postgres, name)
        touch(operator, name)

    def landed() -> bool:
        refused = condition(operator, name, "DatabaseReady").get("reason") == "PlacementMismatch"
        return refused or rows(postgres, placement["database"]) == 0

    attack(operator, name, stale, lose_and_touch, landed)
    assert rows(postgres, placement["database"]) == 1
    said = condition(operator, name, "DatabaseReady")
    assert said["reason"] == "PlacementMismatch" and "silo" in said["message"], said
    with admin(postgres, BRIDGE_DATABASE) as conn:  # nothing was made at the place status named
        assert conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (role,)).fetchone() is None


def test_retained_data_is_adopted_only_by_a_tenant_that_names_its_earlier_owner(
    operator: Any, postgres: LocalPostgres
) -> None:
    """V8: without the annotation the earlier Tenant's data is refused and the condition says how to adopt it;
    with it (the earlier Tenant's uid), the new Tenant takes the data over, with an Event and an audit record."""
    name = onboard(operator, "bridge", deletionPolicy="retain")
    wait_phase(operator, name, "Active")
    with login(operator, name) as conn:
        conn.execute("INSERT INTO customers (tenant_id, id, name) VALUES (%s, 1, 'kept for a restore')", (name,))
    earlier = operator.kube.get(API, "tenants", name)["metadata"]["uid"]
    operator.kube.delete(API, "tenants", name)
    operator.eventually(lambda: operator.kube.get(API, "tenants", name) is None, timeout=60)
    operator.eventually(lambda: operator.kube.get("v1", "namespaces", f"tenant-{name}") is None, timeout=60)
    tenant = {"apiVersion": API, "kind": "Tenant", "metadata": {"name": name}, "spec": {"planRef": "plan-bridge"}}
    operator.kube.apply(tenant)

    def refused() -> dict[str, Any] | None:
        said = condition(operator, name, "DatabaseReady")
        return said if said.get("reason") == "NameConflict" else None

    message = operator.eventually(refused, timeout=40)["message"]
    assert earlier in message and f"{ADOPT_RETAINED_DATA}={earlier}" in message, message

    annotations = {ADOPT_RETAINED_DATA: earlier}
    operator.kube.merge_patch(API, "tenants", name, {"metadata": {"annotations": annotations}})
    wait_phase(operator, name, "Active")
    with login(operator, name) as conn:
        assert conn.execute("SELECT name FROM customers").fetchall() == [("kept for a restore",)]
    adopted = [
        e
        for e in operator.kube.list("v1", "events")
        if e["involvedObject"]["name"] == name and e["reason"] == "RetainedDataAdopted"
    ]
    assert adopted and earlier in adopted[0]["message"] and adopted[0]["type"] == "Normal"
    later = operator.kube.get(API, "tenants", name)["metadata"]["uid"]
    with control(postgres) as conn:
        log = AuditLog(lambda: conn)
        records = [r for r in log.records("Tenant", name) if r.event == "adopted_retained_data"]
    assert [(r.details["uid"], r.details["retainedBy"]) for r in records] == [(later, earlier)]
    assert TenantDatabases(postgres.dsn).retained_by(name) is None  # the data is the new Tenant's now
