"""Outside review F2/F3: one pooled tenant's lock must not stall the others. A tenant can SET its own timeouts, so the
operator's lock watchdog ends a tenant's session that holds a stalling lock on a shared table, or that blocks
another tenant (or the operator's policy install) past the limit. Real PostgreSQL; never the admin's session."""

from __future__ import annotations

import datetime
import threading
import time
from collections.abc import Callable, Iterator

import psycopg
import pytest

from paybill.api.agentpolicy import AgentPolicySpec
from paybill.api.tenant import Access
from paybill.database import DatabaseUnavailable, TenantDatabases
from paybill.database.agents.install import install
from paybill.database.lock_holders import (
    FORGET_AFTER_S,
    PASS_CAP_S,
    LockRow,
    SessionRow,
    Termination,
    Why,
    operator_waiting,
    operator_waits,
    sessions_to_end,
    tenants_of_roles,
)
from paybill.database.ownership import agent_identity, agent_name, tenant_identity, tenant_name
from paybill.database.watchdog import SHARED_TABLES

from .test_hardening import AGENT_PASSWORD, PASSWORD, agent, login, tenant, within

LIMIT_S = 2.0
START = datetime.datetime(2026, 12, 1, tzinfo=datetime.UTC)


# --- the decision, pure -----------------------------------------------------------------------------------------


def _session(pid: int, role: str, held: float | None = 1.0, blocked_by: tuple[int, ...] = ()) -> SessionRow:
    return SessionRow(pid, START, role, "paybill_pooled", held, blocked_by)


TENANTS = {"t_a": "a", "a_a": "a", "t_b": "b"}


def test_a_stalling_lock_on_a_shared_table_is_ended_at_once_whatever_its_age() -> None:
    for mode in ("ShareLock", "ShareRowExclusiveLock", "ExclusiveLock", "AccessExclusiveLock"):
        for granted in (True, False):  # queued for it, it queues every later reader too
            ended = sessions_to_end(
                [_session(1, "t_a", held=0.1)],
                [LockRow(1, "app", "orders", mode, granted)],
                TENANTS,
                SHARED_TABLES,
                LIMIT_S,
            )
            assert [(t.pid, t.tenant, t.why, t.tables) for t in ended] == [(1, "a", Why.STALLING_LOCK, ("app.orders",))]


def test_ordinary_locks_and_a_bridge_tenants_own_tables_are_left() -> None:
    for mode in ("AccessShareLock", "RowShareLock", "RowExclusiveLock", "ShareUpdateExclusiveLock"):
        assert not sessions_to_end(
            [_session(1, "t_a", held=100)], [LockRow(1, "app", "orders", mode, True)], TENANTS, SHARED_TABLES, LIMIT_S
        )
    bridge = SessionRow(1, START, "t_a", "paybill_bridge", 100, ())
    assert not sessions_to_end(
        [bridge], [LockRow(1, "t_a", "orders", "AccessExclusiveLock", True)], TENANTS, SHARED_TABLES, LIMIT_S
    )


def test_blocking_the_operator_past_the_limit_is_ended_and_blocking_another_tenant_is_not() -> None:
    """Re-attack finding: tenant B queues a strong LOCK (or a duplicate key) behind tenant A's transaction, so A
    looks like B's blocker; ending A on that would let B end A's work. Only the operator's waits count."""
    locks = [
        LockRow(1, "app", "orders", "ShareUpdateExclusiveLock", True),
        LockRow(2, "app", "orders", "ShareUpdateExclusiveLock", False),
    ]
    assert not sessions_to_end(
        [_session(1, "t_a", held=LIMIT_S + 100), _session(2, "t_b", blocked_by=(1,))],
        locks,
        TENANTS,
        SHARED_TABLES,
        LIMIT_S,
    )
    young = sessions_to_end(
        [_session(1, "t_a", held=LIMIT_S - 0.5), _session(2, "postgres", blocked_by=(1,))],
        locks,
        TENANTS,
        SHARED_TABLES,
        LIMIT_S,
    )
    assert young == []
    old = sessions_to_end(
        [_session(1, "t_a", held=LIMIT_S + 0.5), _session(2, "postgres", blocked_by=(1,))],
        locks,
        TENANTS,
        SHARED_TABLES,
        LIMIT_S,
    )
    assert [(t.pid, t.why, t.tables, t.blocked) for t in old] == [(1, Why.BLOCKING, ("app.orders",), 1)]


def test_the_operators_waits_add_up_across_attempts_and_a_young_blocker_of_a_starved_table_is_ended() -> None:
    waits = operator_waits({}, {"app.orders"}, now=100.0)
    assert waits["app.orders"].seconds == 0.0  # first seen: nothing counted yet
    for now in (100.5, 101.0, 106.0, 106.5):  # a gap between attempts counts at most PASS_CAP_S
        waits = operator_waits(waits, {"app.orders"}, now)
    assert waits["app.orders"].seconds == 0.5 + 0.5 + PASS_CAP_S + 0.5
    assert operator_waits(waits, set(), now=106.5 + FORGET_AFTER_S + 1) == {}
    locks = [
        LockRow(1, "app", "orders", "AccessShareLock", True),
        LockRow(2, "app", "orders", "AccessExclusiveLock", False),
    ]
    sessions = [_session(1, "t_a", held=0.5), _session(2, "postgres", blocked_by=(1,))]
    assert operator_waiting(sessions, locks, TENANTS) == {"app.orders"}
    assert not sessions_to_end(sessions, locks, TENANTS, SHARED_TABLES, LIMIT_S, {"app.customers": waits["app.orders"]})
    starved = sessions_to_end(sessions, locks, TENANTS, SHARED_TABLES, LIMIT_S, waits)
    assert [(t.pid, t.why, t.held_seconds) for t in starved] == [(1, Why.BLOCKING, 0.5)]


def test_blocking_its_own_agent_or_being_an_unknown_role_is_left() -> None:
    assert not sessions_to_end(
        [_session(1, "t_a", held=100), _session(2, "a_a", blocked_by=(1,))], [], TENANTS, SHARED_TABLES, LIMIT_S
    )
    for stranger in ("postgres", "t_forged"):
        assert not sessions_to_end(
            [_session(1, stranger, held=100), _session(2, "t_b", blocked_by=(1,))],
            [LockRow(1, "app", "orders", "AccessExclusiveLock", True)],
            TENANTS,
            SHARED_TABLES,
            LIMIT_S,
        )


def test_roles_are_a_tenants_only_when_the_naming_key_gives_them_their_name() -> None:
    key = b"k" * 32
    tenant_role, agent_role = tenant_name(key, "acme"), agent_name(key, "acme", "ns", "p")
    owned = [
        (tenant_role, tenant_identity("acme")),
        (agent_role, agent_identity("acme", "ns", "p")),
        ("t_forged", tenant_identity("acme")),
        (tenant_name(key, "other"), agent_identity("acme", "ns", "p")),
        ("paybill_pooled_tenants", "Paybill shared data"),
    ]
    assert tenants_of_roles(key, owned) == {tenant_role: "acme", agent_role: "acme"}


def test_what_the_tenant_is_told_names_no_one_else_and_no_sql() -> None:
    ended = Termination(1, START, "t_a", "a", "paybill_pooled", Why.BLOCKING, ("app.orders",), None, 12.3, 2)
    assert "app.orders" in ended.message() and "12 s" in ended.message()
    assert ended.details() == {
        "role": "t_a",
        "database": "paybill_pooled",
        "why": "blocking",
        "tables": ["app.orders"],
        "mode": None,
        "heldSeconds": 12.3,
        "blocked": 2,
    }


# --- against PostgreSQL --------------------------------------------------------------------------------------------


class Watchdog:
    """The operator's loop in miniature: the watchdog every 0.2 s, what it ended collected."""

    def __init__(self, databases: TenantDatabases) -> None:
        self.databases, self.ended = databases, list[Termination]()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(0.2):
            self.ended += self.databases.end_lock_holders(LIMIT_S)

    def recorded(self, match: Callable[[Termination], bool]) -> list[Termination]:
        """The ends that match, once recorded: a session sees its connection go before the pass that ended it
        returns (up to 10 s; an empty list after that)."""
        deadline = time.monotonic() + 10
        while not (found := [t for t in self.ended if match(t)]) and time.monotonic() < deadline:
            time.sleep(0.05)
        return found


@pytest.fixture
def watchdog(databases: TenantDatabases) -> Iterator[Watchdog]:
    dog = Watchdog(databases)
    dog.thread.start()
    yield dog
    dog.stop.set()
    dog.thread.join(10)


def _in_thread(conn: psycopg.Connection, statement: str) -> tuple[threading.Thread, list[BaseException]]:
    failures: list[BaseException] = []

    def run() -> None:
        try:
            conn.execute(statement)
        except BaseException as exc:
            failures.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    return worker, failures


def test_a_tenant_holding_access_exclusive_on_a_shared_table_is_ended_and_the_other_reads(
    databases: TenantDatabases, watchdog: Watchdog
) -> None:
    attacker, victim = tenant(databases, "pooled"), tenant(databases, "pooled")
    locker = login(databases, attacker.role, PASSWORD, attacker.database)
    try:
        locker.execute("SET idle_in_transaction_session_timeout = 0")
        locker.execute("SET statement_timeout = 0")
        locker.execute("BEGIN")
        locker.execute("LOCK TABLE app.orders IN ACCESS EXCLUSIVE MODE")
        sleeper, failures = _in_thread(locker, "SELECT pg_sleep(150)")  # active, never idle: F3
        with login(databases, victim.role, PASSWORD, victim.database) as reader:
            took = within(LIMIT_S + 15, lambda: reader.execute("SELECT count(*) FROM orders").fetchone())
        sleeper.join(15)
        assert not sleeper.is_alive() and isinstance(failures[0], psycopg.OperationalError)
        assert took < LIMIT_S + 15
        ended = watchdog.recorded(lambda t: t.tenant == attacker.tenant)
        assert [(t.why, t.tables, t.mode) for t in ended] == [(Why.STALLING_LOCK, ("app.orders",), "ACCESS EXCLUSIVE")]
        assert not [t for t in watchdog.ended if t.tenant == victim.tenant]
    finally:
        locker.close()


def test_a_tenants_long_select_blocking_another_tenants_policy_install_is_ended_after_the_limit(
    databases: TenantDatabases,
) -> None:
    holder, installer = tenant(databases, "pooled"), tenant(databases, "pooled")
    slow = login(databases, holder.role, PASSWORD, holder.database)
    try:
        slow.execute("SET statement_timeout = 0")
        started = time.monotonic()
        reading, failures = _in_thread(slow, "SELECT pg_sleep(300), (SELECT count(*) FROM app.orders)")  # F2
        with pytest.raises(DatabaseUnavailable, match="waited"):  # the other tenant's install waits on it
            agent(databases, installer, "blocked")
        dog = Watchdog(databases)
        dog.thread.start()
        try:

            def install_until_it_passes() -> None:
                while True:
                    try:
                        agent(databases, installer, "blocked")
                        return
                    except DatabaseUnavailable:
                        continue

            within(LIMIT_S + 30, install_until_it_passes)
        finally:
            dog.stop.set()
            dog.thread.join(10)
        reading.join(15)
        assert not reading.is_alive() and isinstance(failures[0], psycopg.OperationalError)
        ended = [t for t in dog.ended if t.tenant == holder.tenant]
        assert [(t.why, t.role) for t in ended] == [(Why.BLOCKING, holder.role)]
        assert ended[0].held_seconds >= LIMIT_S and time.monotonic() - started >= LIMIT_S
        assert set(ended[0].tables) <= {"app.orders", "app.customers", "app.invoices", "app.payments"}
    finally:
        slow.close()


def test_a_chain_of_young_transactions_starving_the_operator_is_ended_once_its_waits_add_up(
    databases: TenantDatabases, watchdog: Watchdog
) -> None:
    """Re-attack finding: the operator's DDL waits a short while per attempt and retries, so a tenant handing a lock
    from one transaction to the next between the attempts, each younger than the limit, would starve it forever;
    the operator's waits are summed across attempts instead."""
    holder = tenant(databases, "pooled")
    links = [login(databases, holder.role, PASSWORD, holder.database) for _ in range(2)]
    operator = psycopg.connect(databases.dsn("paybill_pooled"), autocommit=True)
    try:
        operator.execute("SET lock_timeout = '300ms'")
        attempts, deadline = 0, time.monotonic() + 8 * LIMIT_S
        current = _hold(links[0])
        while time.monotonic() < deadline:
            attempts += 1
            try:
                with operator.transaction():
                    operator.execute("LOCK TABLE app.orders IN ACCESS EXCLUSIVE MODE")
                break
            except psycopg.errors.LockNotAvailable:
                pass
            following = _hold(links[attempts % 2])  # between two attempts: the lock goes on to a new transaction
            try:
                current.execute("COMMIT")
            except psycopg.OperationalError:  # ended just as that attempt gave up: the tenant logs in again
                links[(attempts + 1) % 2] = login(databases, holder.role, PASSWORD, holder.database)
            current = following
        else:
            pytest.fail(f"the operator never got its lock in {attempts} attempts")
    finally:
        operator.close()
        for link in links:
            link.close()
    ended = watchdog.recorded(lambda t: t.tenant == holder.tenant)
    assert [t.why for t in ended] == [Why.BLOCKING] and ended[0].held_seconds < LIMIT_S
    assert attempts > 3  # it was starved first: its waits added up to the limit over several attempts


def _hold(conn: psycopg.Connection) -> psycopg.Connection:
    conn.execute("BEGIN")
    conn.execute("SELECT count(*) FROM app.orders")
    return conn


DELETING = AgentPolicySpec.model_validate(
    {
        "subjects": [{"serviceAccount": "tenant-agent", "agent": "agent:bot"}],
        "rules": [{"id": "tidy", "effect": "allow", "actions": ["select", "delete"], "tables": ["orders"]}],
    }
)


def test_an_agent_of_a_tenant_is_watched_too(databases: TenantDatabases, watchdog: Watchdog) -> None:
    owner, victim = tenant(databases, "pooled"), tenant(databases, "pooled")
    role = install(databases, owner, "tidy", f"tenant-{owner.tenant}", DELETING, AGENT_PASSWORD, Access.FULL).role
    with login(databases, role, AGENT_PASSWORD, owner.database) as conn:
        conn.execute("SET idle_in_transaction_session_timeout = 0")
        conn.execute("BEGIN")
        conn.execute("LOCK TABLE app.orders IN EXCLUSIVE MODE")  # its table-level DELETE allows it
        with login(databases, victim.role, PASSWORD, victim.database) as writer:  # EXCLUSIVE stalls writes
            within(LIMIT_S + 15, lambda: writer.execute("DELETE FROM orders WHERE id = -1"))
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
    ended = watchdog.recorded(lambda t: t.role == role)
    assert [(t.tenant, t.why, t.mode) for t in ended] == [(owner.tenant, Why.STALLING_LOCK, "EXCLUSIVE")]


def test_a_session_of_a_role_paybill_did_not_create_is_never_ended(databases: TenantDatabases) -> None:
    victim = tenant(databases, "pooled")
    with databases.session("paybill_pooled") as admin_conn:
        admin_conn.execute("DROP ROLE IF EXISTS t_000000000000000000000000")
        admin_conn.execute("CREATE ROLE t_000000000000000000000000 LOGIN PASSWORD 'x'")  # a tenant's name shape
        admin_conn.execute("GRANT CONNECT ON DATABASE paybill_pooled TO t_000000000000000000000000")
        admin_conn.execute("GRANT USAGE ON SCHEMA app TO t_000000000000000000000000")
        admin_conn.execute("GRANT SELECT, DELETE ON app.orders TO t_000000000000000000000000")
    admin = psycopg.connect(databases.dsn("paybill_pooled"), autocommit=True)
    forged = login(databases, "t_000000000000000000000000", "x", "paybill_pooled")
    try:
        for holder in (admin, forged):
            holder.execute("BEGIN")
            holder.execute("LOCK TABLE app.orders IN ACCESS EXCLUSIVE MODE")
            waiter = login(databases, victim.role, PASSWORD, victim.database)
            waiter.execute("SET lock_timeout = 0")
            waiting, _ = _in_thread(waiter, "SELECT count(*) FROM orders")
            deadline = time.monotonic() + LIMIT_S + 2
            while time.monotonic() < deadline:  # past the limit, blocking a tenant all along
                assert databases.end_lock_holders(LIMIT_S) == []
                time.sleep(0.2)
            assert holder.execute("SELECT 1").fetchone() == (1,)
            holder.execute("COMMIT")
            waiting.join(15)
            assert not waiting.is_alive()
            waiter.close()
    finally:
        admin.close()
        forged.close()
        with databases.session("paybill_pooled") as admin_conn:
            admin_conn.execute("DROP OWNED BY t_000000000000000000000000")
            admin_conn.execute("DROP ROLE t_000000000000000000000000")
