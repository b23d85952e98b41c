"""Tenant data in PostgreSQL, per isolation model. Identifiers go through psycopg.sql, never formatting.

- pooled: shared database `paybill_pooled`, schema `app`, rows keyed by tenant_id under row-level
  security. Each tenant has a login role, mapped to its tenant id in `paybill.tenant_roles`, a table the
  role can read (its own row only) but never change; the policies compare tenant_id with that mapping for
  `current_user`, so no setting, SET ROLE or search_path trick reaches another tenant's rows.
- bridge: shared database `paybill_bridge`, own schema and own role.
- silo: own database (schema `app`), own role; nobody else may connect.

Role, schema and database names are opaque (`t_<digest>`, see `ownership`), recorded with their owner in
`paybill.owned`, and never adopted when found without that record. The shared databases give a tenant its
data and nothing more: no large objects, advisory locks, pg_notify, DO blocks, query_to_xml family, TEMP,
pg_policies or pg_stat_activity. No tenant may connect to the operator's database (nor postgres, template1),
and the operator never serializes on a lock a tenant could take.

Every step is idempotent. The placement of each tenant (and a migration in flight) is recorded in
`paybill.placements` in the operator's own database: that row is the commit point of a migration.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import stat
import subprocess
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import psycopg
from psycopg import conninfo, errors, sql

from ..api.plan import Isolation
from ..api.tenant import Access, BackupStatus, DatabasePlacement, TableChecksum
from ..errors import first_line
from .migrations import LATEST, LEDGER, TABLES, migrate, schema_script
from .ownership import (
    Found,
    NameConflict,
    Record,
    Verdict,
    agent_name,
    create_idempotently,
    decide,
    tenant_identity,
    tenant_name,
)
from .server import IDLE_IN_TRANSACTION_TIMEOUT, tool_path

__all__ = ["NameConflict"]

POOLED_DATABASE = "paybill_pooled"
BRIDGE_DATABASE = "paybill_bridge"
APP_SCHEMA = "app"
POOLED_GROUP = "paybill_pooled_tenants"
CONTROL_SCHEMA = "paybill"
WRITE_PRIVILEGES = sql.SQL("INSERT, UPDATE, DELETE")
LOCK_TIMEOUT_MS = 20000  # a lock a tenant holds makes the operator's step fail loudly (and retry), never hang
TENANT_CONNECTION_LIMIT = 20  # per tenant login role; no Plan quota names connections yet
AGENT_CONNECTION_LIMIT = 5  # per agent login role
DDL_LOCK_TIMEOUT = "2s"  # row security DDL on shared tables gives up (and is retried) rather than queue readers
TENANT_LOCK_TIMEOUT = "5s"  # the default wait of a tenant's or agent's statement for a lock
SHARED_OWNER = "Paybill shared data"  # the owner recorded for the shared databases and the pooled group
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


class DatabaseUnavailable(RuntimeError):
    """The tenant database could not be reached; the caller retries later."""


class UnsafeBackupDirectory(DatabaseUnavailable):
    """The backup directory is not private to the operator; nothing is written until it is."""


class MigrationError(RuntimeError):
    """A migration between isolation models did not verify; nothing was cut over."""


@dataclass(frozen=True)
class Placement:
    """Where a tenant's data lives, and the (opaque) login role that reaches it."""

    tenant: str
    isolation: Isolation
    database: str
    schema: str
    role: str

    @property
    def pooled(self) -> bool:
        return self.isolation == Isolation.POOLED

    def to_model(self) -> DatabasePlacement:
        """The Tenant's status.database: where the data lives, without the tenant's name."""
        return DatabasePlacement(
            isolation=str(self.isolation), database=self.database, schema=self.schema, role=self.role
        )

    def to_status(self) -> dict[str, str]:
        """`to_model` as written into a Tenant's status."""
        return self.to_model().model_dump(by_alias=True)

    @classmethod
    def from_status(cls, tenant: str, status: DatabasePlacement | Mapping[str, Any]) -> Placement:
        """The placement a Tenant's status.database records (the inverse of `to_status`)."""
        model = status if isinstance(status, DatabasePlacement) else DatabasePlacement.model_validate(status)
        return cls(tenant, Isolation(model.isolation), model.database, model.schema_, model.role)


def placement_at(tenant: str, isolation: Isolation | str, role: str) -> Placement:
    """Where `tenant`'s data lives under `isolation`, given its opaque role name (also its schema or database)."""
    isolation = Isolation(isolation)
    if isolation == Isolation.POOLED:
        return Placement(tenant, isolation, POOLED_DATABASE, APP_SCHEMA, role)
    if isolation == Isolation.BRIDGE:
        return Placement(tenant, isolation, BRIDGE_DATABASE, role, role)
    return Placement(tenant, isolation, role, APP_SCHEMA, role)


@dataclass(frozen=True)
class Backup:
    path: Path
    sha256: str
    size: int
    checksums: dict[str, TableChecksum]

    def to_model(self) -> BackupStatus:
        """The Tenant's status.backup (without takenAt, which the caller stamps)."""
        return BackupStatus(
            location=str(self.path), sha256=self.sha256, bytes=self.size, tables=dict(sorted(self.checksums.items()))
        )

    def to_status(self) -> dict[str, Any]:
        """`to_model` as written into a Tenant's status."""
        return self.to_model().model_dump(by_alias=True, exclude_none=True)


class TenantDatabases:
    """Provision, restrict, back up, migrate and remove tenant data on one PostgreSQL server.

    `admin_dsn` connects as a role that may create roles and databases; its database holds the
    placement records. Connections to the shared databases are kept per thread.
    """

    def __init__(
        self,
        admin_dsn: str,
        backup_dir: Path | None = None,
        idle_in_transaction_timeout: str = IDLE_IN_TRANSACTION_TIMEOUT,
    ) -> None:
        self.admin_dsn = admin_dsn
        self.idle_in_transaction_timeout = idle_in_transaction_timeout
        self.backup_dir = backup_dir
        self._local = threading.local()
        self._ready: set[tuple[str, str]] = set()  # (database, schema) at the latest migration, set up
        # One thread at a time sets up shared objects (concurrent GRANTs on one object fail with "tuple
        # concurrently updated"): a lock in this process, which no tenant can reach.
        self._setup = threading.RLock()
        self._key: bytes | None = None
        self._policy_locks: dict[str, threading.Lock] = {}

    # --- connections -----------------------------------------------------------------------------------

    def dsn(self, database: str | None = None, **params: Any) -> str:
        return conninfo.make_conninfo(self.admin_dsn, **({"dbname": database} if database else {}), **params)

    def _open(self, database: str | None) -> psycopg.Connection:
        try:
            return psycopg.connect(
                self.dsn(database), autocommit=True, connect_timeout=5, options=f"-c lock_timeout={LOCK_TIMEOUT_MS}"
            )
        except psycopg.OperationalError as exc:
            # Names host and port at most; the DSN (which may hold a password) is never echoed.
            raise DatabaseUnavailable(f"cannot connect to the tenant database server: {first_line(exc)}") from None

    def login_fields(self, role: str, password: str, database: str, schema: str) -> dict[str, str]:
        """What a client needs to log in as `role` (the content of a credentials Secret)."""
        params = conninfo.conninfo_to_dict(self.admin_dsn)
        host, port = str(params.get("host", "127.0.0.1")), str(params.get("port", "5432"))
        return {
            "password": password,
            "username": role,
            "database": database,
            "schema": schema,
            "host": host,
            "port": port,
            "uri": conninfo.make_conninfo(host=host, port=port, dbname=database, user=role, password=password),
        }

    def connect(self, database: str | None = None) -> psycopg.Connection:
        """A cached autocommit connection for this thread (the operator's database when None)."""
        cache: dict[str | None, psycopg.Connection] = self._local.__dict__.setdefault("connections", {})
        conn = cache.get(database)
        if conn is None or conn.closed or conn.broken:
            conn = cache[database] = self._open(database)
        return conn

    @contextlib.contextmanager
    def session(self, database: str | None = None) -> Iterator[psycopg.Connection]:
        """A connection for one step; a dead server becomes DatabaseUnavailable, and silo ones are closed."""
        shared = database in (None, POOLED_DATABASE, BRIDGE_DATABASE)
        conn = self.connect(database) if shared else self._open(database)
        try:
            yield conn
        except psycopg.OperationalError as exc:
            conn.close()
            raise DatabaseUnavailable(f"tenant database server failed: {first_line(exc)}") from None
        finally:
            if not shared:
                conn.close()

    def close(self) -> None:
        for conn in self._local.__dict__.get("connections", {}).values():
            conn.close()
        self._local.__dict__["connections"] = {}

    # --- placement records -----------------------------------------------------------------------------

    def _control(self, conn: psycopg.Connection) -> None:
        """The operator's own tables, and its database closed to everyone else (tenants included)."""
        if ("", CONTROL_SCHEMA) in self._ready:
            return
        with self._setup:
            if ("", CONTROL_SCHEMA) in self._ready:
                return
            create_idempotently(conn, _create_control_tables)
            for database in {conn.info.dbname, "postgres", "template1"}:
                if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone():
                    conn.execute(
                        sql.SQL("REVOKE CONNECT, TEMPORARY ON DATABASE {} FROM PUBLIC").format(sql.Identifier(database))
                    )
            self._ready.add(("", CONTROL_SCHEMA))

    # --- names and ownership ---------------------------------------------------------------------------

    def naming_key(self) -> bytes:
        """The secret that keys every opaque name; made once, kept in the operator's database."""
        if self._key is None:
            with self.session() as conn:
                self._control(conn)
                conn.execute(
                    "INSERT INTO paybill.naming_key (id, key) VALUES (true, %s) ON CONFLICT DO NOTHING",
                    (secrets.token_bytes(32),),
                )
                row = conn.execute("SELECT key FROM paybill.naming_key").fetchone()
            assert row is not None
            self._key = bytes(row[0])
        return self._key

    def tenant_role(self, tenant: str) -> str:
        return tenant_name(self.naming_key(), tenant)

    def agent_role(self, tenant: str, namespace: str, policy: str) -> str:
        return agent_name(self.naming_key(), tenant, namespace, policy)

    def placement_for(self, tenant: str, isolation: Isolation | str) -> Placement:
        return placement_at(tenant, isolation, self.tenant_role(tenant))

    def _record(self, conn: psycopg.Connection, kind: str, name: str, database: str = "") -> Record | None:
        row = conn.execute(
            "SELECT owner, oid FROM paybill.owned WHERE kind = %s AND database = %s AND name = %s",
            (kind, database, name),
        ).fetchone()
        return Record(row[0], None if row[1] is None else int(row[1])) if row else None

    def _remember(
        self, conn: psycopg.Connection, kind: str, name: str, owner: str, oid: int | None, database: str = ""
    ) -> None:
        conn.execute(
            "INSERT INTO paybill.owned (kind, database, name, owner, oid) VALUES (%s, %s, %s, %s, %s) "
            "ON CONFLICT (kind, database, name) DO UPDATE SET oid = excluded.oid",
            (kind, database, name, owner, oid),
        )

    def _forget_object(self, kind: str, name: str, database: str = "") -> None:
        with self.session() as conn:
            self._control(conn)
            conn.execute(
                "DELETE FROM paybill.owned WHERE kind = %s AND database = %s AND name = %s", (kind, database, name)
            )

    # --- agent policies ----------------------------------------------------------------------------------

    def policy_lock(self, database: str) -> threading.Lock:
        """Held while an agent policy is installed in `database`: concurrent GRANTs and policy DDL on one
        table fail with "tuple concurrently updated". A lock in this process, which no tenant can reach."""
        with self._setup:
            return self._policy_locks.setdefault(database, threading.Lock())

    def installed_row_policies(self, database: str, role: str) -> dict[str, str]:
        """The digests of `role`'s row security policy statements last installed in `database`."""
        with self.session() as conn:
            self._control(conn)
            return {
                str(statement): str(digest)
                for statement, digest in conn.execute(
                    "SELECT statement, digest FROM paybill.row_policies WHERE database = %s AND role = %s",
                    (database, role),
                )
            }

    def remember_row_policies(self, database: str, role: str, digests: dict[str, str]) -> None:
        with self.session() as conn, conn.transaction():
            self._control(conn)
            conn.execute("DELETE FROM paybill.row_policies WHERE database = %s AND role = %s", (database, role))
            with conn.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO paybill.row_policies (database, role, statement, digest) VALUES (%s, %s, %s, %s)",
                    [(database, role, s, d) for s, d in digests.items()],
                )

    def grant_connect(self, database: str, role: str) -> None:
        with self._setup, self.session(database) as conn:  # one database row: concurrent GRANTs on it would fail
            conn.execute(
                sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(database), sql.Identifier(role))
            )

    def claim_role(self, role: str, owner: str, attributes: str) -> None:
        """Create `role` for `owner` (recorded in the same transaction), or check it is the one we created.
        Raises NameConflict for a role Paybill did not create."""
        with self.session() as conn:
            self._control(conn)
            with conn.transaction():
                found = conn.execute("SELECT oid FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
                verdict = decide(
                    "role", role, owner, self._record(conn, "role", role), Found(int(found[0])) if found else None
                )
                if verdict == Verdict.CREATE:
                    conn.execute(sql.SQL("CREATE ROLE {} " + attributes).format(sql.Identifier(role)))
                    oid = conn.execute("SELECT oid FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
                    self._remember(conn, "role", role, owner, int(oid[0]) if oid else None)

    def owns_role(self, role: str, owner: str) -> bool:
        """True when `role` exists and is the one Paybill created for `owner`."""
        with self.session() as conn:
            self._control(conn)
            found = conn.execute("SELECT oid FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
            if found is None:
                return False
            try:
                return (
                    decide("role", role, owner, self._record(conn, "role", role), Found(int(found[0]))) == Verdict.USE
                )
            except NameConflict:
                return False

    def _claim_database(self, database: str, owner: str) -> None:
        with self.session() as conn:
            self._control(conn)
            found = conn.execute(
                "SELECT oid, datdba = (SELECT oid FROM pg_roles WHERE rolname = current_user) "
                "FROM pg_database WHERE datname = %s",
                (database,),
            ).fetchone()
            verdict = decide(
                "database",
                database,
                owner,
                self._record(conn, "database", database),
                Found(int(found[0]), bool(found[1])) if found else None,
            )
            if verdict == Verdict.CREATE:
                self._remember(conn, "database", database, owner, None)  # claimed first: CREATE DATABASE
                try:  # is no transaction
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
                except (errors.DuplicateDatabase, errors.UniqueViolation):
                    return self._claim_database(database, owner)  # another reconcile of ours won the race
                conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(database)))
            if verdict != Verdict.USE:
                oid = conn.execute("SELECT oid FROM pg_database WHERE datname = %s", (database,)).fetchone()
                self._remember(conn, "database", database, owner, int(oid[0]) if oid else None)

    def _owns_schema(self, conn: psycopg.Connection, placement: Placement) -> bool:
        """True when the placement's schema exists and is the one Paybill created for its tenant."""
        found = conn.execute("SELECT oid FROM pg_namespace WHERE nspname = %s", (placement.schema,)).fetchone()
        if found is None:
            return False
        with self.session() as control:
            self._control(control)
            record = self._record(control, "schema", placement.schema, placement.database)
        try:
            return (
                decide("schema", placement.schema, tenant_identity(placement.tenant), record, Found(int(found[0])))
                == Verdict.USE
            )
        except NameConflict:
            return False

    def _claim_schema(self, conn: psycopg.Connection, database: str, schema: str, owner: str) -> None:
        """Like `_claim_database`, for a schema in `database` (conn is connected to it)."""
        found = conn.execute(
            "SELECT oid, nspowner = (SELECT oid FROM pg_roles WHERE rolname = current_user) "
            "FROM pg_namespace WHERE nspname = %s",
            (schema,),
        ).fetchone()
        with self.session() as control:
            self._control(control)
            verdict = decide(
                "schema",
                schema,
                owner,
                self._record(control, "schema", schema, database),
                Found(int(found[0]), bool(found[1])) if found else None,
            )
            if verdict == Verdict.CREATE:
                self._remember(control, "schema", schema, owner, None, database)
                conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
            if verdict != Verdict.USE:
                oid = conn.execute("SELECT oid FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone()
                self._remember(control, "schema", schema, owner, int(oid[0]) if oid else None, database)

    def recorded(self, tenant: str) -> tuple[Placement | None, str | None, str | None]:
        """(current placement, isolation a migration is heading to, isolation left to clean up)."""
        with self.session() as conn:
            self._control(conn)
            row = conn.execute(
                "SELECT isolation, migrating_to, previous FROM paybill.placements WHERE tenant = %s", (tenant,)
            ).fetchone()
        if row is None:
            return None, None, None
        return self.placement_for(tenant, row[0]), row[1], row[2]

    def _place(self, tenant: str, isolation: str, migrating_to: str | None = None, previous: str | None = None) -> None:
        with self.session() as conn:
            self._control(conn)
            conn.execute(
                "INSERT INTO paybill.placements (tenant, isolation, migrating_to, previous) "
                "VALUES (%s, %s, %s, %s) ON CONFLICT (tenant) DO UPDATE SET isolation = excluded.isolation, "
                "migrating_to = excluded.migrating_to, previous = excluded.previous, updated_at = now()",
                (tenant, isolation, migrating_to, previous),
            )

    def forget(self, tenant: str) -> None:
        with self.session() as conn:
            self._control(conn)
            conn.execute("DELETE FROM paybill.placements WHERE tenant = %s", (tenant,))

    # --- provisioning ----------------------------------------------------------------------------------

    def provision(self, tenant: str, isolation: Isolation | str, password: str) -> Placement:
        """Make sure the tenant's role and data location exist; returns where its data lives now.

        A tenant already placed elsewhere stays there (moving it is `migrate`); a placement left over by
        an interrupted migration is cleaned up first.
        """
        current, _, previous = self.recorded(tenant)
        if current is None:
            current = self.placement_for(tenant, isolation)
            self.ensure(current, password)
            self._place(tenant, str(current.isolation))
            return current
        self.ensure(current, password)
        if previous:
            self._cleanup(current, previous)
        return current

    def ensure(self, placement: Placement, password: str) -> None:
        """Role, database, schema, migrations and read privileges. Writes and LOGIN are `set_access`'s."""
        self._ensure_role(placement, password)
        self._ensure_database(placement)
        with self.session(placement.database) as conn:
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
                with self._setup:  # one database row: concurrent GRANTs on it would fail
                    conn.execute(
                        sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(placement.database), role)
                    )
                conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(schema, role))
                conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}").format(schema, role))
                conn.execute(sql.SQL("REVOKE ALL ON {}.{} FROM {}").format(schema, sql.Identifier(LEDGER), role))
            conn.execute(
                sql.SQL("ALTER ROLE {} IN DATABASE {} SET search_path = {}").format(
                    role, sql.Identifier(placement.database), schema
                )
            )

    def _ensure_role(self, placement: Placement, password: str) -> None:
        self.claim_role(
            placement.role,
            tenant_identity(placement.tenant),
            "NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT",
        )
        with self.session() as conn:
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
        with self.session() as conn:
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
        if (placement.database, "") in self._ready:
            return
        shared = placement.database in (POOLED_DATABASE, BRIDGE_DATABASE)
        if not shared:
            self._claim_database(placement.database, tenant_identity(placement.tenant))
            return
        with self._setup:
            if (placement.database, "") in self._ready:
                return
            self._claim_database(placement.database, SHARED_OWNER)
            with self.session(placement.database) as conn:
                create_idempotently(conn, _harden_shared_database)
            self._ready.add((placement.database, ""))

    def _ensure_schema(self, conn: psycopg.Connection, placement: Placement) -> None:
        key = (placement.database, placement.schema)
        if key in self._ready:
            return
        if placement.isolation == Isolation.BRIDGE:
            self._claim_schema(conn, placement.database, placement.schema, tenant_identity(placement.tenant))
            migrate(conn, placement.schema)
        elif placement.pooled:
            with self._setup:
                if key in self._ready:
                    return
                migrate(conn, placement.schema)
                self.claim_role(POOLED_GROUP, SHARED_OWNER, "NOLOGIN NOINHERIT")
                create_idempotently(conn, _ensure_pooled)
        else:
            conn.execute("REVOKE ALL ON SCHEMA public FROM PUBLIC")
            migrate(conn, placement.schema)
        self._ready.add(key)

    # --- access ----------------------------------------------------------------------------------------

    def set_access(self, placement: Placement, access: Access) -> None:
        """full: log in and write; read_only: log in, writes refused; none: no login, sessions ended."""
        role = sql.Identifier(placement.role)
        if not self.owns_role(placement.role, tenant_identity(placement.tenant)):
            raise NameConflict(f"role {placement.role} is not the one Paybill created for this tenant")
        with self.session() as conn:
            conn.execute(sql.SQL("ALTER ROLE {} " + ("NOLOGIN" if access == Access.NONE else "LOGIN")).format(role))
            if access == Access.NONE:
                self.end_sessions(conn, placement.role)
        if access != Access.NONE:
            self._set_writable(placement, access == Access.FULL)

    def _set_writable(self, placement: Placement, writable: bool) -> None:
        role, schema = sql.Identifier(placement.role), sql.Identifier(placement.schema)
        with self.session(placement.database) as conn:
            if placement.pooled:
                conn.execute(
                    "UPDATE paybill.tenant_roles SET writable = %s WHERE role = %s AND writable <> %s",
                    (writable, placement.role, writable),
                )
            elif writable:
                conn.execute(
                    sql.SQL("GRANT {} ON ALL TABLES IN SCHEMA {} TO {}").format(WRITE_PRIVILEGES, schema, role)
                )
                conn.execute(sql.SQL("REVOKE ALL ON {}.{} FROM {}").format(schema, sql.Identifier(LEDGER), role))
            else:
                conn.execute(
                    sql.SQL("REVOKE {} ON ALL TABLES IN SCHEMA {} FROM {}").format(WRITE_PRIVILEGES, schema, role)
                )

    @staticmethod
    def end_sessions(conn: psycopg.Connection, role: str, database: str | None = None) -> int:
        row = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE pid <> "
            "pg_backend_pid() AND usename = %s AND (%s::text IS NULL OR datname = %s)",
            (role, database, database),
        ).fetchone()
        return int(row[0]) if row else 0

    def end_idle_transactions(self, max_idle_seconds: float) -> int:
        """End the sessions of Paybill's tenant and agent roles that sit idle in a transaction in a shared
        database for longer than `max_idle_seconds`: a tenant may SET its own idle timeout off, and hold a
        table lock (its table-level DELETE allows LOCK TABLE) that stalls every other tenant. Returns how
        many were ended. Run it periodically."""
        with self.session() as conn:
            self._control(conn)
            row = conn.execute(
                "SELECT count(pg_terminate_backend(a.pid)) FROM pg_stat_activity a WHERE a.datname = ANY(%s) "
                "AND a.state IN ('idle in transaction', 'idle in transaction (aborted)') "
                "AND a.state_change < now() - make_interval(secs => %s) AND EXISTS (SELECT 1 FROM paybill.owned o "
                "WHERE o.kind = 'role' AND o.database = '' AND o.name = a.usename AND o.owner <> %s)",
                ([POOLED_DATABASE, BRIDGE_DATABASE], max_idle_seconds, SHARED_OWNER),
            ).fetchone()
        return int(row[0]) if row else 0

    def access_of(self, placement: Placement) -> Access:
        with self.session() as conn:
            row = conn.execute("SELECT rolcanlogin FROM pg_roles WHERE rolname = %s", (placement.role,)).fetchone()
        if not row or not row[0]:
            return Access.NONE
        with self.session(placement.database) as conn:
            if placement.pooled:
                found = conn.execute(
                    "SELECT writable FROM paybill.tenant_roles WHERE role = %s", (placement.role,)
                ).fetchone()
                writable = bool(found and found[0])
            else:
                found = conn.execute(
                    "SELECT has_table_privilege(%s, %s, 'INSERT')",
                    (placement.role, f"{sql.Identifier(placement.schema).as_string(conn)}.orders"),
                ).fetchone()
                writable = bool(found and found[0])
        return Access.FULL if writable else Access.READ_ONLY

    # --- checksums, backup, removal ----------------------------------------------------------------------

    def checksums(self, placement: Placement) -> dict[str, TableChecksum]:
        """Row count and md5 of the sorted row text of every table: equal data gives equal checksums."""
        result = {}
        with self.session(placement.database) as conn:
            for table in TABLES:
                query = sql.SQL(
                    "SELECT count(*), md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) FROM {} AS t"
                ).format(sql.Identifier(placement.schema, table))
                if placement.pooled:
                    query += sql.SQL(" WHERE t.tenant_id = {}").format(sql.Literal(placement.tenant))
                rows, digest = conn.execute(query).fetchone() or (0, "")
                result[table] = TableChecksum(rows=int(rows), md5=str(digest))
        return result

    def backup(self, placement: Placement, name: str) -> Backup:
        """A psql script that restores the tenant's tables into an empty database: schema, then data (from
        pg_dump; for pooled tenants COPY run as the tenant's own role under row security, so it holds only
        their rows, and needs no catalog a tenant may not read). Written 0600 beside, then renamed into a
        0700 directory: a file at the final path is always complete, and only the operator can read it."""
        if self.backup_dir is None:
            raise DatabaseUnavailable("no backup directory is configured")
        _private_directory(self.backup_dir)
        path = self.backup_dir / f"{name}.sql"
        partial = path.with_suffix(".partial")
        with self.session(placement.database) as conn:
            head = schema_script(placement.schema, conn)
        partial.unlink(missing_ok=True)
        with os.fdopen(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
            out.write(
                f"-- Paybill backup of tenant {placement.tenant} ({placement.isolation} isolation, "
                f"schema {placement.schema}, migration {LATEST})\n{head}"
            )
            out.flush()
            try:
                if placement.pooled:
                    self._copy_rows_as_tenant(placement, out)
                else:
                    self._pg_dump(placement, out)
            except BaseException:
                partial.unlink(missing_ok=True)
                raise
        digest = hashlib.sha256(partial.read_bytes()).hexdigest()
        checksums = self.checksums(placement)
        partial.replace(path)
        return Backup(path, digest, path.stat().st_size, checksums)

    def _pg_dump(self, placement: Placement, out: IO[str]) -> None:
        dbname, env = _client_connection(self.dsn(placement.database))
        argv = [
            tool_path("pg_dump"),
            "--data-only",
            "--no-owner",
            "--no-privileges",
            "--schema",
            placement.schema,
            "--exclude-table",
            f"{placement.schema}.{LEDGER}",
            "--dbname",
            dbname,
        ]
        result = subprocess.run(argv, stdout=out, stderr=subprocess.PIPE, text=True, env=env, stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            raise DatabaseUnavailable(f"pg_dump failed: {(result.stderr.strip().splitlines() or ['?'])[-1]}")

    def _copy_rows_as_tenant(self, placement: Placement, out: IO[str]) -> None:
        """Every table's rows as psql COPY blocks, read in one snapshot as the tenant's role."""
        with self.session(placement.database) as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(placement.role)))
            for table in TABLES:
                table_id = sql.Identifier(placement.schema, table)
                columns = sql.SQL(", ").join(
                    sql.Identifier(c.name)
                    for c in conn.execute(sql.SQL("SELECT * FROM {} LIMIT 0").format(table_id)).description or ()
                )
                out.write(sql.SQL("COPY {} ({}) FROM stdin;\n").format(sql.Identifier(table), columns).as_string(conn))
                select = sql.SQL("COPY (SELECT {} FROM {} WHERE tenant_id = {}) TO STDOUT").format(
                    columns, table_id, sql.Literal(placement.tenant)
                )
                with conn.cursor().copy(select) as copy:
                    for chunk in copy:
                        out.write(bytes(chunk).decode())
                out.write("\\.\n")

    def remove(self, placement: Placement) -> None:
        """Delete the tenant's data at `placement` and the role's privileges there. Idempotent."""
        role = sql.Identifier(placement.role)
        if placement.isolation == Isolation.SILO:
            if self._owns_database(placement):
                with self.session() as conn:
                    conn.execute(
                        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(placement.database))
                    )
                self._forget_object("database", placement.database)
            self._ready.difference_update({(placement.database, placement.schema), (placement.database, "")})
            return
        if not self._database_exists(placement.database):
            return
        with self.session(placement.database) as conn:
            if self.owns_role(placement.role, tenant_identity(placement.tenant)):  # never a role of someone else
                # Access goes first: a client still at the old placement gets an error, never an empty answer.
                if placement.pooled:
                    conn.execute(sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(POOLED_GROUP), role))
                with self._setup:  # one database row: concurrent GRANTs on it would fail
                    conn.execute(
                        sql.SQL("REVOKE ALL ON DATABASE {} FROM {}").format(sql.Identifier(placement.database), role)
                    )
                conn.execute(
                    sql.SQL("ALTER ROLE {} IN DATABASE {} RESET ALL").format(role, sql.Identifier(placement.database))
                )
                self.end_sessions(conn, placement.role, placement.database)
            if placement.pooled:
                with conn.transaction():
                    for table in reversed(TABLES):
                        conn.execute(
                            sql.SQL("DELETE FROM {} WHERE tenant_id = %s").format(sql.Identifier(APP_SCHEMA, table)),
                            (placement.tenant,),
                        )
                    conn.execute("DELETE FROM paybill.tenant_roles WHERE role = %s", (placement.role,))
            else:
                if self._owns_schema(conn, placement):  # a schema of someone else is left alone
                    conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(placement.schema)))
                self._forget_object("schema", placement.schema, placement.database)
                self._ready.discard((placement.database, placement.schema))

    def drop_role(self, tenant: str) -> None:
        """Drop the tenant's role, if it is the one Paybill created for it (a role of someone else stays)."""
        role = self.tenant_role(tenant)
        if not self.owns_role(role, tenant_identity(tenant)):
            return
        with self.session() as conn:
            self.end_sessions(conn, role)
            for database in (POOLED_DATABASE, BRIDGE_DATABASE):
                if self._database_exists(database):
                    with self.session(database) as db:
                        db.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        self._forget_object("role", role)

    def drop_agent_role(self, role: str, owner: str, databases: tuple[str, ...]) -> bool:
        """Drop an agent's role and everything it holds in `databases`, if Paybill created it for `owner`."""
        if not self.owns_role(role, owner):
            return False
        with self.session() as conn:
            conn.execute(sql.SQL("ALTER ROLE {} NOLOGIN").format(sql.Identifier(role)))
            self.end_sessions(conn, role)
        for database in databases:
            if self._database_exists(database):
                with self.session(database) as db, db.transaction():  # its policies: ACCESS EXCLUSIVE locks
                    db.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(DDL_LOCK_TIMEOUT)))
                    db.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        with self.session() as conn:
            conn.execute("DELETE FROM paybill.row_policies WHERE role = %s", (role,))
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
        self._forget_object("role", role)
        return True

    def _owns_database(self, placement: Placement) -> bool:
        with self.session() as conn:
            self._control(conn)
            found = conn.execute("SELECT oid FROM pg_database WHERE datname = %s", (placement.database,)).fetchone()
            if found is None:
                return False
            return (
                decide(
                    "database",
                    placement.database,
                    tenant_identity(placement.tenant),
                    self._record(conn, "database", placement.database),
                    Found(int(found[0])),
                )
                == Verdict.USE
            )

    def _database_exists(self, database: str) -> bool:
        with self.session() as conn:
            return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone() is not None

    # --- migration between isolation models ---------------------------------------------------------------

    def migrate(self, tenant: str, isolation: Isolation | str, password: str) -> Placement:
        """Move the tenant's data to `isolation`: copy, verify row counts and checksums, cut over, clean up.

        The source is read-only from the first copy to the cut-over (reads go on), so a copy can be
        repeated after a crash without losing writes. The placement record is the commit point: before
        it the source is authoritative, after it the target.
        """
        source, _, previous = self.recorded(tenant)
        target = self.placement_for(tenant, isolation)
        if source is None:
            return self.provision(tenant, isolation, password)
        if source == target:
            if previous:
                self._cleanup(source, previous)
            return source
        self._place(tenant, str(source.isolation), migrating_to=str(target.isolation))
        self.ensure(target, password)
        self._set_writable(source, False)
        self._copy(source, target)
        before, after = self.checksums(source), self.checksums(target)
        if before != after:
            raise MigrationError(
                f"copy to {target.isolation} did not verify: {_diff(before, after)}; "
                f"the tenant stays on {source.isolation}"
            )
        self._place(tenant, str(target.isolation), previous=str(source.isolation))
        self._cleanup(target, str(source.isolation))
        return target

    def _copy(self, source: Placement, target: Placement) -> None:
        with self.session(source.database) as src, self.session(target.database) as dst, dst.transaction():
            for table in reversed(TABLES):
                clear = sql.SQL("DELETE FROM {}").format(sql.Identifier(target.schema, table))
                if target.pooled:
                    clear += sql.SQL(" WHERE tenant_id = {}").format(sql.Literal(target.tenant))
                dst.execute(clear)
            for table in TABLES:
                select = sql.SQL("SELECT * FROM {}").format(sql.Identifier(source.schema, table))
                if source.pooled:
                    select += sql.SQL(" WHERE tenant_id = {}").format(sql.Literal(source.tenant))
                copy_out = sql.SQL("COPY ({}) TO STDOUT (FORMAT binary)").format(select)
                copy_in = sql.SQL("COPY {} FROM STDIN (FORMAT binary)").format(sql.Identifier(target.schema, table))
                with src.cursor().copy(copy_out) as reader, dst.cursor().copy(copy_in) as writer:
                    for chunk in reader:
                        writer.write(chunk)

    def _cleanup(self, current: Placement, previous: str) -> None:
        self.remove(self.placement_for(current.tenant, previous))
        self._place(current.tenant, str(current.isolation))


def _diff(before: dict[str, TableChecksum], after: dict[str, TableChecksum]) -> str:
    return (
        ", ".join(
            f"{table}: {before[table].rows} rows before, {after[table].rows} after"
            for table in before
            if before[table] != after.get(table)
        )
        or "checksums differ"
    )


def _private_directory(directory: Path) -> None:
    """Make `directory` (0700 from the start), or check an existing one is ours and closed to others."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)  # the umask can only take bits away
    info = directory.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise UnsafeBackupDirectory(f"backup directory {directory} is not a directory owned by the operator's user")
    if info.st_mode & 0o077:
        raise UnsafeBackupDirectory(
            f"backup directory {directory} is readable by others (mode "
            f"{oct(info.st_mode & 0o777)}); use a directory only the operator can enter"
        )


def _client_connection(dsn: str) -> tuple[str, dict[str, str]]:
    """(conninfo without the password, environment carrying it) for pg_dump and psql: a password on a
    command line is visible to every user of the machine."""
    params = conninfo.conninfo_to_dict(dsn)
    password = params.pop("password", None)
    return conninfo.make_conninfo("", **params), {**os.environ, **({"PGPASSWORD": str(password)} if password else {})}


def restore_backup(admin_dsn: str, path: Path, database: str) -> None:
    """Create `database` and load a backup into it with psql (stops at the first error)."""
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    dbname, env = _client_connection(conninfo.make_conninfo(admin_dsn, dbname=database))
    result = subprocess.run(
        [tool_path("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(path), "--dbname", dbname],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    if result.returncode != 0:
        raise DatabaseUnavailable(f"restore failed: {(result.stderr.strip().splitlines() or ['?'])[-1]}")


def _create_control_tables(conn: psycopg.Connection) -> None:
    """The operator's bookkeeping, in its own database: placements, owned names and the naming key."""
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(CONTROL_SCHEMA)))
    conn.execute(
        "CREATE TABLE IF NOT EXISTS paybill.placements (tenant text PRIMARY KEY, "
        "isolation text NOT NULL, migrating_to text, previous text, "
        "updated_at timestamptz NOT NULL DEFAULT now())"
    )
    conn.execute(
        "CREATE TABLE IF NOT EXISTS paybill.owned (kind text NOT NULL, database text NOT NULL, "
        "name text NOT NULL, owner text NOT NULL, oid oid, created_at timestamptz NOT NULL DEFAULT now(), "
        "PRIMARY KEY (kind, database, name))"
    )
    conn.execute(
        "CREATE TABLE IF NOT EXISTS paybill.row_policies (database text NOT NULL, role name NOT NULL, "
        "statement text NOT NULL, digest text NOT NULL, PRIMARY KEY (database, role, statement))"
    )
    conn.execute(
        "CREATE TABLE IF NOT EXISTS paybill.naming_key (id boolean PRIMARY KEY CHECK (id), key bytea NOT NULL)"
    )
    conn.execute(sql.SQL("REVOKE ALL ON SCHEMA {} FROM PUBLIC").format(sql.Identifier(CONTROL_SCHEMA)))


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
