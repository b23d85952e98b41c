"""An agent's writes follow its tenant's: where the tenant's role may not write (its data is moving, or it is
read-only), neither may the tenant's agents, and they may again when it may.

Holding an agent keeps its write privileges (INSERT, UPDATE, DELETE, by table and by column) in the operator's
database and revokes them, so every write of the agent's is refused by PostgreSQL with insufficient_privilege,
at once and in sessions already open, while its reads go on; releasing grants back what was kept. Nothing is
granted by a policy's name: the privileges are read from the catalog and given back through psycopg.sql. An
install while its tenant is held keeps the writes it would grant instead of granting them (`follow`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from ..connections import Connections
from ..control import Control
from ..ownership import agent_name, create_idempotently
from ..placement import Placement

HELD_TABLE = "held_agent_writes"
WRITES = ("INSERT", "UPDATE", "DELETE")
AGENT_OWNER_PREFIX = "AgentPolicy "  # ownership.agent_identity: "AgentPolicy <namespace>/<policy> of tenant <t>"
TENANT_SEPARATOR = " of tenant "
TERMINATE_WAIT_MS = 5000  # how long ending a session waits for it to be gone

# The role's write privileges in one schema: table-level ones (column is NULL) and column-level ones.
WRITE_PRIVILEGES = """
SELECT c.relname, a.privilege_type, NULL::name
  FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a
 WHERE c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = %(schema)s) AND c.relkind IN ('r', 'p')
   AND a.grantee = (SELECT oid FROM pg_roles WHERE rolname = %(role)s) AND a.privilege_type = ANY(%(writes)s)
UNION ALL
SELECT c.relname, a.privilege_type, att.attname
  FROM pg_attribute att JOIN pg_class c ON c.oid = att.attrelid CROSS JOIN LATERAL aclexplode(att.attacl) a
 WHERE c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = %(schema)s) AND c.relkind IN ('r', 'p')
   AND att.attnum > 0 AND NOT att.attisdropped
   AND a.grantee = (SELECT oid FROM pg_roles WHERE rolname = %(role)s) AND a.privilege_type = ANY(%(writes)s)
 ORDER BY 1, 2, 3"""

Privilege = tuple[str, str, str | None]  # (table, privilege, column or None for the whole table)


class AgentWrites:
    """Holds and releases the writes of a tenant's agents on one of its placements."""

    def __init__(self, connections: Connections, control: Control, lock: Callable[[str], threading.Lock]) -> None:
        self.connections = connections
        self.control = control
        self.lock = lock  # the per-database lock agent installs take: a hold never interleaves with one

    def roles(self, tenant: str) -> list[str]:
        """The login roles Paybill created for the tenant's AgentPolicies (each checked against its name)."""
        suffix = TENANT_SEPARATOR + tenant
        with self.connections.session() as conn:
            self.control.prepare(conn)
            rows = conn.execute(
                "SELECT name, owner FROM paybill.owned WHERE kind = 'role' AND database = '' "
                "AND starts_with(owner, %s) AND right(owner, %s) = %s ORDER BY name",
                (AGENT_OWNER_PREFIX, len(suffix), suffix),
            ).fetchall()
        key = self.control.naming_key()
        return [str(name) for name, owner in rows if _is_agent_of(key, str(name), str(owner), tenant)]

    def follow(self, placement: Placement, writable: bool) -> None:
        """Give the tenant's agents the writes the tenant's role has at `placement`: hold them or release them."""
        roles = self.roles(placement.tenant)
        if not roles or not self._schema_exists(placement):
            return
        with self.lock(placement.database), self.connections.session(placement.database) as conn:
            for role in roles:
                if writable:
                    self.release(conn, placement, role)
                else:
                    self.hold(conn, placement, role, replace=False)

    def hold(self, conn: psycopg.Connection, placement: Placement, role: str, replace: bool) -> None:
        """Keep the role's write privileges at `placement` and revoke them (`conn` is in its database). With
        `replace`, what is kept becomes what the role has now, even nothing (an install just set it); without,
        a role with nothing to revoke keeps what an earlier hold kept."""
        granted = write_privileges(conn, placement.schema, role)
        if granted or replace:
            self._keep(placement.database, role, granted)
        if granted:
            conn.execute(
                sql.SQL("REVOKE INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {} FROM {}").format(
                    sql.Identifier(placement.schema), sql.Identifier(role)
                )
            )

    def release(self, conn: psycopg.Connection, placement: Placement, role: str) -> None:
        """Grant back what a hold kept (on the tables and columns that still exist), and forget it."""
        kept = self._kept(placement.database, role)
        if kept is None:
            return
        for statement in grant_statements(conn, placement.schema, role, kept):
            conn.execute(statement)
        self.forget(placement.database, role)

    def forget(self, database: str, role: str) -> None:
        with self.connections.session() as conn:
            self._prepare(conn)
            conn.execute(f"DELETE FROM paybill.{HELD_TABLE} WHERE database = %s AND role = %s", (database, role))

    def lock_out(self, placement: Placement) -> int:
        """The tenant's agents may no longer log in and their sessions end, at once and on their own: a policy
        install waiting on a lock (or failing) never leaves a suspended tenant's agent a login. Returns how many
        sessions were ended."""
        roles = self.roles(placement.tenant)
        if not roles:
            return 0
        with self.lock(placement.database), self.connections.session() as conn:  # never between an install's steps
            for role in roles:
                conn.execute(sql.SQL("ALTER ROLE {} NOLOGIN").format(sql.Identifier(role)))
            row = conn.execute(
                "SELECT count(pg_terminate_backend(pid, %s)) FROM pg_stat_activity WHERE usename = ANY(%s) "
                "AND pid <> pg_backend_pid()",
                (TERMINATE_WAIT_MS, roles),
            ).fetchone()
        return int(row[0]) if row else 0

    def end_writers(self, placement: Placement, roles: Iterable[str]) -> int:
        """End the sessions of `roles` at `placement`'s database that are inside a transaction, and wait until
        they are gone: a write begun before a hold is rolled back (its client gets an error) instead of
        committing after the data was copied. Idle sessions stay: their next write is refused, reads go on."""
        with self.connections.session() as conn:
            row = conn.execute(
                "SELECT count(pg_terminate_backend(pid, %s)) FROM pg_stat_activity WHERE datname = %s "
                "AND usename = ANY(%s) AND state IS DISTINCT FROM 'idle' AND pid <> pg_backend_pid()",
                (TERMINATE_WAIT_MS, placement.database, list(roles)),
            ).fetchone()
        return int(row[0]) if row else 0

    def remove(self, placement: Placement) -> None:
        """The tenant's data leaves `placement`: its agents keep no privilege there and no kept writes."""
        roles = self.roles(placement.tenant)
        if roles and self._schema_exists(placement):
            with self.lock(placement.database), self.connections.session(placement.database) as conn:
                for role in roles:
                    conn.execute(
                        sql.SQL("REVOKE ALL ON ALL TABLES IN SCHEMA {} FROM {}").format(
                            sql.Identifier(placement.schema), sql.Identifier(role)
                        )
                    )
        for role in roles:
            self.forget(placement.database, role)

    def _schema_exists(self, placement: Placement) -> bool:
        with self.connections.session() as conn:
            found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (placement.database,)).fetchone()
        if found is None:
            return False
        with self.connections.session(placement.database) as conn:
            return (
                conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (placement.schema,)).fetchone()
                is not None
            )

    def _keep(self, database: str, role: str, privileges: list[Privilege]) -> None:
        with self.connections.session() as conn:
            self._prepare(conn)
            conn.execute(
                f"INSERT INTO paybill.{HELD_TABLE} (database, role, role_oid, privileges) "
                "SELECT %s, rolname, oid, %s FROM pg_roles WHERE rolname = %s ON CONFLICT (database, role) "
                "DO UPDATE SET role_oid = excluded.role_oid, privileges = excluded.privileges",
                (database, Jsonb([list(p) for p in privileges]), role),
            )

    def _kept(self, database: str, role: str) -> list[Privilege] | None:
        with self.connections.session() as conn:
            self._prepare(conn)
            row = conn.execute(  # kept for this very role: never for a later one of the same name
                f"SELECT h.privileges FROM paybill.{HELD_TABLE} h JOIN pg_roles r ON r.rolname = h.role "
                "AND r.oid = h.role_oid WHERE h.database = %s AND h.role = %s",
                (database, role),
            ).fetchone()
        return None if row is None else [(str(t), str(p), None if c is None else str(c)) for t, p, c in row[0]]

    def _prepare(self, conn: psycopg.Connection) -> None:
        ready = self.connections.ready
        if ("", HELD_TABLE) in ready:
            return
        self.control.prepare(conn)
        create_idempotently(conn, _create_held_table)
        ready.add(("", HELD_TABLE))


def _create_held_table(conn: psycopg.Connection) -> None:
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS paybill.{HELD_TABLE} (database text NOT NULL, role name NOT NULL, "
        "role_oid oid NOT NULL, privileges jsonb NOT NULL, PRIMARY KEY (database, role))"
    )


def write_privileges(conn: psycopg.Connection, schema: str, role: str) -> list[Privilege]:
    """The role's INSERT, UPDATE and DELETE privileges on the tables of `schema`, by table and by column."""
    rows = conn.execute(WRITE_PRIVILEGES, {"schema": schema, "role": role, "writes": list(WRITES)}).fetchall()
    return [(str(table), str(privilege), None if column is None else str(column)) for table, privilege, column in rows]


def grant_statements(
    conn: psycopg.Connection, schema: str, role: str, privileges: list[Privilege]
) -> list[sql.Composed]:
    """GRANTs giving back `privileges`, leaving out tables and columns that no longer exist."""
    existing: dict[str, set[str]] = {}
    for table, column in conn.execute(
        "SELECT c.relname, att.attname FROM pg_class c JOIN pg_attribute att ON att.attrelid = c.oid "
        "WHERE c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = %s) AND c.relkind IN ('r', 'p') "
        "AND att.attnum > 0 AND NOT att.attisdropped",
        (schema,),
    ):
        existing.setdefault(str(table), set()).add(str(column))
    columns: dict[tuple[str, str], list[str]] = {}
    statements = []
    for table, privilege, column in privileges:
        if table not in existing or privilege not in WRITES or (column is not None and column not in existing[table]):
            continue
        if column is None:
            statements.append(_grant(privilege, schema, table, role))
        else:
            columns.setdefault((table, privilege), []).append(column)
    for (table, privilege), names in columns.items():
        statements.append(_grant(privilege, schema, table, role, names))
    return statements


def _grant(privilege: str, schema: str, table: str, role: str, columns: list[str] | None = None) -> sql.Composed:
    on = sql.SQL("({})").format(sql.SQL(", ").join(map(sql.Identifier, columns))) if columns else sql.SQL("")
    return sql.SQL("GRANT {} {} ON {} TO {}").format(
        sql.SQL(privilege), on, sql.Identifier(schema, table), sql.Identifier(role)
    )


def _is_agent_of(key: bytes, name: str, owner: str, tenant: str) -> bool:
    """Whether `owner` ("AgentPolicy <namespace>/<policy> of tenant <tenant>") names the agent role `name`."""
    policy, separator, of = owner.removeprefix(AGENT_OWNER_PREFIX).partition(TENANT_SEPARATOR)
    namespace, slash, policy_name = policy.partition("/")
    return bool(separator and slash) and of == tenant and agent_name(key, tenant, namespace, policy_name) == name
