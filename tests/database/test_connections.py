"""The operator's cached connections survive a restart of the database server (issue 13: after PostgreSQL came
back, every cached connection failed once, minutes later, a migration among them)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
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


def test_close_ends_every_threads_cached_connections(postgres: LocalPostgres) -> None:
    """The operator's worker threads each keep connections; at shutdown they are all closed, not left to the
    garbage collector (a process that started operators one after another ran the server out of slots)."""
    databases = TenantDatabases(postgres.dsn)

    def backend() -> int:
        with databases.session() as conn:
            row = conn.execute("SELECT pg_backend_pid()").fetchone()
            assert row is not None
            return int(row[0])

    with ThreadPoolExecutor(max_workers=3) as pool:  # its threads (and their caches) live on past close()
        barrier = threading.Barrier(3)
        pids = set(pool.map(lambda _: (barrier.wait(), backend())[1], range(3)))
        assert len(pids) == 3
        databases.close()
        with psycopg.connect(postgres.dsn) as conn:
            alive = conn.execute("SELECT pid FROM pg_stat_activity WHERE pid = ANY(%s)", [list(pids)]).fetchall()
        assert alive == []
    assert backend() not in pids  # a connection needed after close is opened again
    databases.close()
