"""An agent through a move of its tenant's data, on the real operator (outsider's finding V2): by the time the
Tenant is Active at its new placement, its agents' logins already point there and their writes land there and
stay; nothing of the agent's is left granted at the source. The database side (writes held from the first copy,
a rollback giving them back) is tests/database/test_agent_moves.py."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest

from paybill.database import Placement
from paybill.database.moves import Moves
from paybill.database.server import LocalPostgres
from test_tenant_lifecycle import (
    API,
    agent_login,
    agent_policy,
    agent_workflow,
    login,
    onboard,
    plan,
    submit,
    wait_phase,
    wait_policy,
    wait_workflow,
)

pytestmark = pytest.mark.slow
REFUND = {"name": "refund", "kind": "mutation", "sql": "UPDATE orders SET status = 'refunded' WHERE id = $1"}


def tenant_with_order_and_agent(operator: Any) -> tuple[str, str, str]:
    """A pooled tenant with order 7 ('open') and its AgentPolicy installed: (tenant, namespace, agent role)."""
    name = onboard(operator, "pooled")
    namespace = f"tenant-{name}"
    wait_phase(operator, name, "Active")
    with login(operator, name) as conn:
        conn.execute("INSERT INTO customers (tenant_id, id, name) VALUES (%s, 1, 'c')", (name,))
        conn.execute(
            "INSERT INTO orders (tenant_id, id, customer_id, status, total) VALUES (%s, 7, 1, 'open', 1)", (name,)
        )
    operator.kube.apply(agent_policy(namespace))
    return name, namespace, wait_policy(operator, namespace, "Ready", database="paybill_pooled")["role"]


def move_to_silo(operator: Any, name: str) -> None:
    operator.kube.apply(plan("plan-silo", "silo"))
    operator.kube.merge_patch(API, "tenants", name, {"spec": {"planRef": "plan-silo"}})


def status_of_order(postgres: LocalPostgres, database: str, name: str) -> tuple[str, ...] | None:
    with psycopg.connect(postgres.dsn, dbname=database) as conn:
        return conn.execute("SELECT status FROM app.orders WHERE tenant_id = %s AND id = 7", (name,)).fetchone()


def test_a_workflow_writing_during_the_copy_is_denied_with_the_reason_and_writes_nothing(
    operator: Any, postgres: LocalPostgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    name, namespace, _ = tenant_with_order_and_agent(operator)
    copying, go_on = threading.Event(), threading.Event()
    copy = Moves.copy

    def copy_once_the_workflow_ran(self: Moves, source: Placement, target: Placement) -> None:
        copying.set()
        go_on.wait(60)
        copy(self, source, target)

    monkeypatch.setattr(Moves, "copy", copy_once_the_workflow_ran)  # the operator runs in this process
    move_to_silo(operator, name)
    try:
        operator.eventually(copying.is_set, timeout=40)
        submit(operator, agent_workflow(namespace, "during-move", [{**REFUND, "params": [7]}]))
        denied = wait_workflow(operator, namespace, "during-move", "Denied")
    finally:
        go_on.set()
    assert denied["steps"][0]["executed"] is False and denied["steps"][0]["rowsAffected"] == 0
    assert [r["code"] for r in denied["steps"][0]["reasons"]] == ["writes_held"]
    said = {c["type"]: c for c in denied["conditions"]}
    assert said["Denied"]["status"] == "True" and "writes_held" in said["Denied"]["message"]
    silo = wait_phase(operator, name, "Active", isolation="silo")["database"]["database"]
    assert status_of_order(postgres, silo, name) == ("open",)  # nothing was written anywhere, nothing lost


def test_an_agent_writes_at_the_new_placement_as_soon_as_the_move_is_done(
    operator: Any, postgres: LocalPostgres
) -> None:
    name, namespace, role = tenant_with_order_and_agent(operator)
    move_to_silo(operator, name)
    silo = wait_phase(operator, name, "Active", isolation="silo")["database"]["database"]
    with agent_login(operator, namespace) as conn:  # installed there before the source went, not some time later
        assert conn.info.dbname == silo
        assert conn.execute("UPDATE orders SET status = 'fixed' WHERE id = 7").rowcount == 1

    wait_policy(operator, namespace, "Ready", database=silo)  # admission takes workflows of a Ready policy only
    submit(operator, agent_workflow(namespace, "after-move", [{**REFUND, "params": [7]}]))
    done = wait_workflow(operator, namespace, "after-move", "Succeeded")
    assert done["steps"][0]["rowsAffected"] == 1
    assert status_of_order(postgres, silo, name) == ("refunded",)
    with psycopg.connect(postgres.dsn, dbname="paybill_pooled") as conn:  # nothing the agent may write in the pool
        assert conn.execute(
            "SELECT has_table_privilege(%s, 'app.orders', 'UPDATE'), count(*) FROM app.orders WHERE tenant_id = %s",
            (role, name),
        ).fetchone() == (False, 0)
