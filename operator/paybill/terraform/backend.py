"""The `pg` backend: one schema of state per tenant, the session identity a run's Terraform connects with,
and the PostgreSQL side of its state locks (which `terraform force-unlock` cannot release: they are session
advisory locks held by another connection)."""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
import uuid
from collections.abc import Collection
from dataclasses import dataclass, replace
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
APPLICATION_NAME_MAX = 63  # PostgreSQL keeps NAMEDATALEN - 1 bytes of an application_name
_HOST = socket.gethostname()
_instance: tuple[int, str] | None = None  # (the pid it was made in, the id)


def schema_for(tenant_id: str) -> str:
    """`tf_<tenant>`: a DNS label maps to exactly one schema name (dashes become underscores, which labels lack)."""
    return "tf_" + checked_tenant_id(tenant_id).replace("-", "_")


def instance_id() -> str:
    """This runner process's identity in the names of its sessions: random, made once per process (a forked child
    makes its own). Never its host or pid: two replicas' Pod names can share a prefix, and each is PID 1 in its Pod."""
    global _instance
    if _instance is None or _instance[0] != os.getpid():
        _instance = (os.getpid(), secrets.token_hex(6))
    return _instance[1]


def application_name(run_id: str, started: float | None = None, instance: str | None = None, host: str = _HOST) -> str:
    """Who holds a lock, as pg_stat_activity shows it: the runner instance, its run, when the run started (no lock
    it takes is older) and, for humans, the host (cut to fit; the other parts never are)."""
    when = int(time.time() if started is None else started)
    name = f"{APPLICATION_PREFIX}/{instance or instance_id()}/{run_id}/{when}/{host}"
    return name.encode()[:APPLICATION_NAME_MAX].decode(errors="ignore")


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
class RunnerIdentity:
    instance: str
    run_id: str
    started: int
    host: str


@dataclass(frozen=True)
class LockHolder:
    backend_pid: int
    application: str
    lock_key: int
    session_seconds: float  # since the session holding the lock was opened
    idle_seconds: float  # since its last statement ended (when idle, the lock is at least this old)
    state: str
    now: float  # the server's clock when this was read
    instance_quiet_seconds: float = 0.0  # since any session of the holder's runner instance was last active

    @property
    def identity(self) -> RunnerIdentity | None:
        """Which runner instance and run the session is; None for anyone else's."""
        parts = self.application.split("/", 4)
        if len(parts) != 5 or parts[0] != APPLICATION_PREFIX or not parts[3].isdigit() or not all(parts[1:3]):
            return None
        return RunnerIdentity(parts[1], parts[2], int(parts[3]), parts[4])

    @property
    def held_seconds(self) -> float:
        """How long the lock has been held, at most: it was taken after the holder's run started and its session
        opened (pg_locks keeps no time)."""
        identity = self.identity
        since_run = self.now - identity.started if identity else self.session_seconds
        return max(0.0, min(self.session_seconds, since_run))


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
                  coalesce(a.state, ''), extract(epoch FROM now())::float8
             FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
            WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
              AND ((l.classid::bigint << 32) | l.objid::bigint) = ANY(%s)
              AND a.pid <> pg_backend_pid()""",
        [list(keys)],
    ).fetchall()
    holders = [LockHolder(*row) for row in rows]
    quiet = _instances_quiet_seconds(connection)
    return [
        replace(h, instance_quiet_seconds=quiet.get(h.identity.instance, 0.0) if h.identity else 0.0) for h in holders
    ]


def _instances_quiet_seconds(connection: psycopg.Connection) -> dict[str, float]:
    """For each runner instance with a session: seconds since any of its sessions was last active (0: one is now)."""
    rows = connection.execute(
        """SELECT application_name,
                  CASE WHEN state = 'idle'
                       THEN extract(epoch FROM now() - coalesce(state_change, backend_start))::float8 ELSE 0 END
             FROM pg_stat_activity WHERE application_name LIKE %s AND pid <> pg_backend_pid()""",
        [APPLICATION_PREFIX + "/%"],
    ).fetchall()
    quiet: dict[str, float] = {}
    for application, seconds in rows:
        instance = application.split("/")[1]
        quiet[instance] = min(quiet.get(instance, float(seconds)), float(seconds))
    return quiet


def holder_gone(
    holder: LockHolder, active_runs: Collection[str], stale_after: float, own_instance: str | None = None
) -> str | None:
    """Why this holder's run is certainly over (None: it may be alive, or it is not ours to judge).

    A run of this very process is over when it is not among `active_runs`. Another runner instance (another
    replica, a Job's pod, a process before a restart) is gone only when none of its sessions, the holder's
    included, has been active for `stale_after`: a live runner's run ends (or is killed) within its timeout.
    """
    identity = holder.identity
    if identity is None:
        return None
    if identity.instance == (own_instance or instance_id()):
        return None if identity.run_id in active_runs else f"run {identity.run_id} of this runner has ended"
    if holder.state == "idle" and holder.instance_quiet_seconds > stale_after:
        return (
            f"runner {identity.instance} on {identity.host} has had no session active"
            f" for {holder.instance_quiet_seconds:.0f}s"
        )
    return None


def stale_holders(
    holders: list[LockHolder], active_runs: Collection[str], stale_after: float, own_instance: str | None = None
) -> list[tuple[LockHolder, str]]:
    """Holders of a lock taken more than `stale_after` seconds ago whose run is over: ours to release."""
    stale = []
    for holder in holders:
        if holder.held_seconds <= stale_after:
            continue
        reason = holder_gone(holder, active_runs, stale_after, own_instance)
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
