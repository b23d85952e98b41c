"""Tenant data on a real PostgreSQL server: isolation in all three models, hostile attempts, access
changes, backups that restore, and migrations between models that lose nothing."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest
from psycopg import sql

from paybill.api.tenant import Access
from paybill.database import (
    DatabaseUnavailable,
    NameConflict,
    Placement,
    TenantDatabases,
    restore_backup,
)
from paybill.database.server import LocalPostgres

from .conftest import fresh

PASSWORD = "tenant-pw"
MODES = ("pooled", "bridge", "silo")


def login(dbs: TenantDatabases, placement: Placement, **kwargs: object) -> psycopg.Connection:
    return psycopg.connect(
        dbs.dsn(placement.database, user=placement.role, password=PASSWORD), autocommit=True, **kwargs
    )


def seed(conn: psycopg.Connection, tenant: str, customers: int = 3, orders: int = 2) -> None:
    for c in range(1, customers + 1):
        conn.execute(
            "INSERT INTO customers (tenant_id, id, name, email) VALUES (%s, %s, %s, %s)",
            (tenant, c, f"{tenant} customer {c}", f"c{c}@{tenant}.test"),
        )
        for o in range(orders):
            conn.execute(
                "INSERT INTO orders (tenant_id, id, customer_id, status, total) VALUES (%s, %s, %s, %s, %s)",
                (tenant, c * 100 + o, c, "open", 10 + o),
            )


def tenant_pair(dbs: TenantDatabases, mode: str) -> tuple[Placement, Placement]:
    a, b = fresh("a"), fresh("b")
    placements = []
    for tenant in (a, b):
        placement = dbs.provision(tenant, mode, PASSWORD)
        dbs.set_access(placement, Access.FULL)
        with login(dbs, placement) as conn:
            seed(conn, tenant)
        placements.append(placement)
    return placements[0], placements[1]


def refused(conn: psycopg.Connection, statement: str, params: tuple[object, ...] = ()) -> bool:
    try:
        conn.execute(statement, params)
    except (
        psycopg.errors.InsufficientPrivilege,
        psycopg.errors.UndefinedTable,
        psycopg.errors.InvalidSchemaName,
        psycopg.errors.UndefinedFunction,
    ):
        return True
    return False


@pytest.mark.parametrize("mode", MODES)
def test_a_tenant_reads_and_writes_only_its_own_rows(databases: TenantDatabases, mode: str) -> None:
    a, b = tenant_pair(databases, mode)
    with login(databases, a) as conn:
        tenants = {t for (t,) in conn.execute("SELECT DISTINCT tenant_id FROM customers")}
        assert tenants == {a.tenant}
        assert conn.execute("SELECT count(*) FROM orders").fetchone()[0] == 6
        # Writing another tenant's rows: the pooled RLS check refuses; elsewhere they are not even there.
        if mode == "pooled":
            assert refused_rls(conn, "INSERT INTO customers (tenant_id, id, name) VALUES (%s, 99, 'x')", (b.tenant,))
        assert conn.execute("UPDATE customers SET name = 'pwned' WHERE tenant_id = %s", (b.tenant,)).rowcount == 0
        assert conn.execute("DELETE FROM orders WHERE tenant_id = %s", (b.tenant,)).rowcount == 0
    with login(databases, b) as conn:
        assert conn.execute("SELECT count(*) FROM customers WHERE name = 'pwned'").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM orders").fetchone()[0] == 6


def refused_rls(conn: psycopg.Connection, statement: str, params: tuple[object, ...]) -> bool:
    try:
        conn.execute(statement, params)
    except psycopg.errors.InsufficientPrivilege as error:
        return "row-level security" in str(error)
    return False


@pytest.mark.parametrize("mode", MODES)
def test_hostile_attempts_do_not_reach_another_tenant(databases: TenantDatabases, mode: str) -> None:
    a, b = tenant_pair(databases, mode)
    with login(databases, a) as conn:
        assert refused(conn, f'SET ROLE "{b.role}"')
        assert refused(conn, "SET ROLE postgres")
        conn.execute("RESET ROLE")
        conn.execute("SELECT set_config('paybill.tenant', %s, false)", (b.tenant,))
        conn.execute("SELECT set_config('app.tenant_id', %s, false)", (b.tenant,))
        assert {t for (t,) in conn.execute("SELECT DISTINCT tenant_id FROM customers")} == {a.tenant}
        # search_path games: the tenant's own objects only, and nowhere to create shadowing ones.
        conn.execute("SET search_path = paybill, app, public, pg_catalog")
        assert refused(conn, "CREATE FUNCTION public.current_user_x() RETURNS text LANGUAGE sql AS 'SELECT 1'")
        assert refused(conn, "CREATE TABLE public.customers (tenant_id text)")
        assert refused(
            conn,
            "CREATE FUNCTION leak() RETURNS SETOF text LANGUAGE sql SECURITY DEFINER AS 'SELECT name FROM customers'",
        )
        conn.execute("RESET search_path")
        if mode == "pooled":
            mapping = conn.execute("SELECT role::text, tenant FROM paybill.tenant_roles").fetchall()
            assert mapping == [(a.role, a.tenant)]
            assert refused(conn, "UPDATE paybill.tenant_roles SET tenant = %s", (b.tenant,))
            conn.execute("SET ROLE paybill_pooled_tenants")  # the group it belongs to: sees nothing at all
            assert conn.execute("SELECT count(*) FROM customers").fetchone()[0] == 0
            conn.execute("RESET ROLE")
        elif mode == "bridge":
            assert refused(conn, f'SELECT * FROM "{b.schema}".customers')
            assert refused(conn, f'CREATE TABLE "{a.schema}".mine (x int)')
        # Catalogs show no other tenant's tables or columns.
        schemas = {
            t
            for (t,) in conn.execute(
                "SELECT table_schema FROM information_schema.tables "
                "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
            )
        }
        assert schemas <= {a.schema, "paybill"}
        if mode == "bridge":
            assert (
                conn.execute(
                    "SELECT count(*) FROM information_schema.columns WHERE table_schema = %s", (b.schema,)
                ).fetchone()[0]
                == 0
            )
        assert refused(conn, "SELECT pg_read_file('/etc/passwd')")
    if mode == "silo":
        with pytest.raises(psycopg.OperationalError, match="permission denied"):
            psycopg.connect(databases.dsn(b.database, user=a.role, password=PASSWORD)).close()
    if mode == "bridge":
        with psycopg.connect(databases.dsn(b.database)) as admin:
            assert not admin.execute("SELECT has_schema_privilege(%s, %s, 'USAGE')", (a.role, b.schema)).fetchone()[0]


@pytest.mark.parametrize("mode", MODES)
def test_read_only_then_suspended_then_resumed(databases: TenantDatabases, mode: str) -> None:
    a, _ = tenant_pair(databases, mode)
    databases.set_access(a, Access.READ_ONLY)
    assert databases.access_of(a) == Access.READ_ONLY
    with login(databases, a) as conn:
        assert conn.execute("SELECT count(*) FROM customers").fetchone()[0] == 3
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("INSERT INTO customers (tenant_id, id, name) VALUES (%s, 50, 'x')", (a.tenant,))
    session = login(databases, a)
    databases.set_access(a, Access.NONE)
    assert databases.access_of(a) == Access.NONE
    with pytest.raises(psycopg.OperationalError):  # the open session was ended
        session.execute("SELECT 1")
    with pytest.raises(psycopg.OperationalError, match="not permitted to log in"):
        login(databases, a)
    databases.set_access(a, Access.FULL)
    assert databases.access_of(a) == Access.FULL
    with login(databases, a) as conn:
        conn.execute("INSERT INTO customers (tenant_id, id, name) VALUES (%s, 51, 'back')", (a.tenant,))
        assert conn.execute("SELECT count(*) FROM customers").fetchone()[0] == 4


@pytest.mark.parametrize("mode", MODES)
def test_backup_restores_into_a_fresh_database_with_identical_checksums(
    databases: TenantDatabases, postgres: LocalPostgres, mode: str
) -> None:
    a, b = tenant_pair(databases, mode)
    backup = databases.backup(a, f"{a.tenant}-final")
    assert backup.path.exists() and len(backup.sha256) == 64 and backup.size > 0
    assert backup.checksums == databases.checksums(a) and backup.checksums["orders"].rows == 6
    text = backup.path.read_text()
    assert b.tenant not in text and PASSWORD not in text
    target = f"restore_{a.tenant.replace('-', '_')}"
    restore_backup(postgres.dsn, backup.path, target)
    restored = Placement(a.tenant, a.isolation, target, a.schema, a.role)
    assert databases.checksums(restored) == backup.checksums


@pytest.mark.parametrize(
    ("start", "steps"), [("pooled", ("bridge", "silo", "bridge", "pooled")), ("silo", ("pooled",))]
)
def test_migration_between_models_keeps_every_row(
    databases: TenantDatabases, start: str, steps: tuple[str, ...]
) -> None:
    a, b = tenant_pair(databases, start)
    expected, neighbour = databases.checksums(a), databases.checksums(b)
    current = a
    for isolation in steps:
        previous = current
        current = databases.migrate(a.tenant, isolation, PASSWORD)
        assert current == databases.placement_for(a.tenant, isolation)
        assert databases.checksums(current) == expected
        assert databases.recorded(a.tenant) == (current, None, str(previous.isolation))  # the source is kept
        assert databases.finish_move(a.tenant) == previous  # until the credentials point at the target
        assert databases.recorded(a.tenant) == (current, None, None)
        databases.set_access(current, Access.FULL)
        with login(databases, current) as conn:
            assert conn.execute("SELECT count(*) FROM orders").fetchone()[0] == 6
        if previous.database != current.database or previous.schema != current.schema:
            left = databases.checksums(previous) if previous.pooled else None
            assert left is None or all(c.rows == 0 for c in left.values())
    assert databases.checksums(b) == neighbour  # the neighbour in the starting model is untouched


def test_migration_under_concurrent_reads_loses_no_row(databases: TenantDatabases) -> None:
    a, _ = tenant_pair(databases, "pooled")
    stop = threading.Event()
    counts: list[int] = []
    retried: list[type[psycopg.Error]] = []

    def reader() -> None:
        while not stop.is_set():
            placement, _, _ = databases.recorded(a.tenant)
            assert placement is not None
            try:
                with login(databases, placement, connect_timeout=2) as conn:
                    counts.append(conn.execute("SELECT count(*) FROM orders").fetchone()[0])
            except psycopg.Error as error:  # the old placement was closed under us: an error, read again
                retried.append(type(error))

    def wait_for(reads: int) -> None:
        deadline = time.monotonic() + 30
        while len(counts) < reads and thread.is_alive() and time.monotonic() < deadline:
            stop.wait(0.01)
        assert len(counts) >= reads, f"reader stalled: {counts} {retried}"

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    try:
        wait_for(5)
        target = databases.migrate(a.tenant, "silo", PASSWORD)
        databases.set_access(target, Access.FULL)
        wait_for(len(counts) + 5)
        databases.finish_move(a.tenant)  # the source is revoked under the reader, then removed
        wait_for(len(counts) + 5)
    finally:
        stop.set()
        thread.join(timeout=10)
    assert set(counts) == {6}, counts  # every read that answered saw every row: never a partial or empty one
    # the cut-over terminates sessions on the old placement (AdminShutdown is an OperationalError), then
    # revokes it: only "gone, read again" errors, never a data error
    allowed = (psycopg.OperationalError, psycopg.errors.InsufficientPrivilege, psycopg.errors.UndefinedTable)
    assert all(issubclass(error, allowed) for error in retried), retried
    assert databases.checksums(target)["orders"].rows == 6


def test_interrupted_migration_resumes_and_writes_are_held_until_cut_over(
    databases: TenantDatabases, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, _ = tenant_pair(databases, "pooled")
    expected = databases.checksums(a)

    def crash(*_: object) -> None:
        raise RuntimeError("operator killed")

    databases.migrate(a.tenant, "bridge", PASSWORD)  # cut over; the operator dies before finishing the move
    current, migrating_to, previous = databases.recorded(a.tenant)
    assert current == databases.placement_for(a.tenant, "bridge") and migrating_to is None and previous == "pooled"
    assert databases.provision(a.tenant, "bridge", PASSWORD) == current  # the restart keeps the source until
    assert databases.finish_move(a.tenant) == a  # the credentials point at the target, then removes it
    assert databases.recorded(a.tenant) == (current, None, None)
    assert databases.checksums(current) == expected
    assert all(c.rows == 0 for c in databases.checksums(a).values())

    monkeypatch.setattr(databases.moves, "copy", crash)  # dies before anything was copied
    with pytest.raises(RuntimeError):
        databases.migrate(a.tenant, "silo", PASSWORD)
    assert databases.recorded(a.tenant) == (current, "silo", None)
    with login(databases, current) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("INSERT INTO customers (tenant_id, id, name) VALUES (%s, 77, 'lost?')", (a.tenant,))
    monkeypatch.undo()
    target = databases.migrate(a.tenant, "silo", PASSWORD)
    assert databases.checksums(target) == expected


def test_an_abandoned_move_removes_its_partial_copy_and_keeps_the_source(
    databases: TenantDatabases, postgres: LocalPostgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, _ = tenant_pair(databases, "pooled")
    expected = databases.checksums(a)

    def crash(*_: object) -> None:
        raise RuntimeError("operator killed")

    monkeypatch.setattr(databases.moves, "copy", crash)  # the silo database exists, nothing copied yet
    with pytest.raises(RuntimeError):
        databases.migrate(a.tenant, "silo", PASSWORD)
    monkeypatch.undo()
    silo = databases.placement_for(a.tenant, "silo")
    assert databases.recorded(a.tenant) == (a, "silo", None)
    assert databases.abandon_move(a.tenant) == silo
    assert databases.recorded(a.tenant) == (a, None, None)
    with psycopg.connect(postgres.dsn) as conn:
        assert conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (silo.database,)).fetchone() is None
    databases.set_access(a, Access.FULL)  # the source is writable again
    with login(databases, a) as conn:
        conn.execute("INSERT INTO customers (tenant_id, id, name) VALUES (%s, 78, 'kept')", (a.tenant,))
    assert databases.checksums(a)["customers"].rows == expected["customers"].rows + 1
    assert databases.abandon_move(a.tenant) is None  # nothing under way: nothing to do
    databases.remove(a)
    databases.drop_role(a.tenant)  # nothing of the role is left anywhere: it can be dropped


def test_provisioning_is_idempotent_and_remove_leaves_nothing(
    databases: TenantDatabases, postgres: LocalPostgres
) -> None:
    for mode in MODES:
        tenant = fresh("idem")
        first = databases.provision(tenant, mode, PASSWORD)
        assert databases.provision(tenant, mode, PASSWORD) == first
        assert databases.provision(tenant, "silo" if mode != "silo" else "pooled", PASSWORD) == first  # no move
        databases.remove(first)
        databases.remove(first)
        databases.drop_role(tenant)
        databases.forget(tenant)
        with psycopg.connect(postgres.dsn) as conn:
            assert conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (first.role,)).fetchone() is None
            assert conn.execute("SELECT count(*) FROM paybill.owned WHERE name = %s", (first.role,)).fetchone() == (0,)
            if mode == "silo":
                assert (
                    conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (first.database,)).fetchone() is None
                )
        assert databases.recorded(tenant) == (None, None, None)


def test_a_dead_server_is_a_clear_error_without_secrets() -> None:
    dbs = TenantDatabases("postgresql://postgres:s3cret@127.0.0.1:9/postgres")
    with pytest.raises(DatabaseUnavailable) as caught:
        dbs.provision("x", "pooled", PASSWORD)
    assert "s3cret" not in str(caught.value) and PASSWORD not in str(caught.value)


def test_data_retained_under_a_name_belongs_to_the_tenant_that_kept_it(databases: TenantDatabases) -> None:
    name = fresh("owner")
    databases.claim_tenant(name, "uid-1")
    databases.claim_tenant(name, "uid-2")  # the Tenant object recreated (a restore, a re-apply): it carries on
    databases.retain_tenant(name)  # offboarded with deletionPolicy retain
    assert databases.retained_by(name) == "uid-2"
    databases.claim_tenant(name, "uid-2")  # the same Tenant again: fine
    with pytest.raises(NameConflict, match="earlier Tenant"):
        databases.claim_tenant(name, "uid-3")  # a new Tenant of the same name never gets the kept data
    databases.forget(name)  # the data removed: the name is free
    databases.claim_tenant(name, "uid-3")
    assert databases.retained_by(name) is None


@pytest.mark.parametrize("isolation", ["bridge", "silo"])
def test_row_security_turned_on_for_an_agent_never_hides_the_tenants_own_rows_from_it(
    databases: TenantDatabases, isolation: str
) -> None:
    """Found by an outsider: an AgentPolicy's install turns row security on for its tables; in a bridge or silo
    schema the tenant's role had no policy of its own, so it read nothing and could write nothing."""
    placement = databases.provision(fresh("rls"), isolation, PASSWORD)
    databases.set_access(placement, Access.FULL)
    with login(databases, placement) as conn:
        conn.execute("INSERT INTO customers (tenant_id, id, name) VALUES (%s, 1, 'mine')", (placement.tenant,))
    with databases.session(placement.database) as conn:  # what an agent policy's install does to the table
        conn.execute(
            sql.SQL("ALTER TABLE {} ENABLE ROW LEVEL SECURITY").format(sql.Identifier(placement.schema, "customers"))
        )
    with login(databases, placement) as conn:
        assert conn.execute("SELECT name FROM customers").fetchall() == [("mine",)]
        conn.execute("INSERT INTO customers (tenant_id, id, name) VALUES (%s, 2, 'more')", (placement.tenant,))
    databases.remove(placement)
    databases.drop_role(placement.tenant)
