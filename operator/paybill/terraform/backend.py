"""The `pg` backend: one schema of state per tenant, the session identity a run's Terraform connects with,
and the PostgreSQL side of its state locks (which `terraform force-unlock` cannot release: they are session
advisory locks held by another connection)."""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from .models import LockRecovery, checked_tenant_id

APPLICATION_PREFIX = "paybill-tf"
# The pg backend holds advisory lock -1 (shared by every schema) while it creates a workspace's first state,
# and takes it for an instant on every lock besides (hence the runner's -lock-timeout)
CREATION_LOCK = -1
WORKSPACE = "default"
_HOST = socket.gethostname()[:24]


def schema_for(tenant_id: str) -> str:
    """`tf_<tenant>`: a DNS label maps to exactly one schema name (dashes become underscores, which labels lack)."""
    return "tf_" + checked_tenant_id(tenant_id).replace("-", "_")


def application_name(run_id: str, host: str = _HOST, pid: int | None = None) -> str:
    """Who holds a lock, as pg_stat_activity shows it: host, runner process and run."""
    return f"{APPLICATION_PREFIX}/{host}/{os.getpid() if pid is None else pid}/{run_id}"


def terraform_conn_str(dsn: str, run_id: str) -> str:
    """The DSN Terraform's pg backend (lib/pq) connects with: the caller's, named after the run."""
    return make_conninfo(dsn, application_name=application_name(run_id))


def dsn_secrets(dsn: str) -> list[str]:
    password = conninfo_to_dict(dsn).get("password")
    return [str(password)] if password else []


def state_table_exists(connection: psycopg.Connection, tenant_id: str) -> bool:
    row = connection.execute("SELECT to_regclass(%s) IS NOT NULL", [f"{schema_for(tenant_id)}.states"]).fetchone()
    return bool(row and row[0])


def ensure_state_row(connection: psycopg.Connection, tenant_id: str, workspace: str = WORKSPACE) -> None:
    """Give the tenant's workspace an (empty) state row before its first run.

    Without a row, the pg backend locks advisory key -1, which every schema shares, for a whole run: one
    tenant's first apply would hold off every other tenant's first plan. With it, a run locks its row only.
    The backend has created the schema and table; a concurrent insert of the same row is a no-op.
    """
    empty_state = json.dumps(
        {
            "version": 4,
            "terraform_version": "1.0.0",
            "serial": 0,
            "lineage": str(uuid.uuid4()),
            "outputs": {},
            "resources": [],
        }
    )
    connection.execute(
        sql.SQL("INSERT INTO {}.states (name, data) VALUES (%s, %s) ON CONFLICT (name) DO NOTHING").format(
            sql.Identifier(schema_for(tenant_id))
        ),
        [workspace, empty_state],
    )


def state_outputs(connection: psycopg.Connection, tenant_id: str, workspace: str = WORKSPACE) -> dict[str, Any]:
    """The root module's outputs in the tenant's state (format version 4: name -> value, type, sensitive)."""
    row = connection.execute(
        sql.SQL("SELECT data FROM {}.states WHERE name = %s").format(sql.Identifier(schema_for(tenant_id))), [workspace]
    ).fetchone()
    outputs: dict[str, Any] = json.loads(row[0]).get("outputs", {}) if row and row[0] else {}
    return outputs


@dataclass(frozen=True)
class LockHolder:
    backend_pid: int
    application: str
    lock_key: int
    held_seconds: float
    idle_seconds: float
    state: str

    @property
    def identity(self) -> tuple[str, int, str] | None:
        """(host, runner pid, run id) when the session is one of ours; None for anyone else's."""
        parts = self.application.split("/")
        if len(parts) != 4 or parts[0] != APPLICATION_PREFIX or not parts[2].isdigit():
            return None
        return parts[1], int(parts[2]), parts[3]


def state_lock_keys(connection: psycopg.Connection, tenant_id: str, workspace: str = WORKSPACE) -> list[int]:
    """The advisory keys that lock this tenant's state: its row in <schema>.states, and workspace creation."""
    keys = [CREATION_LOCK]
    schema = schema_for(tenant_id)
    if state_table_exists(connection, tenant_id):
        row = connection.execute(
            sql.SQL("SELECT id FROM {}.states WHERE name = %s").format(sql.Identifier(schema)), [workspace]
        ).fetchone()
        if row:
            keys.append(int(row[0]))
    return keys


def lock_holders(connection: psycopg.Connection, keys: Collection[int]) -> list[LockHolder]:
    rows = connection.execute(
        """SELECT a.pid, coalesce(a.application_name, ''), (l.classid::bigint << 32) | l.objid::bigint,
                  extract(epoch FROM now() - a.backend_start)::float8,
                  extract(epoch FROM now() - coalesce(a.state_change, a.backend_start))::float8,
                  coalesce(a.state, '')
             FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
            WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
              AND ((l.classid::bigint << 32) | l.objid::bigint) = ANY(%s)
              AND a.pid <> pg_backend_pid()""",
        [list(keys)],
    ).fetchall()
    return [LockHolder(*row) for row in rows]


def holder_gone(holder: LockHolder, active_runs: Collection[str], stale_after: float) -> str | None:
    """Why this holder's run is certainly over (None: it may be alive, or it is not ours to judge).

    Our own runs we know; another runner process on this host is gone when its pid is; a runner elsewhere
    (a Job's pod) when its session has sent nothing for `stale_after` (Terraform writes state while it works).
    """
    identity = holder.identity
    if identity is None:
        return None
    host, pid, run_id = identity
    if host == _HOST and pid == os.getpid():
        return None if run_id in active_runs else f"run {run_id} of this runner has ended"
    if host == _HOST:
        return None if _alive(pid) else f"runner process {pid} on {host} is gone"
    if holder.state == "idle" and holder.idle_seconds > stale_after:
        return f"runner {pid} on {host} has been silent for {holder.idle_seconds:.0f}s"
    return None


def stale_holders(
    holders: list[LockHolder], active_runs: Collection[str], stale_after: float
) -> list[tuple[LockHolder, str]]:
    """Holders older than `stale_after` seconds whose run is over: ours to release."""
    stale = []
    for holder in holders:
        if holder.held_seconds <= stale_after:
            continue
        reason = holder_gone(holder, active_runs, stale_after)
        if reason:
            stale.append((holder, reason))
    return stale


def release(
    connection: psycopg.Connection, tenant_id: str, holder: LockHolder, reason: str, wait_seconds: float = 10.0
) -> LockRecovery:
    """End the holder's session (PostgreSQL drops its advisory locks with it) and wait until the lock is free."""
    connection.execute("SELECT pg_terminate_backend(%s)", [holder.backend_pid])
    deadline = time.monotonic() + wait_seconds
    while any(h.backend_pid == holder.backend_pid for h in lock_holders(connection, [holder.lock_key])):
        if time.monotonic() > deadline:
            raise TimeoutError(f"session {holder.backend_pid} still holds lock {holder.lock_key}")
        time.sleep(0.05)
    return LockRecovery(
        tenant_id=tenant_id,
        lock_key=holder.lock_key,
        holder_backend_pid=holder.backend_pid,
        holder_application=holder.application,
        held_seconds=round(holder.held_seconds, 1),
        reason=reason,
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
