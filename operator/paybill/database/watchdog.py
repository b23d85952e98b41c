"""The lock watchdog: reads the sessions and table locks of the shared databases, asks `lock_holders` which
tenant sessions to end, and ends them (a session is named by pid and start time, and its role checked again)."""

from __future__ import annotations

import time

from .connections import Connections
from .control import Control
from .lock_holders import (
    LockRow,
    SessionRow,
    Termination,
    Waited,
    operator_waiting,
    operator_waits,
    sessions_to_end,
    tenants_of_roles,
)
from .placement import APP_SCHEMA, BRIDGE_DATABASE, CONTROL_SCHEMA, POOLED_DATABASE

# Tables every tenant of a shared database uses (a bridge tenant's schema is its own).
SHARED_TABLES = {POOLED_DATABASE: frozenset({APP_SCHEMA, CONTROL_SCHEMA}), BRIDGE_DATABASE: frozenset[str]()}

SESSIONS = """
SELECT a.pid, a.backend_start, a.usename, a.datname,
       extract(epoch FROM clock_timestamp() - a.xact_start)::float8, pg_blocking_pids(a.pid)
  FROM pg_stat_activity a
 WHERE a.datname = current_database() AND a.pid <> pg_backend_pid() AND a.usename IS NOT NULL"""
LOCKS = """
SELECT l.pid, n.nspname, c.relname, l.mode, l.granted
  FROM pg_locks l JOIN pg_class c ON c.oid = l.relation JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE l.locktype = 'relation' AND l.pid IS NOT NULL
   AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"""
TERMINATE = """
SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = %s AND backend_start = %s AND usename = %s"""


class LockWatchdog:
    def __init__(self, connections: Connections, control: Control) -> None:
        self.connections = connections
        self.control = control
        self._waited: dict[str, dict[str, Waited]] = {}  # database -> the operator's summed waits per table

    def end_lock_holders(self, limit_s: float) -> list[Termination]:
        """End the tenant and agent sessions of the shared databases that stall other tenants (`lock_holders`);
        the ones ended."""
        ended = []
        for database in self._shared_databases():
            with self.connections.session(database) as conn:
                sessions = [
                    SessionRow(int(p), s, str(r), str(d), None if t is None else float(t), tuple(b or ()))
                    for p, s, r, d, t, b in conn.execute(SESSIONS)
                ]
                locks = [LockRow(int(p), str(n), str(c), str(m), bool(g)) for p, n, c, m, g in conn.execute(LOCKS)]
                tenants = self._tenants({s.role for s in sessions})
                waiting = operator_waiting(sessions, locks, tenants)
                waited = self._waited[database] = operator_waits(
                    self._waited.get(database, {}), waiting, time.monotonic()
                )
                for termination in sessions_to_end(sessions, locks, tenants, SHARED_TABLES, limit_s, waited):
                    row = conn.execute(TERMINATE, (termination.pid, termination.started, termination.role)).fetchone()
                    if row and row[0]:
                        ended.append(termination)
        return ended

    def _tenants(self, roles: set[str]) -> dict[str, str]:
        """Role -> tenant for those of `roles` Paybill created for a tenant or an agent."""
        with self.connections.session() as conn:
            self.control.prepare(conn)
            owned = [
                (str(name), str(owner))
                for name, owner in conn.execute(
                    "SELECT name, owner FROM paybill.owned WHERE kind = 'role' AND database = '' AND name = ANY(%s)",
                    (sorted(roles),),
                )
            ]
        return tenants_of_roles(self.control.naming_key(), owned)

    def _shared_databases(self) -> list[str]:
        with self.connections.session() as conn:
            return [
                str(name)
                for (name,) in conn.execute(
                    "SELECT datname FROM pg_database WHERE datname = ANY(%s) ORDER BY 1", (list(SHARED_TABLES),)
                )
            ]
