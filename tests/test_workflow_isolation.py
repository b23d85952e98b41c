"""Agent workflows through the real operator: a database error reaches status as its SQLSTATE only
(finding 11), and long agent work never delays an unrelated tenant's lifecycle (finding 13)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from paybill.audit import AuditLog
from paybill.database.server import LocalPostgres
from test_tenant_lifecycle import (
    API,
    agent_policy,
    agent_workflow,
    login,
    onboard,
    submit,
    wait_phase,
    wait_policy,
    wait_workflow,
)

pytestmark = pytest.mark.slow
WORKERS, PER_TENANT = 3, 2


@pytest.fixture
def small_pool_operator(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Iterator[Any]:
    """The operator with a workflow pool smaller than the number of workflows the test submits."""
    monkeypatch.setenv("PAYBILL_WORKFLOW_WORKERS", str(WORKERS))
    monkeypatch.setenv("PAYBILL_WORKFLOW_WORKERS_PER_TENANT", str(PER_TENANT))
    yield request.getfixturevalue("operator")


def test_a_database_error_reaches_status_as_its_sqlstate_and_the_audit_log_in_full(
    operator: Any, postgres: LocalPostgres, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    name = onboard(operator, "pooled")
    namespace = f"tenant-{name}"
    wait_phase(operator, name, "Active")
    with login(operator, name) as conn:
        conn.execute("INSERT INTO customers (tenant_id, id, name) VALUES (%s, 1, 'c')", (name,))
        conn.execute(
            "INSERT INTO orders (tenant_id, id, customer_id, status, total) VALUES (%s, 1, 1, 'confidential-7731', 5)",
            (name,),
        )
    operator.kube.apply(agent_policy(namespace))
    wait_policy(operator, namespace, "Ready")
    submit(
        operator,
        agent_workflow(
            namespace, "cast", [{"name": "leak", "kind": "query", "sql": "SELECT CAST(status AS integer) FROM orders"}]
        ),
    )
    failed = wait_workflow(operator, namespace, "cast", "Failed")
    assert failed["steps"][0]["reasons"] == [
        {"code": "database_error", "message": "SQLSTATE 22P02 invalid_text_representation"}
    ]
    assert "SQLSTATE 22P02 invalid_text_representation" in failed["conditions"][-1]["message"]
    workflow = operator.kube.get(API, "agentworkflows", "cast", namespace)
    events = operator.kube.list("v1", "events", namespace)
    assert any(e["involvedObject"]["name"] == "cast" for e in events)
    assert "agentworkflows" in caplog.text or "cast" in caplog.text  # the operator's log is captured here
    for seen in (json.dumps(workflow), json.dumps(events), caplog.text):
        assert "confidential-7731" not in seen
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        records = AuditLog(lambda: conn).records("AgentWorkflow", f"{namespace}/cast")
    assert [r.event for r in records] == ["StepFailed"]
    assert "confidential-7731" in records[0].details["databaseError"]


def _naps(postgres: LocalPostgres, database: str) -> list[int]:
    """Server processes running an agent's nap() right now."""
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        return [
            pid
            for (pid,) in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND state = 'active' AND query LIKE '%%nap(%%' "
                "AND pid <> pg_backend_pid()",
                (database,),
            )
        ]


def test_long_agent_work_never_delays_another_tenants_suspension(
    small_pool_operator: Any, postgres: LocalPostgres
) -> None:
    operator = small_pool_operator
    busy, quiet = onboard(operator, "silo"), onboard(operator, "pooled")
    namespace = f"tenant-{busy}"
    placement = wait_phase(operator, busy, "Active")["database"]
    wait_phase(operator, quiet, "Active")
    with psycopg.connect(postgres.dsn, dbname=placement["database"], autocommit=True) as conn:  # slow, harmless
        conn.execute(
            f"CREATE FUNCTION {placement['schema']}.nap(seconds integer) RETURNS integer LANGUAGE plpgsql "
            "AS $$ BEGIN PERFORM pg_sleep(seconds); RETURN seconds; END $$"
        )
    policy = agent_policy(namespace, functions=["nap"])
    policy["spec"]["limits"] = {"statementTimeoutMs": 120000}
    operator.kube.apply(policy)
    wait_policy(operator, namespace, "Ready")
    workflows = [f"nap-{n}" for n in range(WORKERS * 3)]  # more than the pool, more than kopf's own threads
    for workflow in workflows:
        submit(
            operator, agent_workflow(namespace, workflow, [{"name": "nap", "kind": "query", "sql": "SELECT nap(100)"}])
        )
    operator.eventually(lambda: len(_naps(postgres, placement["database"])) == PER_TENANT, timeout=40)

    operator.kube.merge_patch(API, "tenants", quiet, {"spec": {"suspended": True}})
    wait_phase(operator, quiet, "Suspended", suspendedFor=["manual"])
    sleeping = _naps(postgres, placement["database"])
    phases = [
        ((operator.kube.get(API, "agentworkflows", w, namespace) or {}).get("status") or {}).get("phase")
        for w in workflows
    ]
    assert len(sleeping) == PER_TENANT  # the tenant's share of the pool, still asleep: the suspension came first
    assert not {"Succeeded", "Failed"} & set(phases)

    def cancel_naps() -> bool:  # end the test's sleepers so the operator stops promptly
        with psycopg.connect(postgres.dsn, autocommit=True) as conn:
            for pid in _naps(postgres, placement["database"]):
                conn.execute("SELECT pg_cancel_backend(%s)", (pid,))
        return all(
            ((operator.kube.get(API, "agentworkflows", w, namespace) or {}).get("status") or {}).get("phase")
            in ("Denied", "Failed")
            for w in workflows
        )  # stopped: a cancel reads as a timeout

    operator.eventually(cancel_naps, timeout=60, interval=0.5)


def test_a_workflow_that_lifts_its_timeout_is_still_stopped_at_the_deadline(
    operator: Any, postgres: LocalPostgres
) -> None:
    name = onboard(operator, "silo")
    namespace = f"tenant-{name}"
    placement = wait_phase(operator, name, "Active")["database"]
    with psycopg.connect(postgres.dsn, dbname=placement["database"], autocommit=True) as conn:
        schema = placement["schema"]
        conn.execute(
            f"CREATE FUNCTION {schema}.lift() RETURNS integer LANGUAGE sql "
            "AS $$ SELECT length(set_config('statement_timeout', '0', false)) $$"
        )
        conn.execute(
            f"CREATE FUNCTION {schema}.nap(seconds integer) RETURNS integer LANGUAGE plpgsql "
            "AS $$ BEGIN PERFORM pg_sleep(seconds); RETURN seconds; END $$"
        )
    policy = agent_policy(namespace, functions=["lift", "nap"])
    policy["spec"]["limits"] = {"statementTimeoutMs": 500}
    operator.kube.apply(policy)
    wait_policy(operator, namespace, "Ready")
    submit(
        operator,
        agent_workflow(
            namespace,
            "escape",
            [
                {"name": "lift", "kind": "query", "sql": "SELECT lift()"},
                {"name": "sleep", "kind": "query", "sql": "SELECT nap(600)"},
            ],
        ),
    )
    denied = wait_workflow(operator, namespace, "escape", "Denied")  # within wait_workflow's 40 s, not 600
    assert [s["executed"] for s in denied["steps"]] == [True, False]
    assert denied["steps"][1]["reasons"] == [
        {"code": "timeout", "message": "statement ran longer than 500 ms; stopped by the server"}
    ]
    assert not _naps(postgres, placement["database"])
