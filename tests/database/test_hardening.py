"""Attacks on the database side of tenant isolation, on a real PostgreSQL server with scram-sha-256 logins:
passwords that must be refused, the operator's database and locks out of tenants' reach, side channels of the
shared databases closed, no tenant or policy name in any catalog a tenant can read, private backups."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from paybill.api.agentpolicy import AgentPolicySpec
from paybill.api.tenant import Access
from paybill.audit import AuditLog
from paybill.database import NameConflict, Placement, TenantDatabases, UnsafeBackupDirectory
from paybill.database.agents.install import install
from paybill.database.ownership import Found, Record, Verdict, decide, opaque_name
from paybill.database.server import LocalPostgres
from paybill.handlers.settings import backup_directory

from .conftest import fresh

PASSWORD = "tenant-pw"
AGENT_PASSWORD = "agent-pw"
POLICY = AgentPolicySpec.model_validate(
    {
        "subjects": [{"serviceAccount": "tenant-agent", "agent": "agent:bot"}],
        "rules": [{"id": "read-orders", "effect": "allow", "actions": ["select"], "tables": ["orders"]}],
    }
)
OLD_ADVISORY_KEYS = ("paybill-audit", "paybill-pooled", "paybill-control")


def login(dbs: TenantDatabases, role: str, password: str, database: str) -> psycopg.Connection:
    return psycopg.connect(dbs.dsn(database, user=role, password=password), autocommit=True, connect_timeout=3)


def tenant(dbs: TenantDatabases, isolation: str, name: str | None = None) -> Placement:
    placement = dbs.provision(name or fresh(f"victim-{isolation}"), isolation, PASSWORD)
    dbs.set_access(placement, Access.FULL)
    return placement


def agent(dbs: TenantDatabases, placement: Placement, policy: str = "secret-policy") -> str:
    return install(dbs, placement, policy, f"tenant-{placement.tenant}", POLICY, AGENT_PASSWORD, Access.FULL).role


# --- finding 14: every login needs the right password ---------------------------------------------------------


@pytest.mark.parametrize("isolation", ["pooled", "bridge", "silo"])
def test_wrong_passwords_are_refused_for_tenant_and_agent_roles(databases: TenantDatabases, isolation: str) -> None:
    placement = tenant(databases, isolation)
    role = agent(databases, placement)
    for user, right in ((placement.role, PASSWORD), (role, AGENT_PASSWORD)):
        login(databases, user, right, placement.database).close()
        for wrong in ("wrong", "", right.upper()):
            with pytest.raises(psycopg.OperationalError, match=r"password authentication failed|no password"):
                login(databases, user, wrong, placement.database)


def test_a_suspended_tenant_cannot_log_in_with_its_right_password(databases: TenantDatabases) -> None:
    placement = tenant(databases, "pooled")
    role = agent(databases, placement)
    databases.set_access(placement, Access.NONE)
    agent_placement_access = install(
        databases, placement, "secret-policy", f"tenant-{placement.tenant}", POLICY, AGENT_PASSWORD, Access.NONE
    )
    for user, password in ((placement.role, PASSWORD), (agent_placement_access.role, AGENT_PASSWORD)):
        with pytest.raises(psycopg.OperationalError, match="not permitted to log in"):
            login(databases, user, password, placement.database)
    assert agent_placement_access.role == role


def test_suspension_locks_the_agents_out_at_once_whatever_their_policy_install_does(
    databases: TenantDatabases,
) -> None:
    """Outsider's finding: suspension switched an agent's login off only inside its policy's reinstall, whose row
    security DDL can wait on a tenant's lock (and fail): the agent of a tenant suspended for non-payment kept its
    login and its open session. Now suspension itself ends both; an install that still saw the tenant active
    gives no login back."""
    placement = tenant(databases, "pooled")
    role = agent(databases, placement)
    session = login(databases, role, AGENT_PASSWORD, placement.database)
    databases.set_access(placement, Access.NONE)  # no reinstall of the policy at all
    with pytest.raises(psycopg.OperationalError):
        session.execute("SELECT 1")
    with pytest.raises(psycopg.OperationalError, match="not permitted to log in"):
        login(databases, role, AGENT_PASSWORD, placement.database)
    # a reinstall that read the tenant as active before the suspension (access FULL): still no login
    install(databases, placement, "secret-policy", f"tenant-{placement.tenant}", POLICY, AGENT_PASSWORD, Access.FULL)
    with pytest.raises(psycopg.OperationalError, match="not permitted to log in"):
        login(databases, role, AGENT_PASSWORD, placement.database)
    databases.set_access(placement, Access.FULL)  # resumed: the next install gives the agent its login back
    install(databases, placement, "secret-policy", f"tenant-{placement.tenant}", POLICY, AGENT_PASSWORD, Access.FULL)
    login(databases, role, AGENT_PASSWORD, placement.database).close()


def test_going_read_only_ends_a_transaction_whose_snapshot_still_says_writable(databases: TenantDatabases) -> None:
    """Outsider's finding: read-only is a flag the pooled row policies read through the transaction's snapshot;
    a REPEATABLE READ transaction opened while the tenant was paid went on writing after it turned read-only."""
    placement = tenant(databases, "pooled")
    session = login(databases, placement.role, PASSWORD, placement.database)
    session.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    session.execute(sql.SQL("SELECT count(*) FROM {}.orders").format(sql.Identifier(placement.schema)))
    idle = login(databases, placement.role, PASSWORD, placement.database)  # outside a transaction: kept
    databases.set_access(placement, Access.READ_ONLY)
    with pytest.raises(psycopg.OperationalError):
        session.execute(
            sql.SQL("INSERT INTO {}.orders (id, status) VALUES (1, 'late')").format(sql.Identifier(placement.schema))
        )
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        idle.execute(
            sql.SQL("INSERT INTO {}.orders (id, status) VALUES (2, 'late')").format(sql.Identifier(placement.schema))
        )
    idle.close()


def test_a_database_created_before_a_crash_is_closed_to_public_when_claimed_again(databases: TenantDatabases) -> None:
    """Outsider's finding: REVOKE ALL ON DATABASE ... FROM PUBLIC ran only right after CREATE DATABASE; an operator
    killed in between left the database open to every role, and the next claim (recording it) never revoked."""
    name = fresh("crashed").replace("-", "_")
    owner = "Tenant crashed"
    with databases.session() as conn:
        databases.control.prepare(conn)
        databases.control.remember(conn, "database", name, owner, None)  # claimed, then CREATE DATABASE, then killed
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    databases.claims.claim_database(name, owner)
    with databases.session() as conn:
        public = conn.execute("SELECT has_database_privilege('public', %s, 'CONNECT')", (name,)).fetchone()
    assert public == (False,)


def test_a_rotated_password_invalidates_the_old_one(databases: TenantDatabases) -> None:
    placement = tenant(databases, "bridge")
    databases.ensure(placement, "rotated-pw")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        login(databases, placement.role, PASSWORD, placement.database)
    login(databases, placement.role, "rotated-pw", placement.database).close()
    role = agent(databases, placement)
    install(databases, placement, "secret-policy", f"tenant-{placement.tenant}", POLICY, "agent-rotated", Access.FULL)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        login(databases, role, AGENT_PASSWORD, placement.database)
    login(databases, role, "agent-rotated", placement.database).close()


# --- finding 9: the operator's database and its locks are out of tenants' reach ---------------------------------


def test_tenant_and_agent_roles_cannot_connect_to_the_operators_database(databases: TenantDatabases) -> None:
    placement = tenant(databases, "pooled")
    role = agent(databases, placement)
    operator_database = psycopg.conninfo.conninfo_to_dict(databases.admin_dsn)["dbname"]
    for user, password in ((placement.role, PASSWORD), (role, AGENT_PASSWORD)):
        for database in {str(operator_database), "postgres", "template1"}:
            with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
                login(databases, user, password, database)


def within(seconds: float, work: Callable[[], object]) -> float:
    """Run `work` in a thread; fail unless it finishes within `seconds`. Returns how long it took."""
    failure: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as exc:
            failure.append(exc)

    started = time.monotonic()
    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"still blocked after {seconds}s"
    if failure:
        raise failure[0]
    return time.monotonic() - started


def test_the_old_advisory_keys_held_elsewhere_delay_nothing(
    databases: TenantDatabases, postgres: LocalPostgres
) -> None:
    """Whoever holds the keys the operator used to serialize on (a tenant could, before), suspension,
    provisioning and the audit log go on: the operator serializes on locks only it can take."""
    victim = tenant(databases, "pooled")
    with login(databases, victim.role, PASSWORD, victim.database) as conn:  # a tenant cannot even try
        for key in OLD_ADVISORY_KEYS:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (key,))
    holders = [
        psycopg.connect(postgres.dsn, dbname=database, autocommit=True)
        for database in ("postgres", "paybill_pooled", "paybill_bridge")
    ]
    try:
        for holder in holders:
            for key in (*OLD_ADVISORY_KEYS, "paybill-migrate:app"):
                holder.execute("SELECT pg_advisory_lock(hashtext(%s))", (key,))
        cold = TenantDatabases(postgres.dsn, backup_dir=databases.backup_dir)  # nothing set up in this process yet
        audit = AuditLog(cold.connect)
        try:
            within(15, lambda: cold.set_access(victim, Access.NONE))
            within(15, lambda: audit.append("Tenant", victim.tenant, "suspend", {}))
            within(30, lambda: cold.provision(fresh("other"), "pooled", PASSWORD))
            within(30, lambda: cold.provision(fresh("other"), "bridge", PASSWORD))
        finally:
            cold.close()
    finally:
        for holder in holders:
            holder.close()
    with pytest.raises(psycopg.OperationalError, match="not permitted to log in"):
        login(databases, victim.role, PASSWORD, victim.database)


# --- finding 10: shared databases give a tenant its data and nothing more -------------------------------------

SIDE_CHANNELS = (
    "SELECT lo_from_bytea(0, 'x')",
    "SELECT lo_create(0)",
    "SELECT pg_notify('paybill', 'x')",
    "SELECT pg_advisory_lock(1)",
    "SELECT pg_advisory_xact_lock(1)",
    "SELECT pg_try_advisory_lock(1)",
    "SELECT pg_advisory_lock_shared(1)",
    "DO $$BEGIN PERFORM 1; END$$",
    "SELECT query_to_xml('SELECT 1', true, false, '')",
    "SELECT table_to_xml('pg_catalog.pg_class', true, false, '')",
    "SELECT query_to_xmlschema('SELECT 1', true, false, '')",
    "CREATE TEMP TABLE scratch (i int)",
    "SELECT * FROM pg_policies",
    "SELECT * FROM pg_catalog.pg_policy",
    "SELECT * FROM pg_stat_activity",
    "SELECT * FROM pg_catalog.pg_stat_get_activity(NULL)",
    "SELECT * FROM pg_locks",
    "SELECT pg_blocking_pids(pg_backend_pid())",
    "CREATE TABLE public.mine (i int)",
)
# No other tenant's row counts or write activity either.
STATISTICS = (
    "SELECT relname, n_live_tup, n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables",
    "SELECT * FROM pg_stat_all_tables",
    "SELECT * FROM pg_stat_xact_user_tables",
    "SELECT * FROM pg_stat_user_indexes",
    "SELECT * FROM pg_stat_all_indexes",
    "SELECT * FROM pg_statio_user_tables",
    "SELECT * FROM pg_statio_all_indexes",
    "SELECT * FROM pg_statio_user_sequences",
    "SELECT * FROM pg_stat_database",
    "SELECT pg_stat_get_live_tuples('paybill.tenant_roles'::regclass)",
    "SELECT pg_stat_get_tuples_inserted('orders'::regclass)",
    "SELECT pg_stat_get_db_tuples_inserted(1)",
)


@pytest.mark.parametrize("isolation", ["pooled", "bridge"])
def test_shared_databases_refuse_side_channels_to_tenants_and_agents(
    databases: TenantDatabases, isolation: str
) -> None:
    placement = tenant(databases, isolation)
    role = agent(databases, placement)
    for user, password in ((placement.role, PASSWORD), (role, AGENT_PASSWORD)):
        with login(databases, user, password, placement.database) as conn:
            for statement in SIDE_CHANNELS + STATISTICS:
                if "tenant_roles" in statement and isolation == "bridge":  # a pooled table only
                    continue
                with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
                    conn.execute(statement)
            assert conn.execute("SELECT count(*) FROM orders").fetchone() == (0,)  # its data still works


READABLE_NAMES = (
    "SELECT rolname FROM pg_roles",
    "SELECT datname FROM pg_database",
    "SELECT nspname FROM pg_namespace",
    "SELECT usename FROM pg_user",
    "SELECT array_to_string(setconfig, ',') FROM pg_db_role_setting",
    "SELECT description FROM pg_shdescription",
    "SELECT description FROM pg_description",
    "SELECT relname FROM pg_class",
    "SELECT tenant FROM paybill.tenant_roles",
)


@pytest.mark.parametrize("isolation", ["pooled", "bridge", "silo"])
def test_no_catalog_a_tenant_or_agent_can_read_names_a_tenant_or_a_policy(
    databases: TenantDatabases, isolation: str
) -> None:
    neighbours = {mode: tenant(databases, mode, fresh(f"neighbour-{mode}")) for mode in ("pooled", "bridge", "silo")}
    for mode, neighbour in neighbours.items():
        agent(databases, neighbour, f"hidden-policy-{mode}")
    placement = tenant(databases, isolation, fresh(f"victim-{isolation}"))
    role = agent(databases, placement, "my-policy")
    secrets = [n.tenant for n in neighbours.values()] + [f"hidden-policy-{m}" for m in neighbours] + ["my-policy"]
    for user, password in ((placement.role, PASSWORD), (role, AGENT_PASSWORD)):
        with login(databases, user, password, placement.database) as conn:
            seen = []
            for query in READABLE_NAMES:
                try:
                    with conn.transaction():
                        seen += [str(value) for (value,) in conn.execute(query) if value is not None]
                except (psycopg.errors.InsufficientPrivilege, psycopg.errors.UndefinedTable):
                    continue
            text = " ".join(seen).lower()
            for name in secrets:
                for spelling in {name, name.replace("-", "_")}:
                    assert spelling not in text, f"{user} can read {spelling!r}"


# --- finding 7: names are injective, and nothing Paybill did not create is adopted -----------------------------


def test_names_that_collided_under_the_old_mapping_are_distinct(databases: TenantDatabases) -> None:
    corp, acme_corp = fresh("corp"), None
    acme_corp = f"acme-{corp}"
    first, second = tenant(databases, "pooled", corp), tenant(databases, "pooled", acme_corp)
    attacker = agent(databases, first, "support-acme")
    victim = agent(databases, second, "support")
    assert attacker != victim and first.role != second.role
    assert databases.placement_for("a-b", "bridge").schema != databases.placement_for("a.b", "bridge").schema
    assert databases.placement_for("a-b", "silo").database != databases.placement_for("a_b", "silo").database


def test_ownership_decisions() -> None:
    me, other = "Tenant a", "Tenant b"
    assert decide("role", "t_1", me, None, None) == Verdict.CREATE
    assert decide("role", "t_1", me, Record(me, 7), None) == Verdict.CREATE  # dropped by hand: made again
    assert decide("role", "t_1", me, Record(me, 7), Found(7)) == Verdict.USE
    assert decide("database", "t_1", me, Record(me, None), Found(9, owned_by_operator=True)) == Verdict.RECORD
    refused = [
        (me, None, Found(7)),
        (me, Record(me, 7), Found(8)),
        (me, Record(me, None), Found(9)),
        (me, Record(other, 7), Found(7)),
        (me, Record(other, 7), None),
    ]
    for owner, record, found in refused:
        with pytest.raises(NameConflict):
            decide("role", "t_1", owner, record, found)
    key = b"k"
    assert opaque_name(key, "a_", "a-b", "c") != opaque_name(key, "a_", "a", "b-c")  # no separator ambiguity
    assert opaque_name(key, "a_", "x") != opaque_name(b"other key", "a_", "x")
    assert len(opaque_name(key, "a_", "x" * 300)) <= 63


@pytest.mark.parametrize("isolation", ["pooled", "bridge", "silo"])
def test_a_role_schema_or_database_paybill_did_not_create_is_never_adopted(
    databases: TenantDatabases, postgres: LocalPostgres, isolation: str
) -> None:
    name = fresh("squatted")
    would_be = databases.placement_for(name, isolation)
    with psycopg.connect(postgres.dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'squatter'").format(sql.Identifier(would_be.role)))
    with pytest.raises(NameConflict, match=f"role {would_be.role} exists and was not created by Paybill"):
        databases.provision(name, isolation, PASSWORD)
    with psycopg.connect(postgres.dsn, autocommit=True) as admin:  # the squatter's role is left as it was
        assert admin.execute(
            "SELECT rolpassword LIKE 'SCRAM%%', pg_has_role(%s, 'paybill_pooled_tenants', "
            "'MEMBER') FROM pg_authid WHERE rolname = %s",
            (would_be.role, would_be.role),
        ).fetchone() == (True, False)
        admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(would_be.role)))
    if isolation == "silo":
        with psycopg.connect(postgres.dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(would_be.database)))
        with pytest.raises(NameConflict, match=f"database {would_be.database} exists and was not created"):
            databases.provision(name, isolation, PASSWORD)
    if isolation == "bridge":
        with psycopg.connect(postgres.dsn, dbname="paybill_bridge", autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(would_be.schema)))
        with pytest.raises(NameConflict, match=f"schema {would_be.schema} exists and was not created"):
            databases.provision(name, isolation, PASSWORD)


def test_an_agent_role_paybill_did_not_create_is_never_adopted(
    databases: TenantDatabases, postgres: LocalPostgres
) -> None:
    placement = tenant(databases, "pooled")
    would_be = databases.agent_role(placement.tenant, f"tenant-{placement.tenant}", "support")
    with psycopg.connect(postgres.dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'squatter'").format(sql.Identifier(would_be)))
        before = admin.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (would_be,)).fetchone()
    with pytest.raises(NameConflict, match=f"role {would_be} exists and was not created by Paybill"):
        agent(databases, placement, "support")
    with psycopg.connect(postgres.dsn, dbname="paybill_pooled", autocommit=True) as admin:  # left as it was
        assert admin.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (would_be,)).fetchone() == before
        assert admin.execute(
            "SELECT has_table_privilege(%s, 'app.orders', 'SELECT'), has_database_privilege("
            "%s, 'paybill_pooled', 'CONNECT')",
            (would_be, would_be),
        ).fetchone() == (False, False)


# --- finding 12: backups are private -----------------------------------------------------------------------------


def test_backups_are_private_from_the_first_byte(databases: TenantDatabases, tmp_path: Path) -> None:
    placement = tenant(databases, "pooled")
    old = os.umask(0o022)
    try:
        backup = databases.backup(placement, "private")
    finally:
        os.umask(old)
    assert databases.backup_dir is not None
    assert databases.backup_dir.stat().st_mode & 0o777 == 0o700
    assert backup.path.stat().st_mode & 0o777 == 0o600
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    with pytest.raises(UnsafeBackupDirectory, match="readable by others"):
        TenantDatabases(databases.admin_dsn, backup_dir=shared).backup(placement, "leaky")
    assert not list(shared.iterdir())


def test_the_default_backup_directory_is_under_the_operators_state_directory(tmp_path: Path) -> None:
    state = tmp_path / "state"
    assert backup_directory({"PAYBILL_STATE_DIR": str(state)}) == state / "backups"
    assert backup_directory({"PAYBILL_BACKUP_DIR": "/srv/backups"}) == Path("/srv/backups")
    default = backup_directory({"HOME": str(tmp_path)})
    assert default.is_relative_to(tmp_path) and "tmp/paybill-backups" not in str(default)


def test_the_pgserver_fallback_requires_passwords_too(tmp_path: Path) -> None:
    pytest.importorskip("pgserver")
    server = LocalPostgres(tmp_path / "fallback")
    dsn = server._start_pgserver()
    try:
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT current_user").fetchone() == ("postgres",)
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(psycopg.conninfo.make_conninfo(dsn, password="wrong"), connect_timeout=3)
        assert (tmp_path / "fallback" / "superuser.password").stat().st_mode & 0o777 == 0o600
    finally:
        server.stop()
