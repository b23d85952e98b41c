"""The operator's session sweep (handlers/sessions.py) with the lock watchdog: a pooled tenant's session holding
ACCESS EXCLUSIVE on a shared table is ended, with a Warning Event on its Tenant and an audit record naming the
table and the duration, no SQL text. Real PostgreSQL, emulated API server."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import kopf
import psycopg

from paybill.audit import AuditLog
from paybill.database import TenantDatabases
from paybill.database.server import LocalPostgres
from paybill.handlers import events
from paybill.handlers.sessions import SESSION_ENDED, SessionSweep

from .test_hardening import PASSWORD, login, tenant, within

API = "paybill.dev/v1alpha1"


def test_an_ended_lock_holder_is_told_on_its_tenant_and_recorded_in_the_audit_log(
    postgres: LocalPostgres, cluster: Any, tmp_path: Path
) -> None:
    databases = TenantDatabases(postgres.dsn, backup_dir=tmp_path / "backups")
    attacker, victim = tenant(databases, "pooled"), tenant(databases, "pooled")
    cluster.kube.create(
        {"apiVersion": API, "kind": "Tenant", "metadata": {"name": attacker.tenant}, "spec": {"planRef": "p"}}
    )
    events.install(cluster.kube)
    memo = kopf.Memo(databases=databases, kube=cluster.kube, audit=AuditLog(databases.connect))
    stop = threading.Event()
    sweep = SessionSweep(memo, idle_limit_s=60, lock_limit_s=5, stop=stop)
    locker = login(databases, attacker.role, PASSWORD, attacker.database)
    try:
        locker.execute("SET idle_in_transaction_session_timeout = 0")
        locker.execute("BEGIN")
        locker.execute("LOCK TABLE app.orders IN ACCESS EXCLUSIVE MODE /* secret-sql-text */")
        sweep.start()
        with login(databases, victim.role, PASSWORD, victim.database) as reader:
            within(20, lambda: reader.execute("SELECT count(*) FROM orders").fetchone())

        def warned() -> list[dict[str, Any]] | None:
            found = [
                e
                for e in cluster.kube.list("v1", "events", "default")
                if e["reason"] == SESSION_ENDED and e["involvedObject"]["name"] == attacker.tenant
            ]
            return found or None

        [event] = cluster.eventually(warned)
        assert event["type"] == "Warning" and event["involvedObject"]["kind"] == "Tenant"
        message = str(event["message"])
        assert "ACCESS EXCLUSIVE lock on app.orders" in message and attacker.role in message
        assert "secret" not in message and victim.tenant not in message and victim.role not in message
        [record] = cluster.eventually(lambda: memo.audit.records("Tenant", attacker.tenant) or None)
        assert record.event == "session-ended"
        assert record.details["tables"] == ["app.orders"] and record.details["mode"] == "ACCESS EXCLUSIVE"
        assert record.details["heldSeconds"] >= 0 and "secret" not in str(record.details)
        try:
            locker.execute("SELECT 1")
            raise AssertionError("the lock holder's session was not ended")
        except psycopg.OperationalError:
            pass
    finally:
        stop.set()
        sweep.join(10)
        locker.close()
        databases.close()
