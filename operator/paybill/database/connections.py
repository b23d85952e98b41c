"""Connections to the tenant database server as the operator's admin role, and what one process shares.

Connections to the shared databases (and the operator's own) are kept per thread; a silo's is opened for one
step and closed. A dead server becomes `DatabaseUnavailable`, whose message never echoes the DSN.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg import conninfo

from ..errors import first_line
from .errors import DatabaseUnavailable
from .placement import BRIDGE_DATABASE, POOLED_DATABASE

# What PostgreSQL answers to credentials it refuses (its messages; a refusal at connect carries no SQLSTATE here).
LOGIN_REFUSALS = (
    "password authentication failed",
    "is not permitted to log in",
    "permission denied for database",
    "does not exist",
)
LOCK_TIMEOUT_MS = 20000  # a lock a tenant holds makes the operator's step fail loudly (and retry), never hang


class Connections:
    """Sessions on one PostgreSQL server, and the set-up state every part of `TenantDatabases` shares.

    `admin_dsn` connects as a role that may create roles and databases; its database holds the operator's
    records.
    """

    def __init__(self, admin_dsn: str) -> None:
        self.admin_dsn = admin_dsn
        self._local = threading.local()
        self._cached: weakref.WeakSet[psycopg.Connection] = weakref.WeakSet()  # every thread's, for close()
        self._cached_guard = threading.Lock()
        self.ready: set[tuple[str, str]] = set()  # (database, schema) at the latest migration, set up
        # One thread at a time sets up shared objects (concurrent GRANTs on one object fail with "tuple
        # concurrently updated"): a lock in this process, which no tenant can reach.
        self.setup = threading.RLock()

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

    def logs_in(self, uri: str) -> bool:
        """Whether a tenant's or agent's credentials log in. False when the server refuses them (password,
        LOGIN, CONNECT); DatabaseUnavailable when it cannot be reached or is busy (no verdict on the credentials)."""
        try:
            psycopg.connect(uri, connect_timeout=5).close()
        except psycopg.OperationalError as exc:
            if "too many connections for role" in str(exc):  # checked after the password was accepted
                return True
            if any(refusal in str(exc) for refusal in LOGIN_REFUSALS):
                return False
            raise DatabaseUnavailable(f"cannot connect to the tenant database server: {first_line(exc)}") from None
        return True

    def connect(self, database: str | None = None) -> psycopg.Connection:
        """A cached autocommit connection for this thread (the operator's database when None)."""
        cache: dict[str | None, psycopg.Connection] = self._local.__dict__.setdefault("connections", {})
        conn = cache.get(database)
        if conn is None or conn.closed or conn.broken or not _alive(conn):
            conn = cache[database] = self._open(database)
            with self._cached_guard:
                self._cached.add(conn)
        return conn

    def close(self) -> None:
        """Close every thread's cached connection (at shutdown: a thread-local one otherwise stays open until
        the garbage collector finds it, and a process that starts operators repeatedly runs out of slots)."""
        with self._cached_guard:
            cached, self._cached = list(self._cached), weakref.WeakSet()
        for conn in cached:
            conn.close()

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


def _alive(conn: psycopg.Connection) -> bool:
    """A cached connection still reaches its server (one a server restart cut looks healthy until used)."""
    try:
        conn.execute("SELECT 1")
    except psycopg.Error:
        conn.close()
        return False
    return True
