"""One tenant must not stall or starve the others in a shared database, nor watch their activity: connection
limits per role, bounded table locks, agent policy installs that never queue readers, no statistics views."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from paybill.api.agentpolicy import AgentPolicySpec
from paybill.api.tenant import Access
from paybill.database import (
    AGENT_CONNECTION_LIMIT,
    TENANT_CONNECTION_LIMIT,
    DatabaseUnavailable,
    TenantDatabases,
)
from paybill.database.agents.install import install, uninstall
from paybill.database.server import LocalPostgres

from .conftest import fresh
from .test_hardening import AGENT_PASSWORD, PASSWORD, POLICY, agent, login, tenant, within

IDLE_TIMEOUT = "1s"


@pytest.fixture
def databases(postgres: LocalPostgres, tmp_path: Path) -> Iterator[TenantDatabases]:
    dbs = TenantDatabases(postgres.dsn, backup_dir=tmp_path / "backups", idle_in_transaction_timeout=IDLE_TIMEOUT)
    yield dbs
    dbs.close()


# --- #5: one tenant cannot take every connection ---------------------------------------------------------------


def _fill(dbs: TenantDatabases, role: str, password: str, database: str, limit: int) -> list[psycopg.Connection]:
    held = []
    try:
        for _ in range(limit):
            held.append(login(dbs, role, password, database))
        with pytest.raises(psycopg.OperationalError, match="too many connections for role"):
            held.append(login(dbs, role, password, database))
    except BaseException:
        for conn in held:
            conn.close()
        raise
    return held


@pytest.mark.parametrize("isolation", ["pooled", "bridge"])
def test_a_tenant_or_agent_past_its_connection_limit_is_refused_while_others_connect(
    databases: TenantDatabases, isolation: str
) -> None:
    greedy, other = tenant(databases, isolation), tenant(databases, isolation)
    greedy_agent = agent(databases, greedy)
    held = _fill(databases, greedy.role, PASSWORD, greedy.database, TENANT_CONNECTION_LIMIT)
    held += _fill(databases, greedy_agent, AGENT_PASSWORD, greedy.database, AGENT_CONNECTION_LIMIT)
    try:
        with login(databases, other.role, PASSWORD, other.database) as conn:
            assert conn.execute("SELECT count(*) FROM orders").fetchone() == (0,)
    finally:
        for conn in held:
            conn.close()


# --- #3: a tenant's table lock is bounded ---------------------------------------------------------------------


def test_the_local_server_ends_idle_transactions_by_default(postgres: LocalPostgres) -> None:
    with psycopg.connect(postgres.dsn) as conn:
        assert conn.execute("SHOW idle_in_transaction_session_timeout").fetchone() == ("1min",)


def test_pooled_tenants_write_through_column_privileges_only(databases: TenantDatabases) -> None:
    placement = tenant(databases, "pooled")
    with psycopg.connect(databases.dsn("paybill_pooled"), autocommit=True) as admin:
        assert admin.execute(
            "SELECT has_table_privilege('paybill_pooled_tenants', 'app.orders', 'INSERT'), "
            "has_table_privilege('paybill_pooled_tenants', 'app.orders', 'UPDATE'), "
            "has_column_privilege('paybill_pooled_tenants', 'app.orders', 'total', 'UPDATE')"
        ).fetchone() == (False, False, True)
    with login(databases, placement.role, PASSWORD, placement.database) as conn:
        conn.execute("INSERT INTO customers (tenant_id, id, name) VALUES (%s, 1, 'c')", (placement.tenant,))
        conn.execute(
            "INSERT INTO orders (tenant_id, id, customer_id, status, total) VALUES (%s, 1, 1, 'new', 1)",
            (placement.tenant,),
        )
        conn.execute("UPDATE orders SET total = 2 WHERE id = 1")
        conn.execute("DELETE FROM orders WHERE id = 1")


def test_a_tenant_holding_an_exclusive_lock_idle_in_transaction_is_ended_and_others_read(
    databases: TenantDatabases,
) -> None:
    attacker, victim = tenant(databases, "pooled"), tenant(databases, "pooled")
    attacker_agent = agent(databases, attacker)
    for user, password in ((attacker.role, PASSWORD), (attacker_agent, AGENT_PASSWORD)):
        locker = login(databases, user, password, attacker.database)
        try:
            try:
                locker.execute("BEGIN")
                locker.execute("LOCK TABLE app.orders, app.customers IN ACCESS EXCLUSIVE MODE")
                locked = True
            except psycopg.errors.InsufficientPrivilege:
                locked = False
            with login(databases, victim.role, PASSWORD, victim.database) as reader:
                within(15, lambda: reader.execute("SELECT count(*) FROM orders").fetchone())
            if locked:
                with pytest.raises(psycopg.errors.IdleInTransactionSessionTimeout):
                    locker.execute("SELECT 1")
        finally:
            locker.close()


# --- #4: installing an agent policy never queues tenants' reads -------------------------------------------------


def _reader_holding_a_transaction(dbs: TenantDatabases, placement_role: str, database: str) -> psycopg.Connection:
    conn = login(dbs, placement_role, PASSWORD, database)
    conn.execute("SET idle_in_transaction_session_timeout = 0")  # a tenant may: the timeout is only a default
    conn.execute("BEGIN")
    conn.execute("SELECT count(*) FROM orders").fetchone()
    return conn


def test_reinstalling_an_unchanged_policy_takes_no_exclusive_lock(databases: TenantDatabases) -> None:
    owner, holder, reader = (tenant(databases, "pooled") for _ in range(3))
    agent(databases, owner, "steady")
    held = _reader_holding_a_transaction(databases, holder.role, holder.database)
    try:
        within(10, lambda: agent(databases, owner, "steady"))
        with login(databases, reader.role, PASSWORD, reader.database) as conn:
            within(15, lambda: conn.execute("SELECT count(*) FROM orders").fetchone())
    finally:
        held.close()


def test_a_changed_policy_fails_fast_and_retryably_behind_a_reader(databases: TenantDatabases) -> None:
    owner, holder, reader = (tenant(databases, "pooled") for _ in range(3))
    agent(databases, owner, "changing")
    changed = AgentPolicySpec.model_validate(
        {
            "subjects": [{"serviceAccount": "tenant-agent", "agent": "agent:bot"}],
            "rules": [
                {
                    "id": "read-orders",
                    "effect": "allow",
                    "actions": ["select"],
                    "tables": ["orders"],
                    "rowFilter": "status = 'open'",
                }
            ],
        }
    )
    held = _reader_holding_a_transaction(databases, holder.role, holder.database)
    try:
        outcome: list[BaseException] = []

        def reinstall() -> None:
            try:
                install(databases, owner, "changing", f"tenant-{owner.tenant}", changed, AGENT_PASSWORD, Access.FULL)
            except DatabaseUnavailable as exc:
                outcome.append(exc)

        worker = threading.Thread(target=reinstall, daemon=True)
        worker.start()
        with login(databases, reader.role, PASSWORD, reader.database) as conn:
            within(15, lambda: conn.execute("SELECT count(*) FROM orders").fetchone())
        worker.join(10)
        assert not worker.is_alive()
        assert outcome and "retry" in str(outcome[0])
    finally:
        held.close()
    within(
        15,
        lambda: install(databases, owner, "changing", f"tenant-{owner.tenant}", changed, AGENT_PASSWORD, Access.FULL),
    )


def test_concurrent_installs_on_one_database_do_not_collide(databases: TenantDatabases) -> None:
    placements = [tenant(databases, "pooled") for _ in range(3)]
    failures: list[BaseException] = []

    def run(placement: object) -> None:
        try:
            for _ in range(3):
                install(databases, placement, fresh("p"), "ns", POLICY, AGENT_PASSWORD, Access.FULL)  # type: ignore[arg-type]
        except BaseException as exc:
            failures.append(exc)

    workers = [threading.Thread(target=run, args=(p,)) for p in placements]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert not failures, failures


def test_a_tenant_that_turns_its_timeout_off_is_ended_by_the_operator(databases: TenantDatabases) -> None:
    attacker, victim = tenant(databases, "pooled"), tenant(databases, "pooled")
    locker = login(databases, attacker.role, PASSWORD, attacker.database)
    try:
        locker.execute("SET idle_in_transaction_session_timeout = 0")
        locker.execute("BEGIN")
        locker.execute("LOCK TABLE app.orders IN ACCESS EXCLUSIVE MODE")
        assert databases.end_idle_transactions(max_idle_seconds=60) == 0  # not idle long enough yet
        within(10, lambda: _until(lambda: databases.end_idle_transactions(max_idle_seconds=0.5) == 1))
        with login(databases, victim.role, PASSWORD, victim.database) as reader:
            within(15, lambda: reader.execute("SELECT count(*) FROM orders").fetchone())
        with pytest.raises(psycopg.OperationalError):
            locker.execute("SELECT 1")
    finally:
        locker.close()


def _until(condition: Callable[[], bool]) -> None:
    while not condition():
        time.sleep(0.1)


def test_uninstalling_a_policy_behind_a_reader_fails_fast_and_retries(databases: TenantDatabases) -> None:
    owner, holder, reader = (tenant(databases, "pooled") for _ in range(3))
    agent(databases, owner, "leaving")
    held = _reader_holding_a_transaction(databases, holder.role, holder.database)
    try:
        with pytest.raises(DatabaseUnavailable, match="lock timeout"):
            within(10, lambda: uninstall(databases, "leaving", f"tenant-{owner.tenant}", owner.tenant, owner.database))
        with login(databases, reader.role, PASSWORD, reader.database) as conn:
            within(15, lambda: conn.execute("SELECT count(*) FROM orders").fetchone())
    finally:
        held.close()
    assert within(15, lambda: uninstall(databases, "leaving", f"tenant-{owner.tenant}", owner.tenant, owner.database))
