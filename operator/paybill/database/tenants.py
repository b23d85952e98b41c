"""Tenant database objects. Identifiers always go through psycopg.sql, never string formatting."""

from __future__ import annotations

import contextlib

import psycopg
from psycopg import errors, sql


class DatabaseUnavailable(RuntimeError):
    """The tenant database could not be reached; the caller retries later."""


def role_name(tenant: str) -> str:
    return "tenant_" + tenant.replace("-", "_").replace(".", "_")


def _connect(dsn: str) -> psycopg.Connection:
    try:
        return psycopg.connect(dsn, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        # The message names host and port only; the DSN (which may hold a password) is never echoed.
        raise DatabaseUnavailable(f"cannot connect to the tenant database: {str(exc).splitlines()[0]}") from None


def ensure_tenant_role(dsn: str, tenant: str) -> str:
    """Create the tenant's group role (NOLOGIN) if it is missing; idempotent and race-safe."""
    role = role_name(tenant)
    with _connect(dsn) as conn:
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is None:
            with contextlib.suppress(errors.DuplicateObject):  # another reconcile created it first
                conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
    return role


def drop_tenant_role(dsn: str, tenant: str) -> None:
    with _connect(dsn) as conn:
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role_name(tenant))))
