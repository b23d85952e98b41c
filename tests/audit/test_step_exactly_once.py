"""Exactly once per workflow step (issue 16 item 5), against a real operator process killed with SIGKILL.

The operator is stopped from outside at the worst moment: the test holds a lock on the audit log's table, so
the run is stuck right after a mutation committed and before its audit record and status are written (the
operator waits for that lock). It is killed there, the lock is released and a new operator is started: the
committed step is not run again, and the run goes on with the next one."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

from paybill.audit import AuditLog, AuditRecord, FileCheckpoint
from paybill.audit.review import belongs_to, replay
from paybill.audit.versions import load_version
from paybill.database.agents.steps import SCHEMA, TABLE
from paybill.database.server import LocalPostgres

API = "paybill.dev/v1alpha1"
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@contextmanager
def operator_process(cluster: Any, postgres: LocalPostgres, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`paybill operator` in a child process (a real kopf run), ended by the test or by the SIGKILL under test."""
    env = {
        **os.environ,
        "KUBECONFIG": str(cluster.kubeconfig),
        "PAYBILL_DATABASE_URL": postgres.dsn,
        "PAYBILL_BACKUP_DIR": str(tmp_path / "backups"),
        "PAYBILL_STATE_DIR": str(tmp_path / "state"),
    }
    with (tmp_path / "operator.log").open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "paybill", "operator"], env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def onboard(cluster: Any, name: str) -> None:
    kube = cluster.kube
    kube.apply(
        {
            "apiVersion": API,
            "kind": "Plan",
            "metadata": {"name": "once"},
            "spec": {"tier": "once", "isolation": "pooled"},
        }
    )
    kube.apply(
        {
            "apiVersion": API,
            "kind": "Subscription",
            "metadata": {"name": name},
            "spec": {"tenantRef": name, "planRef": "once", "billingStatus": "active"},
        }
    )
    kube.apply({"apiVersion": API, "kind": "Tenant", "metadata": {"name": name}, "spec": {"planRef": "once"}})


def status(cluster: Any, plural: str, name: str, namespace: str | None = None) -> dict[str, Any]:
    return (cluster.kube.get(API, plural, name, namespace) or {}).get("status") or {}


def secret_uri(cluster: Any, name: str, namespace: str) -> str:
    return base64.b64decode(cluster.kube.get("v1", "secrets", name, namespace)["data"]["uri"]).decode()


def policy(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "AgentPolicy",
        "metadata": {"name": "support", "namespace": namespace},
        "spec": {
            "subjects": [{"serviceAccount": "tenant-agent", "agent": "agent:support-bot"}],
            "limits": {"statementTimeoutMs": 120000},
            "rules": [
                {"id": "read-orders", "effect": "allow", "actions": ["select"], "tables": ["orders"]},
                {
                    "id": "fix-orders",
                    "effect": "allow",
                    "actions": ["update"],
                    "tables": ["orders"],
                    "columns": ["status", "total"],
                    "requireWhere": True,
                },
            ],
        },
    }


def workflow(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "AgentWorkflow",
        "metadata": {"name": "credit", "namespace": namespace},
        "spec": {
            "principal": "agent:support-bot",
            "policyRef": "support",
            "steps": [
                {"name": "credit", "kind": "mutation", "sql": "UPDATE orders SET total = total + 10 WHERE id = 1"},
                {"name": "look", "kind": "query", "sql": "SELECT id, total FROM orders WHERE id = 1"},
                {"name": "mark", "kind": "mutation", "sql": "UPDATE orders SET status = 'credited' WHERE id = 1"},
            ],
        },
    }


def stuck_on_the_audit_log(postgres: LocalPostgres) -> bool:
    """Some session waits for the lock the test holds on the audit log's table (the operator, appending)."""
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND query LIKE 'LOCK TABLE paybill.audit_log%%'"
        ).fetchone()
    return bool(row and row[0])


@pytest.mark.parametrize("kill", ["after_the_commit", "before_the_commit"])
def test_a_sigkill_around_a_mutations_commit_neither_repeats_nor_loses_it(
    cluster: Any, postgres: LocalPostgres, tmp_path: Path, kill: str
) -> None:
    """after_the_commit: the step committed, its audit record and status are not written (the operator waits for
    the audit log's table, locked by the test). before_the_commit: the step's UPDATE waits for a row the test has
    locked, inside the step's transaction. The operator is killed there; a new one finishes the run."""
    name = f"once-{uuid.uuid4().hex[:6]}"
    namespace = f"tenant-{name}"
    with operator_process(cluster, postgres, tmp_path) as first:
        onboard(cluster, name)
        cluster.eventually(lambda: status(cluster, "tenants", name).get("phase") == "Active", timeout=90)
        with psycopg.connect(secret_uri(cluster, "paybill-database", namespace), autocommit=True) as conn:
            conn.execute("INSERT INTO customers (tenant_id, id, name) VALUES (%s, 1, 'c')", (name,))
            conn.execute(
                "INSERT INTO orders (tenant_id, id, customer_id, status, total) VALUES (%s, 1, 1, 'open', 5)", (name,)
            )
        cluster.kube.apply(policy(namespace))
        cluster.eventually(lambda: status(cluster, "agentpolicies", "support", namespace).get("phase") == "Ready", 60)

        if kill == "after_the_commit":
            holder = psycopg.connect(postgres.dsn)  # the operator's database: where the audit log is
            holder.execute("LOCK TABLE paybill.audit_log IN EXCLUSIVE MODE")
            stuck, seen = (lambda: stuck_on_the_audit_log(postgres)), [(15, "open")]
        else:
            holder = psycopg.connect(secret_uri(cluster, "paybill-database", namespace))  # the tenant's own login
            holder.execute("SELECT id FROM orders WHERE id = 1 FOR UPDATE")
            stuck, seen = (lambda: agent_waits_for_a_row(postgres)), [(5, "open")]
        with holder:
            cluster.as_service_account(namespace, "tenant-agent").create(workflow(namespace))  # as the agent
            cluster.eventually(stuck, timeout=60)
            assert totals(cluster, name, namespace) == seen
            assert status(cluster, "agentworkflows", "credit", namespace).get("completedSteps") in (None, 0)
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=30)
            holder.rollback()

    uid = cluster.kube.get(API, "agentworkflows", "credit", namespace)["metadata"]["uid"]
    with psycopg.connect(postgres.dsn, dbname="paybill_pooled") as conn:
        recorded = conn.execute(f"SELECT step, name, rows FROM {SCHEMA}.{TABLE} WHERE workflow = %s", (uid,)).fetchall()
    assert recorded == ([(0, "credit", 1)] if kill == "after_the_commit" else [])  # committed with the step, or not

    with operator_process(cluster, postgres, tmp_path):
        done = cluster.eventually(
            lambda: (
                (s := status(cluster, "agentworkflows", "credit", namespace)).get("phase")
                in ("Succeeded", "Failed", "Denied")
                and s
            ),
            timeout=90,
        )
    assert done["phase"] == "Succeeded", done
    assert [(s["name"], s["executed"], s["rowsAffected"]) for s in done["steps"]] == [
        ("credit", True, 1),
        ("look", True, 0),
        ("mark", True, 1),
    ]
    results = cluster.kube.get("v1", "secrets", done["resultsSecret"], namespace)["data"]
    assert json.loads(base64.b64decode(results["look.json"]))["rows"] == [[1, "15.00"]]  # read after the credit
    assert totals(cluster, name, namespace) == [(15, "credited")]  # credited once, not twice
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        log = AuditLog(lambda: conn, FileCheckpoint(tmp_path / "state" / "audit"))  # the operator's: its seal too
        records = log.records("AgentWorkflow", f"{namespace}/credit")
        assert [(r.event, r.details["step"]) for r in records] == [
            ("StepResumed" if kill == "after_the_commit" else "StepRan", "credit"),
            ("StepRan", "look"),
            ("StepRan", "mark"),
        ]
        assert log.verify() > 0
        # the tenant's lifecycle, its agent's installation and its steps are on that one chain
        kinds = {r.kind for r in log.records() if belongs_to(r, name)}
        assert kinds == {"Tenant", "AgentPolicy", "AgentWorkflow"}
        assert_replayed_under_the_stored_policy_version(conn, records)


def assert_replayed_under_the_stored_policy_version(conn: psycopg.Connection, records: list[AuditRecord]) -> None:
    """The run's decisions come out the same from the stored policy version, and differently once it is edited."""
    replayed = replay(records, lambda address: load_version(conn, address))
    assert (replayed.decisions, replayed.differences, replayed.edited_versions) == (3, [], [])
    (address,) = {r.details["policyContent"] for r in records}
    stored = load_version(conn, address)
    assert stored is not None and stored.intact
    try:
        conn.execute(
            "UPDATE paybill.policy_versions SET content = replace(content, %s, %s) WHERE address = %s",
            ('"actions":["update"]', '"actions":["select"]', address),
        )
        edited = replay(records, lambda address: load_version(conn, address))
    finally:  # the version may be another test's too (same policy, same schema)
        conn.execute("UPDATE paybill.policy_versions SET content = %s WHERE address = %s", (stored.content, address))
    assert [
        (d.record.details["step"], d.recorded["decision"], (d.replayed or {}).get("decision"))
        for d in edited.differences
    ] == [
        ("credit", "allow", "deny"),
        ("mark", "allow", "deny"),  # the read is still allowed
    ]
    assert edited.edited_versions == [address]


def agent_waits_for_a_row(postgres: LocalPostgres) -> bool:
    """The agent's UPDATE (its role's session, an a_... role) waits for a row lock."""
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND usename LIKE 'a\\_%%' "
            "AND query LIKE 'UPDATE%%'"
        ).fetchone()
    return bool(row and row[0])


def totals(cluster: Any, name: str, namespace: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(secret_uri(cluster, "paybill-database", namespace), autocommit=True) as conn:
        return [(int(total), status) for total, status in conn.execute("SELECT total, status FROM orders WHERE id = 1")]
