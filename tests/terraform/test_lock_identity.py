"""Whose Terraform state lock is whose: a runner is a random per-process instance, never a host and a pid (two
replicas' truncated Pod names and PID 1 coincide), and a lock of another instance is released only once that
instance is gone by evidence (no session of it active for the stale time), never while its holder works."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

import psycopg
import pytest

from paybill.terraform import ModuleInputs, StateLocked, TerraformRunner
from paybill.terraform.backend import application_name, state_lock_keys

from .conftest import LOCAL_SILO, wait_for

OTHER_INSTANCE = "0123456789ab"


def test_a_working_lock_of_another_runner_with_the_same_host_and_pid_is_not_stolen(
    make_runner: Callable[..., TerraformRunner], tenant: ModuleInputs, backend_dsn: str
) -> None:
    runner = make_runner(stale_lock_after=1.0, lock_timeout=2.0)
    runner.apply(tenant, LOCAL_SILO)
    key = _state_key(backend_dsn, tenant)
    # the outside reviewer's reproduction: a peer replica whose Pod name cuts to our 24 characters, whose runner
    # is PID 1 as ours is, working under its lock for longer than the stale time
    twin = f"paybill-tf/{socket.gethostname()[:24]}/{os.getpid()}/cafe00000002"
    peer = lambda: application_name("cafe00000003", instance=OTHER_INSTANCE)  # noqa: E731 - the new scheme
    for holder_name in (lambda: twin, peer):
        with _working_holder(backend_dsn, key, holder_name()) as holder:
            wait_for(lambda: _session_seconds(backend_dsn, holder) > 1.5, 10, "the lock ages")
            with pytest.raises(StateLocked):
                runner.drift(tenant, LOCAL_SILO)
            assert _session_alive(backend_dsn, holder)


def test_stale_lock_is_released_and_recorded_and_a_live_one_is_not(
    make_runner: Callable[..., TerraformRunner], tenant: ModuleInputs, backend_dsn: str
) -> None:
    runner = make_runner(stale_lock_after=1.0, lock_timeout=2.0)
    runner.apply(tenant, LOCAL_SILO)
    key = _state_key(backend_dsn, tenant)

    # a live instance: its holding session is silent, but another session of the same instance works
    silent = _hold_lock(backend_dsn, key, application_name("cafe00000001", instance=OTHER_INSTANCE))
    try:
        with _working_holder(backend_dsn, None, application_name("cafe00000004", instance=OTHER_INSTANCE)):
            wait_for(lambda: _idle_seconds(backend_dsn, silent) > 1.5, 10, "the holder is silent")
            with pytest.raises(StateLocked) as locked:
                runner.drift(tenant, LOCAL_SILO)
            assert "Error acquiring the state lock" in locked.value.message
            assert _session_alive(backend_dsn, silent)
    finally:
        silent.close()

    # a gone instance (a process before a restart, a replica on a lost node): no session of it has been active
    # for the stale time, yet PostgreSQL keeps the one holding the lock
    stale = _hold_lock(backend_dsn, key, application_name("deadbeef0001", instance="fedcba987654"))
    try:
        wait_for(lambda: _idle_seconds(backend_dsn, stale) > 1.5, 10, "the holder is silent")
        result = runner.apply(tenant, LOCAL_SILO)
        assert [(r.lock_key, r.holder_backend_pid) for r in result.lock_recoveries] == [(key, stale.info.backend_pid)]
        recovery = result.lock_recoveries[0]
        assert "fedcba987654" in recovery.reason and "no session active" in recovery.reason
        assert recovery.holder_application.startswith("paybill-tf/fedcba987654/deadbeef0001/")
        assert 1.0 < recovery.held_seconds < 60
        assert not _session_alive(backend_dsn, stale)
    finally:
        stale.close()


def test_a_job_executor_process_is_an_instance_of_its_own() -> None:
    """`python -m paybill.terraform` (the Job's executor) names its sessions with the same scheme, and a process
    of the same host, even a fork of this one, is never this instance."""
    code = "from paybill.terraform import backend; print(backend.application_name('r1'))"
    names = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()]
    names.append(application_name("r1"))
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        os.write(write, application_name("r1").encode())
        os._exit(0)
    os.close(write)
    os.waitpid(child, 0)
    names.append(os.read(read, 200).decode())
    os.close(read)
    instances = [name.split("/")[1] for name in names]
    assert all(name.startswith("paybill-tf/") and name.split("/")[4] == socket.gethostname() for name in names)
    assert len(set(instances)) == 3 and all(len(instance) == 12 for instance in instances)


def _state_key(dsn: str, tenant: ModuleInputs) -> int:
    with psycopg.connect(dsn, autocommit=True) as probe:
        key = max(state_lock_keys(probe, tenant.tenant_id))
    assert key > 0  # the tenant's own state row
    return key


def _hold_lock(dsn: str, key: int, application: str) -> psycopg.Connection:
    connection = psycopg.connect(dsn, autocommit=True, application_name=application)
    connection.execute("SELECT pg_advisory_lock(%s)", [key])
    return connection


@contextmanager
def _working_holder(dsn: str, key: int | None, application: str) -> Iterator[psycopg.Connection]:
    """A session that (takes the lock and) keeps working: one statement that runs until cancelled."""
    connection = psycopg.connect(dsn, autocommit=True, application_name=application)
    statement = "SELECT pg_advisory_lock(%s), pg_sleep(600)" if key is not None else "SELECT %s::int, pg_sleep(600)"

    def work() -> None:
        with suppress(psycopg.errors.QueryCanceled):
            connection.execute(statement, [key if key is not None else 0])

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    try:
        with psycopg.connect(dsn, autocommit=True) as watcher:
            wait_for(
                lambda: (
                    watcher.execute(
                        "SELECT state = 'active' AND (%s::bigint IS NULL OR EXISTS"
                        " (SELECT 1 FROM pg_locks WHERE pid = %s AND locktype = 'advisory' AND granted))"
                        " FROM pg_stat_activity WHERE pid = %s",
                        [key, connection.info.backend_pid, connection.info.backend_pid],
                    ).fetchone()
                    == (True,)
                ),
                10,
                "the holder works",
            )
        yield connection
    finally:
        connection.cancel()
        worker.join(10)
        connection.close()


def _session_seconds(dsn: str, holder: psycopg.Connection) -> float:
    return _activity_seconds(dsn, holder, "backend_start")


def _idle_seconds(dsn: str, holder: psycopg.Connection) -> float:
    return _activity_seconds(dsn, holder, "state_change")


def _activity_seconds(dsn: str, holder: psycopg.Connection, column: str) -> float:
    with psycopg.connect(dsn, autocommit=True) as connection:
        row = connection.execute(
            psycopg.sql.SQL(
                "SELECT extract(epoch FROM now() - {})::float8 FROM pg_stat_activity WHERE pid = %s"
            ).format(psycopg.sql.Identifier(column)),
            [holder.info.backend_pid],
        ).fetchone()
    return float(row[0]) if row and row[0] is not None else 0.0


def _session_alive(dsn: str, holder: psycopg.Connection) -> bool:
    with psycopg.connect(dsn, autocommit=True) as connection:
        return connection.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [holder.info.backend_pid]
        ).fetchone() == (1,)
