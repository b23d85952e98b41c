"""Removing a tenant's data and roles, and an agent's role: only what Paybill created for that owner (a role,
schema or database of someone else with the same name stays), access first, every step idempotent.

A pooled tenant's rows go in batches of DELETE_BATCH, each its own transaction, walking the (tenant_id, id) keys
upwards: time linear in the tenant's rows (every foreign key is indexed, see migrations), and no transaction on
the shared tables long enough to hold back their vacuum or other tenants' migrations of the schema. The last
transaction deletes whatever is left and the tenant's mapping together; a removal interrupted between batches
is finished by the next (access went first, so nobody sees the half-removed rows)."""

from __future__ import annotations

import psycopg
from psycopg import sql

from ..api.plan import Isolation
from .access import end_sessions
from .agents.hold import HELD_TABLE
from .claims import Claims
from .connections import Connections
from .control import Control
from .migrations import TABLES
from .ownership import tenant_identity
from .placement import APP_SCHEMA, BRIDGE_DATABASE, POOLED_DATABASE, POOLED_GROUP, Placement
from .provisioning import DDL_LOCK_TIMEOUT

DELETE_BATCH = 10_000  # rows per transaction when a pooled tenant's rows are removed
BIGINT_MIN, BIGINT_MAX = -(2**63), 2**63 - 1  # the range of the tables' id keys


class Removal:
    def __init__(self, connections: Connections, control: Control, claims: Claims) -> None:
        self.connections = connections
        self.control = control
        self.claims = claims

    def remove(self, placement: Placement) -> None:
        """Delete the tenant's data at `placement` and the role's privileges there. Idempotent."""
        role = sql.Identifier(placement.role)
        if placement.isolation == Isolation.SILO:
            if self.claims.owns_database(placement):
                with self.connections.session() as conn:
                    conn.execute(
                        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(placement.database))
                    )
                self.control.forget_object("database", placement.database)
            self.connections.ready.difference_update({(placement.database, placement.schema), (placement.database, "")})
            return
        if not self.claims.database_exists(placement.database):
            return
        with self.connections.session(placement.database) as conn:
            if self.claims.owns_role(placement.role, tenant_identity(placement.tenant)):  # never a role of someone else
                # Access goes first: a client still at the old placement gets an error, never an empty answer.
                if placement.pooled:
                    conn.execute(sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(POOLED_GROUP), role))
                with self.connections.setup:  # one database row: concurrent GRANTs on it would fail
                    conn.execute(
                        sql.SQL("REVOKE ALL ON DATABASE {} FROM {}").format(sql.Identifier(placement.database), role)
                    )
                conn.execute(
                    sql.SQL("ALTER ROLE {} IN DATABASE {} RESET ALL").format(role, sql.Identifier(placement.database))
                )
                end_sessions(conn, placement.role, placement.database)
            if placement.pooled:
                for table in reversed(TABLES):  # children first
                    delete_in_batches(conn, table, placement.tenant)
                with conn.transaction():
                    for table in reversed(TABLES):
                        conn.execute(
                            sql.SQL("DELETE FROM {} WHERE tenant_id = %s").format(sql.Identifier(APP_SCHEMA, table)),
                            (placement.tenant,),
                        )
                    conn.execute("DELETE FROM paybill.tenant_roles WHERE role = %s", (placement.role,))
            else:
                if self.claims.owns_schema(conn, placement):  # a schema of someone else is left alone
                    conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(placement.schema)))
                self.control.forget_object("schema", placement.schema, placement.database)
                self.connections.ready.discard((placement.database, placement.schema))

    def drop_role(self, tenant: str) -> None:
        """Drop the tenant's role, if it is the one Paybill created for it (a role of someone else stays)."""
        role = self.control.tenant_role(tenant)
        if not self.claims.owns_role(role, tenant_identity(tenant)):
            return
        with self.connections.session() as conn:
            end_sessions(conn, role)
            for database in (POOLED_DATABASE, BRIDGE_DATABASE):
                if self.claims.database_exists(database):
                    with self.connections.session(database) as db:
                        db.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        self.control.forget_object("role", role)

    def drop_agent_role(self, role: str, owner: str, databases: tuple[str, ...]) -> bool:
        """Drop an agent's role and everything it holds in `databases`, if Paybill created it for `owner`."""
        if not self.claims.owns_role(role, owner):
            return False
        with self.connections.session() as conn:
            conn.execute(sql.SQL("ALTER ROLE {} NOLOGIN").format(sql.Identifier(role)))
            end_sessions(conn, role)
        for database in databases:
            if self.claims.database_exists(database):
                with self.connections.session(database) as db, db.transaction():  # its policies: ACCESS EXCLUSIVE locks
                    db.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(DDL_LOCK_TIMEOUT)))
                    db.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        with self.connections.session() as conn:
            conn.execute("DELETE FROM paybill.row_policies WHERE role = %s", (role,))
            if conn.execute("SELECT to_regclass(%s)", (f"paybill.{HELD_TABLE}",)).fetchone() != (None,):
                conn.execute(
                    sql.SQL("DELETE FROM paybill.{} WHERE role = %s").format(sql.Identifier(HELD_TABLE)), (role,)
                )
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
        self.control.forget_object("role", role)
        return True


def delete_in_batches(conn: psycopg.Connection, table: str, tenant: str, batch: int = DELETE_BATCH) -> int:
    """Delete `tenant`'s rows of the pooled `table` (keyed by (tenant_id, id), as every table is), `batch` rows per
    transaction in key order: each batch is the key range from the last one's end to its `batch`-th key, found and
    deleted through the primary key, so no batch reads the ones before it. Returns how many were deleted (rows
    written meanwhile at keys already passed are the caller's last DELETE's)."""
    table_id = sql.Identifier(APP_SCHEMA, table)
    end_of_batch = sql.SQL("SELECT id FROM {} WHERE tenant_id = %s AND id >= %s ORDER BY id OFFSET %s LIMIT 1").format(
        table_id
    )
    delete = sql.SQL("DELETE FROM {} WHERE tenant_id = %s AND id >= %s AND id <= %s").format(table_id)
    deleted, start = 0, BIGINT_MIN
    while True:
        row = conn.execute(end_of_batch, (tenant, start, batch - 1)).fetchone()
        end = int(row[0]) if row else BIGINT_MAX
        deleted += conn.execute(delete, (tenant, start, end)).rowcount
        if end == BIGINT_MAX:
            return deleted
        start = end + 1
