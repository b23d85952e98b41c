"""Workflow step records in the tenant's database (database/agents/steps.py), on a real PostgreSQL server: a record
commits with its step's statement, a step recorded once can never commit again, an agent can neither forge, change
nor read another role's records, and a records schema Paybill did not create is never adopted."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from paybill.api.agentpolicy import AgentPolicySpec
from paybill.api.tenant import Access
from paybill.database import Placement, TenantDatabases
from paybill.database.agents.guard import ExecutionGuard
from paybill.database.agents.install import engine_for, install
from paybill.database.agents.steps import SCHEMA, TABLE, StepKey, StepRecord
from paybill.database.ownership import NameConflict
from paybill.database.server import LocalPostgres

PASSWORD, AGENT_PASSWORD = "tenant-pw", "agent-pw"
PRINCIPAL = "agent:support-bot"
POLICY = AgentPolicySpec.model_validate(
    {
        "subjects": [{"serviceAccount": "tenant-agent", "agent": PRINCIPAL}],
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
    }
)
_names = itertools.count()


@pytest.fixture
def databases(postgres: LocalPostgres) -> Iterator[TenantDatabases]:
    dbs = TenantDatabases(postgres.dsn)
    yield dbs
    dbs.close()


def tenant(databases: TenantDatabases, isolation: str) -> Placement:
    placement = databases.provision(f"steps-{next(_names)}-{uuid.uuid4().hex[:6]}", isolation, PASSWORD)
    databases.set_access(placement, Access.FULL)
    with psycopg.connect(
        databases.dsn(placement.database, user=placement.role, password=PASSWORD), autocommit=True
    ) as conn:
        conn.execute("INSERT INTO customers (tenant_id, id, name) VALUES (%s, 1, 'c')", (placement.tenant,))
        conn.execute(
            "INSERT INTO orders (tenant_id, id, customer_id, status, total) VALUES (%s, 101, 1, 'open', 5)",
            (placement.tenant,),
        )
    return placement


def agent(databases: TenantDatabases, placement: Placement, policy: str = "support") -> tuple[str, str]:
    """Install AgentPolicy `policy` for the tenant; its role and login URI."""
    role = install(databases, placement, policy, f"tenant-{placement.tenant}", POLICY, AGENT_PASSWORD, Access.FULL).role
    return role, databases.login_fields(role, AGENT_PASSWORD, placement.database, placement.schema)["uri"]


def guard(databases: TenantDatabases, placement: Placement, uri: str) -> ExecutionGuard:
    engine = engine_for(databases, placement, POLICY, Access.FULL)
    return ExecutionGuard(engine, uri, PRINCIPAL, placement.tenant)


def status_of_order(databases: TenantDatabases, placement: Placement) -> str:
    with databases.session(placement.database) as conn:
        row = conn.execute(  # the tenant's own order 101: a pooled database holds other tenants' too
            sql.SQL("SELECT status FROM {}.orders WHERE tenant_id = %s AND id = 101").format(
                sql.Identifier(placement.schema)
            ),
            (placement.tenant,),
        ).fetchone()
    assert row is not None
    return str(row[0])


def test_a_step_commits_with_its_record_and_can_never_commit_again(databases: TenantDatabases) -> None:
    placement = tenant(databases, "pooled")
    _, uri = agent(databases, placement)
    step = StepKey(str(uuid.uuid4()), 0, "mark")
    statement = "UPDATE orders SET status = status || '-marked' WHERE id = 101"
    with guard(databases, placement, uri) as first:
        assert first.recorded(step.workflow) == {}
        ran = first.execute(statement, [], step)
        assert ran.ok and ran.rows_affected == 1
        assert first.recorded(step.workflow) == {0: StepRecord(0, "mark", 1, ran.decision.plan_hash)}
    with guard(databases, placement, uri) as again:  # another run of the same workflow, as after a crash
        repeated = again.execute(statement, [], step)
        assert not repeated.ok and [r.code for r in repeated.reasons] == ["step_already_done"]
        assert again.execute("SELECT status FROM orders WHERE id = 101").rows == [("open-marked",)]
    assert status_of_order(databases, placement) == "open-marked"  # once, not twice


def test_an_agent_cannot_forge_change_or_read_another_roles_records(databases: TenantDatabases) -> None:
    placement = tenant(databases, "pooled")
    role, uri = agent(databases, placement)
    other_role, other_uri = agent(databases, placement, "other")
    workflow = str(uuid.uuid4())
    with guard(databases, placement, other_uri) as other:
        assert other.execute("UPDATE orders SET status = 'other' WHERE id = 101", [], StepKey(workflow, 0, "x")).ok
    table = f"{SCHEMA}.{TABLE}"
    with psycopg.connect(uri, autocommit=True) as conn:
        assert conn.execute(f"SELECT role, step FROM {table} WHERE workflow = %s", (workflow,)).fetchall() == []
        for attempt in (
            f"INSERT INTO {table} (role, workflow, step, name, rows) VALUES ('{other_role}', %s, 1, 'x', 1)",
            f"UPDATE {table} SET rows = 0 WHERE workflow = %s",
            f"DELETE FROM {table} WHERE workflow = %s",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(attempt, (workflow,))
        conn.execute(f"INSERT INTO {table} (workflow, step, name, rows) VALUES (%s, 1, 'mine', 1)", (workflow,))
        assert conn.execute(f"SELECT role, step FROM {table} WHERE workflow = %s", (workflow,)).fetchall() == [
            (role, 1)
        ]
    with guard(databases, placement, other_uri) as other:  # what the first agent wrote does not speak for it
        assert set(other.recorded(workflow)) == {0}


def test_a_records_schema_paybill_did_not_create_is_never_adopted(databases: TenantDatabases) -> None:
    placement = tenant(databases, "silo")
    squatter = f"squatter_{uuid.uuid4().hex[:8]}"
    with databases.session() as conn:
        conn.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(squatter)))
    with databases.session(placement.database) as conn:
        conn.execute(
            sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(sql.Identifier(SCHEMA), sql.Identifier(squatter))
        )
    with pytest.raises(NameConflict, match="is not Paybill's"):
        agent(databases, placement)
    with databases.session(placement.database) as conn:
        owner = conn.execute(
            "SELECT c.relowner::regrole::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s",
            (SCHEMA, TABLE),
        ).fetchone()
    assert owner is None  # the operator's table was not left in the squatter's schema either
