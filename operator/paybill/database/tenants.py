"""Tenant data in PostgreSQL, per isolation model. Identifiers go through psycopg.sql, never formatting.

- pooled: shared database `paybill_pooled`, schema `app`, rows keyed by tenant_id under row-level
  security. Each tenant has a login role, mapped to its tenant id in `paybill.tenant_roles`, a table the
  role can read (its own row only) but never change; the policies compare tenant_id with that mapping for
  `current_user`, so no setting, SET ROLE or search_path trick reaches another tenant's rows.
- bridge: shared database `paybill_bridge`, own schema `tenant_<name>` and own role.
- silo: own database `tenant_<name>` (schema `app`), own role; nobody else may connect.

Every step is idempotent. The placement of each tenant (and a migration in flight) is recorded in
`paybill.placements` in the operator's own database: that row is the commit point of a migration.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import conninfo, errors, sql

from ..api.plan import Isolation
from ..billing.grace import Access
from ..errors import first_line
from .migrations import LATEST, LEDGER, TABLES, migrate, schema_script
from .server import tool_path

POOLED_DATABASE = "paybill_pooled"
BRIDGE_DATABASE = "paybill_bridge"
APP_SCHEMA = "app"
POOLED_GROUP = "paybill_pooled_tenants"
CONTROL_SCHEMA = "paybill"
WRITE_PRIVILEGES = sql.SQL("INSERT, UPDATE, DELETE")


class DatabaseUnavailable(RuntimeError):
    """The tenant database could not be reached; the caller retries later."""


class MigrationError(RuntimeError):
    """A migration between isolation models did not verify; nothing was cut over."""


def role_name(tenant: str) -> str:
    return "tenant_" + tenant.replace("-", "_").replace(".", "_")


@dataclass(frozen=True)
class Placement:
    """Where a tenant's data lives."""

    tenant: str
    isolation: Isolation
    database: str
    schema: str

    @property
    def role(self) -> str:
        return role_name(self.tenant)

    @property
    def pooled(self) -> bool:
        return self.isolation == Isolation.POOLED

    def to_status(self) -> dict[str, str]:
        return {"isolation": str(self.isolation), "database": self.database, "schema": self.schema,
                "role": self.role}

    @classmethod
    def from_status(cls, tenant: str, status: dict[str, Any]) -> Placement:
        """The placement a Tenant's status.database records (the inverse of `to_status`)."""
        return cls(tenant, Isolation(status["isolation"]), status["database"], status["schema"])


def placement_for(tenant: str, isolation: Isolation | str) -> Placement:
    isolation = Isolation(isolation)
    if isolation == Isolation.POOLED:
        return Placement(tenant, isolation, POOLED_DATABASE, APP_SCHEMA)
    if isolation == Isolation.BRIDGE:
        return Placement(tenant, isolation, BRIDGE_DATABASE, role_name(tenant))
    return Placement(tenant, isolation, role_name(tenant), APP_SCHEMA)


@dataclass(frozen=True)
class TableChecksum:
    rows: int
    md5: str


@dataclass(frozen=True)
class Backup:
    path: Path
    sha256: str
    size: int
    checksums: dict[str, TableChecksum]

    def to_status(self) -> dict[str, Any]:
        return {"location": str(self.path), "sha256": self.sha256, "bytes": self.size,
                "tables": {name: {"rows": c.rows, "md5": c.md5} for name, c in sorted(self.checksums.items())}}


class TenantDatabases:
    """Provision, restrict, back up, migrate and remove tenant data on one PostgreSQL server.

    `admin_dsn` connects as a role that may create roles and databases; its database holds the
    placement records. Connections to the shared databases are kept per thread.
    """

    def __init__(self, admin_dsn: str, backup_dir: Path | None = None) -> None:
        self.admin_dsn = admin_dsn
        self.backup_dir = backup_dir
        self._local = threading.local()
        self._ready: set[tuple[str, str]] = set()  # (database, schema) at the latest migration, set up

    # --- connections -----------------------------------------------------------------------------------

    def dsn(self, database: str | None = None, **params: Any) -> str:
        return conninfo.make_conninfo(self.admin_dsn, **({"dbname": database} if database else {}), **params)

    def _open(self, database: str | None) -> psycopg.Connection:
        try:
            return psycopg.connect(self.dsn(database), autocommit=True, connect_timeout=5)
        except psycopg.OperationalError as exc:
            # Names host and port at most; the DSN (which may hold a password) is never echoed.
            raise DatabaseUnavailable(f"cannot connect to the tenant database server: {first_line(exc)}") from None

    def login_fields(self, role: str, password: str, database: str, schema: str) -> dict[str, str]:
        """What a client needs to log in as `role` (the content of a credentials Secret)."""
        params = conninfo.conninfo_to_dict(self.admin_dsn)
        host, port = str(params.get("host", "127.0.0.1")), str(params.get("port", "5432"))
        return {"password": password, "username": role, "database": database, "schema": schema, "host": host,
                "port": port, "uri": conninfo.make_conninfo(host=host, port=port, dbname=database, user=role,
                                                            password=password)}

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
        if ("", CONTROL_SCHEMA) in self._ready:
            return
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('paybill-control'))")
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(CONTROL_SCHEMA)))
            conn.execute("CREATE TABLE IF NOT EXISTS paybill.placements (tenant text PRIMARY KEY, "
                         "isolation text NOT NULL, migrating_to text, previous text, "
                         "updated_at timestamptz NOT NULL DEFAULT now())")
        self._ready.add(("", CONTROL_SCHEMA))

    def recorded(self, tenant: str) -> tuple[Placement | None, str | None, str | None]:
        """(current placement, isolation a migration is heading to, isolation left to clean up)."""
        with self.session() as conn:
            self._control(conn)
            row = conn.execute("SELECT isolation, migrating_to, previous FROM paybill.placements WHERE tenant = %s",
                               (tenant,)).fetchone()
        if row is None:
            return None, None, None
        return placement_for(tenant, row[0]), row[1], row[2]

    def _record(self, tenant: str, isolation: str, migrating_to: str | None = None,
                previous: str | None = None) -> None:
        with self.session() as conn:
            self._control(conn)
            conn.execute("INSERT INTO paybill.placements (tenant, isolation, migrating_to, previous) "
                         "VALUES (%s, %s, %s, %s) ON CONFLICT (tenant) DO UPDATE SET isolation = excluded.isolation, "
                         "migrating_to = excluded.migrating_to, previous = excluded.previous, updated_at = now()",
                         (tenant, isolation, migrating_to, previous))

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
            current = placement_for(tenant, isolation)
            self.ensure(current, password)
            self._record(tenant, str(current.isolation))
            return current
        self.ensure(current, password)
        if previous:
            self._cleanup(current, previous)
        return current

    def ensure(self, placement: Placement, password: str) -> None:
        """Role, database, schema, migrations and read privileges. Writes and LOGIN are `set_access`'s."""
        self._ensure_role(placement.role, password)
        self._ensure_database(placement.database)
        with self.session(placement.database) as conn:
            self._ensure_schema(conn, placement)
            role, schema = sql.Identifier(placement.role), sql.Identifier(placement.schema)
            if placement.pooled:
                conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(POOLED_GROUP), role))
                conn.execute("INSERT INTO paybill.tenant_roles (role, tenant) VALUES (%s, %s) "
                             "ON CONFLICT (role) DO NOTHING", (placement.role, placement.tenant))
                mapped = conn.execute("SELECT tenant FROM paybill.tenant_roles WHERE role = %s",
                                      (placement.role,)).fetchone()
                if mapped is None or mapped[0] != placement.tenant:
                    raise MigrationError(f"role {placement.role} is mapped to another tenant")
            else:
                conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                    sql.Identifier(placement.database), role))
                conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(schema, role))
                conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}").format(schema, role))
                conn.execute(sql.SQL("REVOKE ALL ON {}.{} FROM {}").format(schema, sql.Identifier(LEDGER), role))
            conn.execute(sql.SQL("ALTER ROLE {} IN DATABASE {} SET search_path = {}").format(
                role, sql.Identifier(placement.database), schema))

    def _ensure_role(self, role: str, password: str) -> None:
        role_id = sql.Identifier(role)
        with self.session() as conn:
            if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is None:
                with contextlib.suppress(errors.DuplicateObject):  # another reconcile created it first
                    conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION "
                                         "NOBYPASSRLS INHERIT").format(role_id))
            conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(role_id, sql.Literal(password)))

    def _ensure_database(self, database: str) -> None:
        with self.session() as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone() is not None:
                return
            with contextlib.suppress(errors.DuplicateDatabase, errors.UniqueViolation):
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
            conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(database)))

    def _ensure_schema(self, conn: psycopg.Connection, placement: Placement) -> None:
        key = (placement.database, placement.schema)
        if key in self._ready:
            return
        conn.execute("REVOKE ALL ON SCHEMA public FROM PUBLIC")
        migrate(conn, placement.schema)
        if placement.pooled:
            self._ensure_pooled(conn)
        self._ready.add(key)

    def _ensure_pooled(self, conn: psycopg.Connection) -> None:
        """The group role, the role-to-tenant mapping and one set of RLS policies per shared table."""
        group = sql.Identifier(POOLED_GROUP)
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('paybill-pooled'))")
            if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (POOLED_GROUP,)).fetchone() is None:
                conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN NOINHERIT").format(group))
            conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(POOLED_DATABASE), group))
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(CONTROL_SCHEMA)))
            conn.execute("CREATE TABLE IF NOT EXISTS paybill.tenant_roles (role name PRIMARY KEY, "
                         "tenant text NOT NULL UNIQUE, writable boolean NOT NULL DEFAULT false)")
            conn.execute("ALTER TABLE paybill.tenant_roles ENABLE ROW LEVEL SECURITY")
            conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {}, {} TO {}").format(
                sql.Identifier(CONTROL_SCHEMA), sql.Identifier(APP_SCHEMA), group))
            conn.execute(sql.SQL("GRANT SELECT ON paybill.tenant_roles TO {}").format(group))
            existing = {(t, p) for t, p in conn.execute(
                "SELECT tablename, policyname FROM pg_policies WHERE schemaname IN ('paybill', 'app')")}
            if ("tenant_roles", "own_mapping") not in existing:
                conn.execute("CREATE POLICY own_mapping ON paybill.tenant_roles FOR SELECT USING (role = current_user)")
            mine = sql.SQL("tenant_id = (SELECT m.tenant FROM paybill.tenant_roles m WHERE m.role = current_user)")
            writable = sql.SQL("tenant_id = (SELECT m.tenant FROM paybill.tenant_roles m "
                               "WHERE m.role = current_user AND m.writable)")
            policies = {
                "tenant_select": sql.SQL("FOR SELECT TO {} USING ({})").format(group, mine),
                "tenant_insert": sql.SQL("FOR INSERT TO {} WITH CHECK ({})").format(group, writable),
                "tenant_update": sql.SQL("FOR UPDATE TO {0} USING ({1}) WITH CHECK ({1})").format(group, writable),
                "tenant_delete": sql.SQL("FOR DELETE TO {} USING ({})").format(group, writable),
            }
            for table in TABLES:
                table_id = sql.Identifier(APP_SCHEMA, table)
                conn.execute(sql.SQL("ALTER TABLE {} ENABLE ROW LEVEL SECURITY").format(table_id))
                conn.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON {} TO {}").format(table_id, group))
                for name, body in policies.items():
                    if (table, name) not in existing:
                        conn.execute(sql.SQL("CREATE POLICY {} ON {} ").format(sql.Identifier(name), table_id) + body)

    # --- access ----------------------------------------------------------------------------------------

    def set_access(self, placement: Placement, access: Access) -> None:
        """full: log in and write; read_only: log in, writes refused; none: no login, sessions ended."""
        role = sql.Identifier(placement.role)
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
                conn.execute("UPDATE paybill.tenant_roles SET writable = %s WHERE role = %s AND writable <> %s",
                             (writable, placement.role, writable))
            elif writable:
                conn.execute(sql.SQL("GRANT {} ON ALL TABLES IN SCHEMA {} TO {}").format(
                    WRITE_PRIVILEGES, schema, role))
                conn.execute(sql.SQL("REVOKE ALL ON {}.{} FROM {}").format(schema, sql.Identifier(LEDGER), role))
            else:
                conn.execute(sql.SQL("REVOKE {} ON ALL TABLES IN SCHEMA {} FROM {}").format(
                    WRITE_PRIVILEGES, schema, role))

    @staticmethod
    def end_sessions(conn: psycopg.Connection, role: str, database: str | None = None) -> int:
        row = conn.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE pid <> "
                           "pg_backend_pid() AND usename = %s AND (%s::text IS NULL OR datname = %s)",
                           (role, database, database)).fetchone()
        return int(row[0]) if row else 0

    def access_of(self, placement: Placement) -> Access:
        with self.session() as conn:
            row = conn.execute("SELECT rolcanlogin FROM pg_roles WHERE rolname = %s", (placement.role,)).fetchone()
        if not row or not row[0]:
            return Access.NONE
        with self.session(placement.database) as conn:
            if placement.pooled:
                found = conn.execute("SELECT writable FROM paybill.tenant_roles WHERE role = %s",
                                     (placement.role,)).fetchone()
                writable = bool(found and found[0])
            else:
                found = conn.execute("SELECT has_table_privilege(%s, %s, 'INSERT')",
                                     (placement.role, f"{sql.Identifier(placement.schema).as_string(conn)}.orders"))
                writable = bool(found.fetchone()[0])
        return Access.FULL if writable else Access.READ_ONLY

    # --- checksums, backup, removal ----------------------------------------------------------------------

    def checksums(self, placement: Placement) -> dict[str, TableChecksum]:
        """Row count and md5 of the sorted row text of every table: equal data gives equal checksums."""
        result = {}
        with self.session(placement.database) as conn:
            for table in TABLES:
                query = sql.SQL("SELECT count(*), md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) "
                                "FROM {} AS t").format(sql.Identifier(placement.schema, table))
                if placement.pooled:
                    query += sql.SQL(" WHERE t.tenant_id = {}").format(sql.Literal(placement.tenant))
                rows, digest = conn.execute(query).fetchone() or (0, "")
                result[table] = TableChecksum(int(rows), str(digest))
        return result

    def backup(self, placement: Placement, name: str) -> Backup:
        """A psql script that restores the tenant's tables into an empty database: schema, then data
        from pg_dump (run as the tenant's role with row security for pooled tenants, so it holds only
        their rows). Written beside, then renamed: a file at the final path is always complete."""
        if self.backup_dir is None:
            raise DatabaseUnavailable("no backup directory is configured")
        self.backup_dir.mkdir(parents=True, exist_ok=True)
        path = self.backup_dir / f"{name}.sql"
        partial = path.with_suffix(".partial")
        dbname, env = _client_connection(self.dsn(placement.database))
        argv = [tool_path("pg_dump"), "--data-only", "--no-owner", "--no-privileges", "--schema", placement.schema,
                "--exclude-table", f"{placement.schema}.{LEDGER}", "--dbname", dbname]
        if placement.pooled:
            argv += ["--role", placement.role, "--enable-row-security"]
        with self.session(placement.database) as conn:
            head = schema_script(placement.schema, conn)
        with partial.open("w") as out:
            out.write(f"-- Paybill backup of tenant {placement.tenant} ({placement.isolation} isolation, "
                      f"schema {placement.schema}, migration {LATEST})\n{head}")
            out.flush()
            result = subprocess.run(argv, stdout=out, stderr=subprocess.PIPE, text=True, env=env,
                                    stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            partial.unlink(missing_ok=True)
            raise DatabaseUnavailable(f"pg_dump failed: {(result.stderr.strip().splitlines() or ['?'])[-1]}")
        digest = hashlib.sha256(partial.read_bytes()).hexdigest()
        checksums = self.checksums(placement)
        partial.replace(path)
        return Backup(path, digest, path.stat().st_size, checksums)

    def remove(self, placement: Placement) -> None:
        """Delete the tenant's data at `placement` and the role's privileges there. Idempotent."""
        role = sql.Identifier(placement.role)
        if placement.isolation == Isolation.SILO:
            with self.session() as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(placement.database)))
            self._ready.discard((placement.database, placement.schema))
            return
        if not self._database_exists(placement.database):
            return
        with self.session(placement.database) as conn:
            if self._role_exists(conn, placement.role):
                # Access goes first: a client still at the old placement gets an error, never an empty answer.
                if placement.pooled:
                    conn.execute(sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(POOLED_GROUP), role))
                conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM {}").format(
                    sql.Identifier(placement.database), role))
                conn.execute(sql.SQL("ALTER ROLE {} IN DATABASE {} RESET ALL").format(
                    role, sql.Identifier(placement.database)))
                self.end_sessions(conn, placement.role, placement.database)
            if placement.pooled:
                with conn.transaction():
                    for table in reversed(TABLES):
                        conn.execute(sql.SQL("DELETE FROM {} WHERE tenant_id = %s").format(
                            sql.Identifier(APP_SCHEMA, table)), (placement.tenant,))
                    conn.execute("DELETE FROM paybill.tenant_roles WHERE role = %s", (placement.role,))
            else:
                conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(placement.schema)))
                self._ready.discard((placement.database, placement.schema))

    def drop_role(self, tenant: str) -> None:
        role = role_name(tenant)
        with self.session() as conn:
            if not self._role_exists(conn, role):
                return
            self.end_sessions(conn, role)
            for database in (POOLED_DATABASE, BRIDGE_DATABASE):
                if self._database_exists(database):
                    with self.session(database) as db:
                        db.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))

    def _database_exists(self, database: str) -> bool:
        with self.session() as conn:
            return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone() is not None

    @staticmethod
    def _role_exists(conn: psycopg.Connection, role: str) -> bool:
        return conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is not None

    # --- migration between isolation models ---------------------------------------------------------------

    def migrate(self, tenant: str, isolation: Isolation | str, password: str) -> Placement:
        """Move the tenant's data to `isolation`: copy, verify row counts and checksums, cut over, clean up.

        The source is read-only from the first copy to the cut-over (reads go on), so a copy can be
        repeated after a crash without losing writes. The placement record is the commit point: before
        it the source is authoritative, after it the target.
        """
        source, _, previous = self.recorded(tenant)
        target = placement_for(tenant, isolation)
        if source is None:
            return self.provision(tenant, isolation, password)
        if source == target:
            if previous:
                self._cleanup(source, previous)
            return source
        self._record(tenant, str(source.isolation), migrating_to=str(target.isolation))
        self.ensure(target, password)
        self._set_writable(source, False)
        self._copy(source, target)
        before, after = self.checksums(source), self.checksums(target)
        if before != after:
            raise MigrationError(f"copy to {target.isolation} did not verify: {_diff(before, after)}; "
                                 f"the tenant stays on {source.isolation}")
        self._record(tenant, str(target.isolation), previous=str(source.isolation))
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
        self.remove(placement_for(current.tenant, previous))
        self._record(current.tenant, str(current.isolation))


def _diff(before: dict[str, TableChecksum], after: dict[str, TableChecksum]) -> str:
    return ", ".join(f"{table}: {before[table].rows} rows before, {after[table].rows} after"
                     for table in before if before[table] != after.get(table)) or "checksums differ"


def _client_connection(dsn: str) -> tuple[str, dict[str, str]]:
    """(conninfo without the password, environment carrying it) for pg_dump and psql: a password on a
    command line is visible to every user of the machine."""
    params = conninfo.conninfo_to_dict(dsn)
    password = params.pop("password", None)
    return conninfo.make_conninfo(**params), {**os.environ, **({"PGPASSWORD": str(password)} if password else {})}


def restore_backup(admin_dsn: str, path: Path, database: str) -> None:
    """Create `database` and load a backup into it with psql (stops at the first error)."""
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    dbname, env = _client_connection(conninfo.make_conninfo(admin_dsn, dbname=database))
    result = subprocess.run([tool_path("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(path),
                             "--dbname", dbname], capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise DatabaseUnavailable(f"restore failed: {(result.stderr.strip().splitlines() or ['?'])[-1]}")
