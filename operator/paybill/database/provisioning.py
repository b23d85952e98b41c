"""Provisioning a tenant's data: its role, database, schema and tables, and row security in the shared ones.
Identifiers go through psycopg.sql, never formatting.

- pooled: each tenant's login role is mapped to its tenant id in `paybill.tenant_roles`, a table the role can
  read (its own row only) but never change; the policies compare tenant_id with that mapping for
  `current_user`, so no setting, SET ROLE or search_path trick reaches another tenant's rows.
- bridge and silo: the role owns nothing, and is granted its own schema only.

The shared databases give a tenant its data and nothing more: no large objects, advisory locks, pg_notify, DO
blocks, query_to_xml family, TEMP, pg_policies or pg_stat_activity. The operator never serializes on a lock a
tenant could take. Every step is idempotent.
"""

from __future__ import annotations

import threading

import psycopg
from psycopg import sql

from ..api.plan import Isolation
from .claims import Claims
from .connections import Connections
from .errors import MigrationError
from .migrations import LEDGER, TABLES, migrate
from .ownership import create_idempotently, tenant_identity
from .placement import (
    APP_SCHEMA,
    BRIDGE_DATABASE,
    CONTROL_SCHEMA,
    POOLED_DATABASE,
    POOLED_GROUP,
    SHARED_OWNER,
    Placement,
)
from .server import IDLE_IN_TRANSACTION_TIMEOUT

TENANT_CONNECTION_LIMIT = 20  # per tenant login role; no Plan quota names connections yet
AGENT_CONNECTION_LIMIT = 5  # per agent login role
DDL_LOCK_TIMEOUT = "2s"  # row security DDL on shared tables gives up (and is retried) rather than queue readers
TENANT_LOCK_TIMEOUT = "5s"  # the default wait of a tenant's or agent's statement for a lock
# What a tenant's application never needs in a shared database (all in pg_catalog but dblink's): large
# objects, advisory locks (a tenant could stall others), NOTIFY, the xml exports that run any query, and
# other sessions' activity.
REVOKED_FUNCTIONS = (
    r"^(lo_.*|loread|lowrite|pg_advisory_.*|pg_try_advisory_.*|pg_notify|dblink.*|"
    r".*_to_xml.*|.*_to_xmlschema|pg_stat_get_.*|pg_lock_status|"
    r"pg_blocking_pids|pg_safe_snapshot_blocking_pids)$"
)
# Other agents' predicates, other sessions' activity and locks.
REVOKED_CATALOGS = ("pg_policies", "pg_policy", "pg_locks")
# Every statistics view (pg_stat_*, pg_statio_*: other tenants' row counts and writes, sessions, the database's
# totals); the pg_stat_get_* functions behind them are in REVOKED_FUNCTIONS.
REVOKED_VIEWS = r"^pg_stat(io)?_.*$"


class Provisioning:
    def __init__(
        self, connections: Connections, claims: Claims, idle_in_transaction_timeout: str = IDLE_IN_TRANSACTION_TIMEOUT
    ) -> None:
        self.connections = connections
        self.claims = claims
        self.idle_in_transaction_timeout = idle_in_transaction_timeout
        self._policy_locks: dict[str, threading.Lock] = {}

    def ensure(self, placement: Placement, password: str) -> None:
        """Role, database, schema, migrations and read privileges. Writes and LOGIN are `set_access`'s."""
        self._ensure_role(placement, password)
        self._ensure_database(placement)
        with self.connections.session(placement.database) as conn:
            self._ensure_schema(conn, placement)
            role, schema = sql.Identifier(placement.role), sql.Identifier(placement.schema)
            if placement.pooled:
                conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(POOLED_GROUP), role))
                conn.execute(
                    "INSERT INTO paybill.tenant_roles (role, tenant) VALUES (%s, %s) ON CONFLICT (role) DO NOTHING",
                    (placement.role, placement.tenant),
                )
                mapped = conn.execute(
                    "SELECT tenant FROM paybill.tenant_roles WHERE role = %s", (placement.role,)
                ).fetchone()
                if mapped is None or mapped[0] != placement.tenant:
                    raise MigrationError(f"role {placement.role} is mapped to another tenant")
            else:
                with self.connections.setup:  # one database row: concurrent GRANTs on it would fail
                    conn.execute(
                        sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(placement.database), role)
                    )
                conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(schema, role))
                conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}").format(schema, role))
                conn.execute(sql.SQL("REVOKE ALL ON {}.{} FROM {}").format(schema, sql.Identifier(LEDGER), role))
                _own_rows_under_row_security(conn, placement)
            conn.execute(
                sql.SQL("ALTER ROLE {} IN DATABASE {} SET search_path = {}").format(
                    role, sql.Identifier(placement.database), schema
                )
            )

    def _ensure_role(self, placement: Placement, password: str) -> None:
        self.claims.claim_role(
            placement.role,
            tenant_identity(placement.tenant),
            "NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT",
        )
        with self.connections.session() as conn:
            conn.execute(
                sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(placement.role), sql.Literal(password))
            )
        self.limit_sessions(placement.role, TENANT_CONNECTION_LIMIT)

    def limit_sessions(self, role: str, connections: int) -> None:
        """Bound what one login role can hold: its connections (others still get theirs), and by default how
        long its sessions wait for a lock or sit idle in a transaction (holding locks every tenant needs).
        The role can SET its own timeouts: the server-wide idle_in_transaction_session_timeout is the default
        of every session, not a floor."""
        role_id = sql.Identifier(role)
        with self.connections.session() as conn:
            conn.execute(sql.SQL("ALTER ROLE {} CONNECTION LIMIT {}").format(role_id, sql.Literal(connections)))
            conn.execute(
                sql.SQL("ALTER ROLE {} SET idle_in_transaction_session_timeout = {}").format(
                    role_id, sql.Literal(self.idle_in_transaction_timeout)
                )
            )
            conn.execute(
                sql.SQL("ALTER ROLE {} SET lock_timeout = {}").format(role_id, sql.Literal(TENANT_LOCK_TIMEOUT))
            )

    def _ensure_database(self, placement: Placement) -> None:
        ready = self.connections.ready
        if (placement.database, "") in ready:
            return
        shared = placement.database in (POOLED_DATABASE, BRIDGE_DATABASE)
        if not shared:
            self.claims.claim_database(placement.database, tenant_identity(placement.tenant))
            return
        with self.connections.setup:
            if (placement.database, "") in ready:
                return
            self.claims.claim_database(placement.database, SHARED_OWNER)
            with self.connections.session(placement.database) as conn:
                create_idempotently(conn, _harden_shared_database)
            ready.add((placement.database, ""))

    def _ensure_schema(self, conn: psycopg.Connection, placement: Placement) -> None:
        ready = self.connections.ready
        key = (placement.database, placement.schema)
        if key in ready:
            return
        if placement.isolation == Isolation.BRIDGE:
            self.claims.claim_schema(conn, placement.database, placement.schema, tenant_identity(placement.tenant))
            migrate(conn, placement.schema)
        elif placement.pooled:
            with self.connections.setup:
                if key in ready:
                    return
                migrate(conn, placement.schema)
                self.claims.claim_role(POOLED_GROUP, SHARED_OWNER, "NOLOGIN NOINHERIT")
                create_idempotently(conn, _ensure_pooled)
        else:
            conn.execute("REVOKE ALL ON SCHEMA public FROM PUBLIC")
            migrate(conn, placement.schema)
        ready.add(key)

    # --- agent policies ----------------------------------------------------------------------------------

    def policy_lock(self, database: str) -> threading.Lock:
        """Held while an agent policy is installed in `database`: concurrent GRANTs and policy DDL on one
        table fail with "tuple concurrently updated". A lock in this process, which no tenant can reach."""
        with self.connections.setup:
            return self._policy_locks.setdefault(database, threading.Lock())

    def grant_connect(self, database: str, role: str) -> None:
        # one database row: concurrent GRANTs on it would fail
        with self.connections.setup, self.connections.session(database) as conn:
            conn.execute(
                sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(database), sql.Identifier(role))
            )


def _harden_shared_database(conn: psycopg.Connection) -> None:
    """Close what a tenant's application does not need in a shared database (run as a superuser)."""
    conn.execute("REVOKE ALL ON SCHEMA public FROM PUBLIC")
    conn.execute("REVOKE USAGE ON LANGUAGE plpgsql FROM PUBLIC")  # no DO blocks
    views = [
        str(v)
        for (v,) in conn.execute(
            "SELECT c.relname FROM pg_class c WHERE c.relnamespace = "
            "'pg_catalog'::regnamespace AND c.relkind = 'v' AND c.relname ~ %s "
            "ORDER BY 1",
            (REVOKED_VIEWS,),
        )
    ]
    for catalog in (*REVOKED_CATALOGS, *views):
        conn.execute(sql.SQL("REVOKE ALL ON {} FROM PUBLIC").format(sql.Identifier("pg_catalog", catalog)))
    functions = [
        str(f)
        for (f,) in conn.execute(  # those PUBLIC may still execute (a NULL acl means it may)
            "SELECT p.oid::regprocedure::text FROM pg_proc p WHERE p.proname ~ %s AND (p.proacl IS NULL OR "
            "EXISTS (SELECT 1 FROM aclexplode(p.proacl) a WHERE a.grantee = 0)) ORDER BY 1",
            (REVOKED_FUNCTIONS,),
        )
    ]
    for function in functions:  # regprocedure text is already a quoted, schema-qualified signature
        conn.execute(sql.SQL("REVOKE EXECUTE ON FUNCTION {} FROM PUBLIC").format(sql.SQL(function)))  # type: ignore[arg-type]


def _ensure_pooled(conn: psycopg.Connection) -> None:
    """The role-to-tenant mapping and one set of RLS policies per shared table (the group role exists)."""
    group = sql.Identifier(POOLED_GROUP)
    conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(POOLED_DATABASE), group))
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(CONTROL_SCHEMA)))
    conn.execute(
        "CREATE TABLE IF NOT EXISTS paybill.tenant_roles (role name PRIMARY KEY, "
        "tenant text NOT NULL UNIQUE, writable boolean NOT NULL DEFAULT false)"
    )
    enable_row_security(conn, sql.Identifier(CONTROL_SCHEMA, "tenant_roles"))
    conn.execute(
        sql.SQL("GRANT USAGE ON SCHEMA {}, {} TO {}").format(
            sql.Identifier(CONTROL_SCHEMA), sql.Identifier(APP_SCHEMA), group
        )
    )
    conn.execute(sql.SQL("GRANT SELECT ON paybill.tenant_roles TO {}").format(group))
    existing = {
        (t, p)
        for t, p in conn.execute("SELECT tablename, policyname FROM pg_policies WHERE schemaname IN ('paybill', 'app')")
    }
    if ("tenant_roles", "own_mapping") not in existing:
        conn.execute("CREATE POLICY own_mapping ON paybill.tenant_roles FOR SELECT USING (role = current_user)")
    mine = sql.SQL("tenant_id = (SELECT m.tenant FROM paybill.tenant_roles m WHERE m.role = current_user)")
    writable = sql.SQL(
        "tenant_id = (SELECT m.tenant FROM paybill.tenant_roles m WHERE m.role = current_user AND m.writable)"
    )
    policies = {
        "tenant_select": sql.SQL("FOR SELECT TO {} USING ({})").format(group, mine),
        "tenant_insert": sql.SQL("FOR INSERT TO {} WITH CHECK ({})").format(group, writable),
        "tenant_update": sql.SQL("FOR UPDATE TO {0} USING ({1}) WITH CHECK ({1})").format(group, writable),
        "tenant_delete": sql.SQL("FOR DELETE TO {} USING ({})").format(group, writable),
    }
    for table in TABLES:
        table_id = sql.Identifier(APP_SCHEMA, table)
        enable_row_security(conn, table_id)
        # INSERT and UPDATE by column: a table-level UPDATE would also allow LOCK TABLE in any mode (DELETE,
        # which has no column form, still does: idle_in_transaction_session_timeout bounds that).
        columns = sql.SQL(", ").join(
            sql.Identifier(c)
            for (c,) in conn.execute(
                "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped "
                "ORDER BY attnum",
                (f"{APP_SCHEMA}.{table}",),
            )
        )
        conn.execute(sql.SQL("REVOKE INSERT, UPDATE ON {} FROM {}").format(table_id, group))
        conn.execute(
            sql.SQL("GRANT SELECT, DELETE, INSERT ({1}), UPDATE ({1}) ON {0} TO {2}").format(table_id, columns, group)
        )
        for name, body in policies.items():
            if (table, name) not in existing:
                conn.execute(sql.SQL("CREATE POLICY {} ON {} ").format(sql.Identifier(name), table_id) + body)


TENANT_POLICY = "paybill_tenant_owns_every_row"


def _own_rows_under_row_security(conn: psycopg.Connection, placement: Placement) -> None:
    """In its own schema or database the tenant's role sees and writes every row, also once row security is on
    for an agent's policy (without a policy of its own, row security would hide all of them from it)."""
    for table in TABLES:
        table_id = sql.Identifier(placement.schema, table)
        exists = conn.execute(
            "SELECT 1 FROM pg_policy WHERE polname = %s AND polrelid = %s::regclass",
            (TENANT_POLICY, table_id.as_string(conn)),
        ).fetchone()
        if exists is None:
            conn.execute(
                sql.SQL("CREATE POLICY {} ON {} AS PERMISSIVE FOR ALL TO {} USING (true) WITH CHECK (true)").format(
                    sql.Identifier(TENANT_POLICY), table_id, sql.Identifier(placement.role)
                )
            )


def enable_row_security(conn: psycopg.Connection, table: sql.Composable) -> None:
    """ENABLE ROW LEVEL SECURITY unless it is on: the ALTER takes an ACCESS EXCLUSIVE lock, queued behind
    every reader of the table and queuing every later one."""
    enabled = conn.execute(
        sql.SQL("SELECT relrowsecurity FROM pg_class WHERE oid = {}::regclass").format(
            sql.Literal(table.as_string(conn))
        )
    ).fetchone()
    if not (enabled and enabled[0]):
        conn.execute(sql.SQL("ALTER TABLE {} ENABLE ROW LEVEL SECURITY").format(table))
