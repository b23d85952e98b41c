"""The operator's cached connections survive a restart of the database server (issue 13: after PostgreSQL came
back, every cached connection failed once, minutes later, a migration among them)."""

from __future__ import annotations

from pathlib import Path

import psycopg

from paybill.database import TenantDatabases
from paybill.database.server import LocalPostgres


def test_a_cached_connection_cut_by_a_server_restart_is_replaced_not_failed_on(tmp_path: Path) -> None:
    server = LocalPostgres(tmp_path / "postgres", durable=False)  # throwaway data
    server.start()
    try:
        databases = TenantDatabases(server.dsn)
        with databases.session() as conn:
            before = conn.execute("SELECT pg_backend_pid()").fetchone()
        server.stop()
        server.start()  # same port, same data: the cached connection's socket is dead
        with databases.session() as conn:
            after = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert after is not None and after != before
        databases.close()
    finally:
        server.remove()


def test_a_role_at_its_connection_limit_still_logs_in_so_its_suspension_is_not_held_up(tmp_path: Path) -> None:
    """PostgreSQL checks a role's connection limit after its password: "too many connections" is a yes."""
    server = LocalPostgres(tmp_path / "postgres", durable=False)  # throwaway data
    server.start()
    try:
        databases = TenantDatabases(server.dsn)
        with databases.session() as conn:
            conn.execute("CREATE ROLE busy LOGIN PASSWORD 'right' CONNECTION LIMIT 1")
        fields = databases.login_fields("busy", "right", "postgres", "public")
        wrong = databases.login_fields("busy", "wrong", "postgres", "public")
        with psycopg.connect(fields["uri"]):  # its one connection, held
            assert databases.logs_in(fields["uri"]) is True
            assert databases.logs_in(wrong["uri"]) is False
        databases.close()
    finally:
        server.remove()
