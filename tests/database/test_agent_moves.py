"""An agent's writes while its tenant's data moves between isolation models (outsider's finding V2), on a real
PostgreSQL server: from the first copy to the cut-over the agent's writes are refused (its reads go on), a write
begun before the move never commits after it, after the cut-over the agent writes where the data is now and what
it wrote survives the removal of the source, and a rolled-back move gives the agent its writes back on the source."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import psycopg
import pytest
from psycopg import sql

from paybill.api.agentpolicy import AgentPolicySpec
from paybill.api.tenant import Access
from paybill.database import Placement, TenantDatabases
from paybill.database.agents.guard import ExecutionGuard, Outcome
from paybill.database.agents.install import engine_for, install

from .conftest import fresh

PASSWORD = "tenant-pw"
AGENT_PASSWORD = "agent-pw"
PRINCIPAL = "agent:support-bot"
POLICY = AgentPolicySpec.model_validate(
    {
        "subjects": [{"serviceAccount": "tenant-agent", "agent": PRINCIPAL}],
        "rules": [
            {"id": "read-orders", "effect": "allow", "actions": ["select"], "tables": ["orders"]},
            {
                "id": "fix-status",
                "effect": "allow",
                "actions": ["update"],
                "tables": ["orders"],
                "columns": ["status"],
                "requireWhere": True,
            },
        ],
    }
)
NAMESPACE_PREFIX = "tenant-"
MOVES = [("pooled", "silo"), ("silo", "bridge"), ("bridge", "pooled")]


def tenant_with_agent(databases: TenantDatabases, isolation: str) -> Placement:
    """A tenant with one customer and orders 101 and 102 ('open'), and its agent installed with full access."""
    placement = databases.provision(fresh(f"moving-{isolation}"), isolation, PASSWORD)
    databases.set_access(placement, Access.FULL)
    with tenant_login(databases, placement) as conn:
        conn.execute("INSERT INTO customers (tenant_id, id, name) VALUES (%s, 1, 'c')", (placement.tenant,))
        for order in (101, 102):
            conn.execute(
                "INSERT INTO orders (tenant_id, id, customer_id, status, total) VALUES (%s, %s, 1, 'open', 5)",
                (placement.tenant, order),
            )
    install_agent(databases, placement)
    return placement


def install_agent(databases: TenantDatabases, placement: Placement, previous_database: str | None = None) -> str:
    namespace = NAMESPACE_PREFIX + placement.tenant
    return install(
        databases, placement, "support", namespace, POLICY, AGENT_PASSWORD, Access.FULL, previous_database
    ).role


def tenant_login(databases: TenantDatabases, placement: Placement) -> psycopg.Connection:
    return psycopg.connect(
        databases.dsn(placement.database, user=placement.role, password=PASSWORD), autocommit=True, connect_timeout=5
    )


def agent_login(databases: TenantDatabases, placement: Placement, **options: object) -> psycopg.Connection:
    role = databases.agent_role(placement.tenant, NAMESPACE_PREFIX + placement.tenant, "support")
    uri = databases.login_fields(role, AGENT_PASSWORD, placement.database, placement.schema)["uri"]
    return psycopg.connect(uri, autocommit=True, connect_timeout=5, **options)


@pytest.fixture
def guard_at(databases: TenantDatabases) -> Iterator[Callable[[Placement], ExecutionGuard]]:
    """The execution guard an AgentWorkflow's steps run through, logged in as the agent at a placement."""
    guards: list[ExecutionGuard] = []

    def guard(placement: Placement) -> ExecutionGuard:
        role = databases.agent_role(placement.tenant, NAMESPACE_PREFIX + placement.tenant, "support")
        uri = databases.login_fields(role, AGENT_PASSWORD, placement.database, placement.schema)["uri"]
        engine = engine_for(databases, placement, POLICY, Access.FULL)
        guards.append(ExecutionGuard(engine, uri, PRINCIPAL, placement.tenant))
        return guards[-1]

    yield guard
    for opened in guards:
        opened.close()


def fix_status(guard: ExecutionGuard, order: int, status: str) -> Outcome:
    return guard.execute(f"UPDATE orders SET status = '{status}' WHERE id = {order}")


def status_of(databases: TenantDatabases, placement: Placement, order: int) -> str | None:
    with databases.session(placement.database) as conn:
        row = conn.execute(
            f"SELECT status FROM {placement.schema}.orders WHERE tenant_id = %s AND id = %s", (placement.tenant, order)
        ).fetchone()
    return None if row is None else str(row[0])


def held(outcome: Outcome) -> bool:
    """The step reports the refusal and why: never a success, nothing written."""
    return not outcome.ok and outcome.rows_affected == 0 and [r.code for r in outcome.reasons] == ["writes_held"]


@pytest.mark.parametrize(("start", "goal"), MOVES)
def test_an_agent_write_during_the_copy_is_refused_and_nothing_is_lost(
    databases: TenantDatabases,
    guard_at: Callable[[Placement], ExecutionGuard],
    monkeypatch: pytest.MonkeyPatch,
    start: str,
    goal: str,
) -> None:
    source = tenant_with_agent(databases, start)
    agent = guard_at(source)
    assert fix_status(agent, 101, "before").ok  # the agent writes before the move
    copy = databases.moves.copy
    during: list[Outcome] = []

    def copy_while_the_agent_writes(from_: Placement, to: Placement) -> None:
        during.append(fix_status(agent, 101, "during"))  # the workflow's session, open since before the move
        install_agent(databases, source)  # its policy applied again meanwhile: the hold stays
        during.append(fix_status(guard_at(source), 102, "during"))
        during.append(agent.execute("SELECT id, status FROM orders ORDER BY id"))
        copy(from_, to)

    monkeypatch.setattr(databases.moves, "copy", copy_while_the_agent_writes)
    target = databases.migrate(source.tenant, goal, PASSWORD)
    assert held(during[0]) and held(during[1]), during
    assert during[2].ok and during[2].rows == [(101, "before"), (102, "open")]  # reads go on
    assert databases.checksums(target) == databases.checksums(source)
    assert (status_of(databases, target, 101), status_of(databases, target, 102)) == ("before", "open")


@pytest.mark.parametrize(("start", "goal"), MOVES)
def test_a_write_begun_before_the_move_never_commits_after_it(
    databases: TenantDatabases, start: str, goal: str
) -> None:
    source = tenant_with_agent(databases, start)
    with agent_login(databases, source) as conn:
        conn.autocommit = False
        conn.execute("UPDATE orders SET status = 'in flight' WHERE id = 101")  # not committed yet
        target = databases.migrate(source.tenant, goal, PASSWORD)
        with pytest.raises(psycopg.OperationalError):
            conn.commit()  # ended by the hold: it can only fail, never land on the source after the copy
    databases.set_access(target, Access.FULL)
    databases.finish_move(source.tenant)
    assert status_of(databases, target, 101) == "open"


@pytest.mark.parametrize(("start", "goal"), MOVES)
def test_after_the_move_an_agent_writes_on_the_target_and_its_write_survives_finish(
    databases: TenantDatabases, guard_at: Callable[[Placement], ExecutionGuard], start: str, goal: str
) -> None:
    source = tenant_with_agent(databases, start)
    at_source = guard_at(source)
    target = databases.migrate(source.tenant, goal, PASSWORD)  # cut over: the source is kept until finish
    databases.set_access(target, Access.FULL)
    assert held(fix_status(at_source, 101, "lost?"))  # the old source takes no write
    with agent_login(databases, source) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("UPDATE orders SET status = 'lost?' WHERE id = 102")

    role = install_agent(databases, target)  # what the Tenant's FinishMove does before the source goes
    written = fix_status(guard_at(target), 101, "after")
    assert written.ok and written.rows_affected == 1
    assert databases.finish_move(source.tenant) == source
    assert status_of(databases, target, 101) == "after"
    with agent_login(databases, target) as conn:
        assert conn.execute("UPDATE orders SET status = 'again' WHERE id = 102").rowcount == 1
    assert status_of(databases, target, 102) == "again"
    if source.pooled:  # the shared source stays: nothing of the agent's is granted there any more
        with databases.session(source.database) as conn:
            granted = conn.execute(
                "SELECT count(*) FROM information_schema.role_table_grants WHERE grantee = %s", (role,)
            ).fetchone()
        assert granted == (0,)


@pytest.mark.parametrize(("start", "goal"), MOVES)
def test_a_rolled_back_move_gives_the_agent_its_writes_back_on_the_source(
    databases: TenantDatabases,
    guard_at: Callable[[Placement], ExecutionGuard],
    monkeypatch: pytest.MonkeyPatch,
    start: str,
    goal: str,
) -> None:
    source = tenant_with_agent(databases, start)

    def killed(*_: object) -> None:
        raise RuntimeError("operator killed mid-copy")

    monkeypatch.setattr(databases.moves, "copy", killed)
    with pytest.raises(RuntimeError):
        databases.migrate(source.tenant, goal, PASSWORD)
    monkeypatch.undo()
    assert held(fix_status(guard_at(source), 101, "held"))
    assert databases.abandon_move(source.tenant) == databases.placement_for(source.tenant, goal)
    databases.set_access(source, Access.FULL)  # the reconcile after AbandonMove: the source is writable again
    written = fix_status(guard_at(source), 101, "rolled back")
    assert written.ok and written.rows_affected == 1
    assert status_of(databases, source, 101) == "rolled back"


def test_an_agent_follows_its_tenants_read_only_access_at_once(
    databases: TenantDatabases, guard_at: Callable[[Placement], ExecutionGuard]
) -> None:
    placement = tenant_with_agent(databases, "pooled")
    databases.set_access(placement, Access.READ_ONLY)  # before its policy is installed again for the new access
    assert held(fix_status(guard_at(placement), 101, "read-only"))
    databases.set_access(placement, Access.FULL)
    assert fix_status(guard_at(placement), 101, "full").ok
    assert status_of(databases, placement, 101) == "full"


def test_a_write_refused_while_the_agent_may_write_elsewhere_is_not_called_held(
    databases: TenantDatabases, guard_at: Callable[[Placement], ExecutionGuard]
) -> None:
    placement = tenant_with_agent(databases, "bridge")
    role = databases.agent_role(placement.tenant, NAMESPACE_PREFIX + placement.tenant, "support")
    with databases.session(placement.database) as conn:  # not a hold: one privilege gone, another still there
        agent = sql.Identifier(role)
        conn.execute(sql.SQL("REVOKE UPDATE ON {} FROM {}").format(sql.Identifier(placement.schema, "orders"), agent))
        conn.execute(sql.SQL("GRANT DELETE ON {} TO {}").format(sql.Identifier(placement.schema, "customers"), agent))
    outcome = fix_status(guard_at(placement), 101, "refused")
    assert not outcome.ok and [r.code for r in outcome.reasons] == ["database_denied"]


def test_an_agent_dropped_while_its_writes_are_held_leaves_no_saved_privileges(databases: TenantDatabases) -> None:
    from paybill.database.agents.install import uninstall

    placement = tenant_with_agent(databases, "bridge")
    role = databases.agent_role(placement.tenant, NAMESPACE_PREFIX + placement.tenant, "support")
    databases.set_access(placement, Access.READ_ONLY)  # its writes are saved and revoked
    saved = "SELECT count(*) FROM paybill.held_agent_writes WHERE role = %s"
    with databases.session() as conn:
        assert conn.execute(saved, (role,)).fetchone() == (1,)
    assert uninstall(databases, "support", NAMESPACE_PREFIX + placement.tenant, placement.tenant, placement.database)
    with databases.session() as conn:
        assert conn.execute(saved, (role,)).fetchone() == (0,)
