"""Backups of a tenant's data: a psql script (schema, then rows) in a directory only the operator can enter,
with its sha256 and the tables' checksums; and its restore into a fresh database. pg_dump and psql get the
password through their environment, never their command line.

pg_dump and psql never outlive the operator: each runs in its own process group, killed on any exception
(a timeout, an interrupt), and with a parent-death signal, so a SIGKILLed operator takes them along. One run at
a time writes a backup: each holds an exclusive lock (flock on `<name>.lock`) while it writes `<name>.partial`
and renames it; a second run of the same name waits for it, then writes its own (or gives up after
`lock_wait` seconds with BackupInProgress, which callers retry like DatabaseUnavailable)."""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import os
import signal
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
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

LOCK_WAIT_SECONDS = 120.0  # how long a second backup of one name waits for the first before it gives up
PR_SET_PDEATHSIG = 1  # linux/prctl.h
# libc's prctl, looked up here: a child between fork and exec should only call it, not load anything.
_PRCTL: Callable[..., int] | None = getattr(ctypes.CDLL(None, use_errno=True), "prctl", None)


class BackupInProgress(DatabaseUnavailable):
    """Another run is writing this backup; the caller retries later."""


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
    def __init__(self, connections: Connections, backup_dir: Path | None, lock_wait: float = LOCK_WAIT_SECONDS) -> None:
        self.connections = connections
        self.backup_dir = backup_dir
        self.lock_wait = lock_wait

    def backup(self, placement: Placement, name: str) -> Backup:
        """A psql script that restores the tenant's tables into an empty database: schema, then data (from
        pg_dump; for pooled tenants COPY run as the tenant's own role under row security, so it holds only
        their rows, and needs no catalog a tenant may not read). Written 0600 beside, then renamed into a
        0700 directory: a file at the final path is always complete, and only the operator can read it. Runs of
        one name take turns (an exclusive lock on `<name>.lock`)."""
        if self.backup_dir is None:
            raise DatabaseUnavailable("no backup directory is configured")
        _private_directory(self.backup_dir)
        path = self.backup_dir / f"{name}.sql"
        with _exclusive(path.with_suffix(".lock"), self.lock_wait):
            return self._write(placement, path)

    def _write(self, placement: Placement, path: Path) -> Backup:
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
        returncode, _, stderr = run_child(argv, env, stdout=out)
        if returncode != 0:
            raise DatabaseUnavailable(f"pg_dump failed: {(stderr.strip().splitlines() or ['?'])[-1]}")

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
    returncode, _, stderr = run_child(
        [tool_path("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(path), "--dbname", dbname], env
    )
    if returncode != 0:
        raise DatabaseUnavailable(f"restore failed: {(stderr.strip().splitlines() or ['?'])[-1]}")


@contextlib.contextmanager
def _exclusive(lock_path: Path, wait: float) -> Iterator[None]:
    """Hold an exclusive flock on `lock_path` (created 0600, never removed: removing a lock file lets two runs
    lock two different files). The kernel drops it when its holder dies, however it dies."""
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise BackupInProgress(
                        f"another backup is being written to {lock_path.with_suffix('.sql')} (waited {wait:.0f} s)"
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # releases the lock


def run_child(argv: list[str], env: dict[str, str], stdout: IO[str] | int = subprocess.PIPE) -> tuple[int, str, str]:
    """Run a client tool to its end: (exit status, stdout, stderr). It never outlives this process: its own
    process group is killed on any exception here (a KeyboardInterrupt, a timeout), and a parent-death signal
    kills it if this process dies (the signal follows the thread that started it, which waits here meanwhile)."""
    process = subprocess.Popen(
        argv,
        stdout=stdout,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
        start_new_session=True,
        preexec_fn=_die_with(os.getpid()),
    )
    try:
        out, err = process.communicate()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise
    return process.returncode, out or "", err or ""


def _die_with(parent: int) -> Callable[[], None] | None:
    """What the child runs before exec: ask for SIGKILL when its parent dies, and die at once if the parent is
    already gone (it died between fork and prctl). None where there is no prctl (not Linux)."""
    prctl = _PRCTL
    if prctl is None:
        return None
    kill = int(signal.SIGKILL)

    def die_with_parent() -> None:
        if prctl(PR_SET_PDEATHSIG, kill, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:
            os.kill(os.getpid(), kill)

    return die_with_parent
