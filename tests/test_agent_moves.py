"""An agent through a move of its tenant's data, on the real operator (outsider's finding V2): by the time the
Tenant is Active at its new placement, its agents' logins already point there and their writes land there and
stay; nothing of the agent's is left granted at the source. The database side (writes held from the first copy,
a rollback giving them back) is tests/database/test_agent_moves.py."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from paybill.database.server import LocalPostgres
from test_tenant_lifecycle import (
    API,
    agent_login,
    agent_policy,
    agent_workflow,
    login,
    onboard,
    plan,
    wait_phase,
    wait_policy,
    wait_workflow,
)

pytestmark = pytest.mark.slow


def test_an_agent_writes_at_the_new_placement_as_soon_as_the_move_is_done(
    operator: Any, postgres: LocalPostgres
) -> None:
    name = onboard(operator, "pooled")
    namespace = f"tenant-{name}"
    wait_phase(operator, name, "Active")
    with login(operator, name) as conn:
        conn.execute("INSERT INTO customers (tenant_id, id, name) VALUES (%s, 1, 'c')", (name,))
        conn.execute(
            "INSERT INTO orders (tenant_id, id, customer_id, status, total) VALUES (%s, 7, 1, 'open', 1)", (name,)
        )
    operator.kube.apply(agent_policy(namespace))
    role = wait_policy(operator, namespace, "Ready", database="paybill_pooled")["role"]

    operator.kube.apply(plan("plan-silo", "silo"))
    operator.kube.merge_patch(API, "tenants", name, {"spec": {"planRef": "plan-silo"}})
    silo = wait_phase(operator, name, "Active", isolation="silo")["database"]["database"]
    with agent_login(operator, namespace) as conn:  # installed there before the source went, not some time later
        assert conn.info.dbname == silo
        assert conn.execute("UPDATE orders SET status = 'fixed' WHERE id = 7").rowcount == 1

    step = {"name": "refund", "kind": "mutation", "sql": "UPDATE orders SET status = 'refunded' WHERE id = $1"}
    operator.kube.apply(agent_workflow(namespace, "after-move", [{**step, "params": [7]}]))
    done = wait_workflow(operator, namespace, "after-move", "Succeeded")
    assert done["steps"][0]["rowsAffected"] == 1
    with psycopg.connect(postgres.dsn, dbname=silo) as conn:
        assert conn.execute("SELECT status FROM app.orders WHERE id = 7").fetchone() == ("refunded",)
    with psycopg.connect(postgres.dsn, dbname="paybill_pooled") as conn:  # nothing the agent may write in the pool
        assert conn.execute(
            "SELECT has_table_privilege(%s, 'app.orders', 'UPDATE'), count(*) FROM app.orders WHERE tenant_id = %s",
            (role, name),
        ).fetchone() == (False, 0)
