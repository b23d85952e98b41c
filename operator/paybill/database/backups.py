"""Backups of a tenant's data: a psql script (schema, then rows) in a directory only the operator can enter,
with its sha256 and the tables' checksums; and its restore into a fresh database. pg_dump and psql get the
password through their environment, never their command line."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import psycopg
from psycopg import conninfo, sql

from ..api.tenant import BackupStatus, TableChecksum
from .connections import Connections
from .errors import DatabaseUnavailable, UnsafeBackupDirectory
from .migrations import LATEST, LEDGER, TABLES, schema_script
from .moves import checksums
from .placement import Placement
from .server import tool_path


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


class Backups:
    def __init__(self, connections: Connections, backup_dir: Path | None) -> None:
        self.connections = connections
        self.backup_dir = backup_dir

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
        with self.connections.session(placement.database) as conn:
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
        tables = checksums(self.connections, placement)
        partial.replace(path)
        return Backup(path, digest, path.stat().st_size, tables)

    def _pg_dump(self, placement: Placement, out: IO[str]) -> None:
        dbname, env = _client_connection(self.connections.dsn(placement.database))
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
        with self.connections.session(placement.database) as conn, conn.transaction():
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
