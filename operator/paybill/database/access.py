"""A tenant's access level in its data: full (log in and write), read_only (log in, writes refused) or none (no
login, sessions ended); and the sweep that ends sessions idling in a transaction in a shared database."""

from __future__ import annotations

import psycopg
from psycopg import sql

from ..api.tenant import Access
from .agents.hold import AgentWrites
from .claims import Claims
from .connections import Connections
from .control import Control
from .migrations import LEDGER
from .ownership import NameConflict, tenant_identity
from .placement import BRIDGE_DATABASE, POOLED_DATABASE, SHARED_OWNER, Placement

WRITE_PRIVILEGES = sql.SQL("INSERT, UPDATE, DELETE")


class AccessLevels:
    def __init__(self, connections: Connections, control: Control, claims: Claims, agents: AgentWrites) -> None:
        self.connections = connections
        self.control = control
        self.claims = claims
        self.agents = agents

    def set_access(self, placement: Placement, access: Access) -> None:
        """full: log in and write; read_only: log in, writes refused; none: no login, sessions ended."""
        role = sql.Identifier(placement.role)
        if not self.claims.owns_role(placement.role, tenant_identity(placement.tenant)):
            raise NameConflict(f"role {placement.role} is not the one Paybill created for this tenant")
        with self.connections.session() as conn:
            conn.execute(sql.SQL("ALTER ROLE {} " + ("NOLOGIN" if access == Access.NONE else "LOGIN")).format(role))
            if access == Access.NONE:
                end_sessions(conn, placement.role)
        if access == Access.NONE:
            self.agents.lock_out(placement)  # its agents too, whatever their policies' installs are waiting for
        else:
            self.set_writable(placement, access == Access.FULL)

    def set_writable(self, placement: Placement, writable: bool) -> None:
        """The tenant's role may write at `placement`, or only read; its agents follow (`AgentWrites`)."""
        self._set_tenant_writable(placement, writable)
        self.agents.follow(placement, writable)

    def _set_tenant_writable(self, placement: Placement, writable: bool) -> None:
        role, schema = sql.Identifier(placement.role), sql.Identifier(placement.schema)
        with self.connections.session(placement.database) as conn:
            if placement.pooled:
                changed = conn.execute(
                    "UPDATE paybill.tenant_roles SET writable = %s WHERE role = %s AND writable <> %s",
                    (writable, placement.role, writable),
                ).rowcount
                if changed and not writable:  # a transaction begun before sees writable in its snapshot: end it
                    self.agents.end_writers(placement, [placement.role])
            elif writable:
                conn.execute(
                    sql.SQL("GRANT {} ON ALL TABLES IN SCHEMA {} TO {}").format(WRITE_PRIVILEGES, schema, role)
                )
                conn.execute(sql.SQL("REVOKE ALL ON {}.{} FROM {}").format(schema, sql.Identifier(LEDGER), role))
            else:
                conn.execute(
                    sql.SQL("REVOKE {} ON ALL TABLES IN SCHEMA {} FROM {}").format(WRITE_PRIVILEGES, schema, role)
                )

    def end_idle_transactions(self, max_idle_seconds: float) -> int:
        """End the sessions of Paybill's tenant and agent roles that sit idle in a transaction in a shared
        database for longer than `max_idle_seconds`: a tenant may SET its own idle timeout off, and hold a
        table lock (its table-level DELETE allows LOCK TABLE) that stalls every other tenant. Returns how
        many were ended. Run it periodically."""
        with self.connections.session() as conn:
            self.control.prepare(conn)
            row = conn.execute(
                "SELECT count(pg_terminate_backend(a.pid)) FROM pg_stat_activity a WHERE a.datname = ANY(%s) "
                "AND a.state IN ('idle in transaction', 'idle in transaction (aborted)') "
                "AND a.state_change < now() - make_interval(secs => %s) AND EXISTS (SELECT 1 FROM paybill.owned o "
                "WHERE o.kind = 'role' AND o.database = '' AND o.name = a.usename AND o.owner <> %s)",
                ([POOLED_DATABASE, BRIDGE_DATABASE], max_idle_seconds, SHARED_OWNER),
            ).fetchone()
        return int(row[0]) if row else 0

    def access_of(self, placement: Placement) -> Access:
        with self.connections.session() as conn:
            row = conn.execute("SELECT rolcanlogin FROM pg_roles WHERE rolname = %s", (placement.role,)).fetchone()
        if not row or not row[0]:
            return Access.NONE
        with self.connections.session(placement.database) as conn:
            writable = tenant_writable(conn, placement)
        return Access.FULL if writable else Access.READ_ONLY


def tenant_writable(conn: psycopg.Connection, placement: Placement) -> bool:
    """Whether the tenant's role may write at `placement` (`conn` is in its database)."""
    if placement.pooled:
        found = conn.execute("SELECT writable FROM paybill.tenant_roles WHERE role = %s", (placement.role,)).fetchone()
    else:
        found = conn.execute(
            "SELECT has_table_privilege(%s, %s, 'INSERT')",
            (placement.role, f"{sql.Identifier(placement.schema).as_string(conn)}.orders"),
        ).fetchone()
    return bool(found and found[0])


def end_sessions(conn: psycopg.Connection, role: str, database: str | None = None) -> int:
    row = conn.execute(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE pid <> "
        "pg_backend_pid() AND usename = %s AND (%s::text IS NULL OR datname = %s)",
        (role, database, database),
    ).fetchone()
    return int(row[0]) if row else 0
