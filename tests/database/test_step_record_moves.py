"""Workflow step records follow their tenant's data between isolation models (issue 16 item 5), on a real PostgreSQL
server: a step recorded at the source refuses to run again at the destination (step_already_done), the agent reads
its own records there as before, and no other tenant's records (sharing the source's database) go with them."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import psycopg
import pytest
from psycopg import sql

from paybill.api.agentworkflow import AgentWorkflowSpec
from paybill.api.tenant import Access
from paybill.database import Placement, TenantDatabases
from paybill.database.agents.guard import ExecutionGuard
from paybill.database.agents.steps import SCHEMA, TABLE, StepKey, StepRecord
from paybill.database.ownership import NameConflict
from paybill.workflows.run import StepOutcome, run_steps

from .conftest import fresh
from .test_agent_moves import AGENT_PASSWORD, PASSWORD, PRINCIPAL, guard_at, install_agent, status_of, tenant_with_agent

__all__ = ["guard_at"]  # the fixture, used by name

MOVES = [("pooled", "silo"), ("silo", "bridge"), ("bridge", "pooled"), ("pooled", "bridge"), ("silo", "pooled")]
MARK = "UPDATE orders SET status = status || '+' WHERE id = 101"  # each run of it leaves a mark: twice shows


def records_of(databases: TenantDatabases, placement: Placement, role: str) -> list[tuple[str, int]]:
    """The records of `role` in `placement`'s database, read as the operator (none when there is no table)."""
    with databases.session(placement.database) as conn:
        if conn.execute("SELECT to_regclass(%s)", (f"{SCHEMA}.{TABLE}",)).fetchone() == (None,):
            return []
        query = sql.SQL("SELECT workflow, step FROM {} WHERE role = %s ORDER BY 1, 2")
        rows = conn.execute(query.format(sql.Identifier(SCHEMA, TABLE)), (role,)).fetchall()
    return [(str(workflow), int(step)) for workflow, step in rows]


def agent_role(databases: TenantDatabases, placement: Placement) -> str:
    return databases.agent_role(placement.tenant, f"tenant-{placement.tenant}", "support")


@pytest.mark.parametrize(("start", "goal"), MOVES)
def test_a_step_recorded_at_the_source_is_refused_as_done_at_the_destination(
    databases: TenantDatabases, guard_at: Callable[[Placement], ExecutionGuard], start: str, goal: str
) -> None:
    source = tenant_with_agent(databases, start)
    neighbour = tenant_with_agent(databases, start)  # shares the source's database unless it is a silo
    workflow, theirs = str(uuid.uuid4()), str(uuid.uuid4())
    done = guard_at(source).execute(MARK, [], StepKey(workflow, 0, "mark"))
    assert done.ok and done.rows_affected == 1
    assert guard_at(neighbour).execute(MARK, [], StepKey(theirs, 0, "mark")).ok

    # The run is interrupted here; the tenant moves; the run is taken up again where its data is now.
    target = databases.migrate(source.tenant, goal, PASSWORD)
    databases.set_access(target, Access.FULL)
    install_agent(databases, target)  # what the Tenant's FinishMove does before the source goes
    assert databases.finish_move(source.tenant) == source

    resumed = guard_at(target)
    assert resumed.recorded(workflow) == {0: StepRecord(0, "mark", 1, done.decision.plan_hash)}
    again = resumed.execute(MARK, [], StepKey(workflow, 0, "mark"))
    assert not again.ok and [r.code for r in again.reasons] == ["step_already_done"]
    assert status_of(databases, target, 101) == "open+"  # once, not twice
    assert resumed.execute(MARK, [], StepKey(workflow, 1, "mark again")).ok  # a step not done runs, and records
    assert records_of(databases, target, agent_role(databases, target)) == [(workflow, 0), (workflow, 1)]

    assert records_of(databases, target, agent_role(databases, neighbour)) == []  # never another tenant's
    assert guard_at(neighbour).recorded(theirs).keys() == {0}  # and theirs stay where their data is


class Crashed(Exception):
    """The operator gone right after a step committed, before it could write the step's audit record or status."""


def test_a_run_interrupted_before_a_move_resumes_after_it_with_the_first_step_not_done(
    databases: TenantDatabases, guard_at: Callable[[Placement], ExecutionGuard]
) -> None:
    source = tenant_with_agent(databases, "pooled")
    spec = AgentWorkflowSpec.model_validate(
        {
            "principal": PRINCIPAL,
            "policyRef": "support",
            "steps": [
                {"name": "mark", "kind": "mutation", "sql": MARK},
                {"name": "close", "kind": "mutation", "sql": "UPDATE orders SET status = 'closed' WHERE id = 102"},
            ],
        }
    )
    workflow = str(uuid.uuid4())

    def crash(outcome: StepOutcome) -> None:
        raise Crashed(outcome.name)

    with pytest.raises(Crashed, match="mark"):
        run_steps(spec, guard_at(source), crash, workflow)
    target = databases.migrate(source.tenant, "silo", PASSWORD)
    databases.set_access(target, Access.FULL)
    install_agent(databases, target)
    databases.finish_move(source.tenant)

    seen: list[StepOutcome] = []
    outcomes = run_steps(spec, guard_at(target), seen.append, workflow)  # the run taken up again, where the data is
    assert [(o.name, o.ok, o.resumed is not None) for o in outcomes] == [("mark", True, True), ("close", True, False)]
    assert (status_of(databases, target, 101), status_of(databases, target, 102)) == ("open+", "closed")


def test_a_records_table_at_the_destination_paybill_did_not_make_stops_the_move(
    databases: TenantDatabases, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tenant_with_agent(databases, "pooled")
    squatter = fresh("squatter").replace("-", "_")
    with databases.session() as conn:
        conn.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(squatter)))
    copy = databases.moves.copy

    def squat_then_copy(from_: Placement, to: Placement) -> None:
        with databases.session(to.database) as conn:  # a records schema someone else owns (they could empty it)
            conn.execute(
                sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(sql.Identifier(SCHEMA), sql.Identifier(squatter))
            )
        copy(from_, to)

    monkeypatch.setattr(databases.moves, "copy", squat_then_copy)
    try:
        with pytest.raises(NameConflict, match="is not Paybill's"):
            databases.migrate(source.tenant, "silo", PASSWORD)
        assert databases.control.recorded(source.tenant)[0] == source  # the source stays the tenant's
        assert databases.abandon_move(source.tenant) == databases.placement_for(source.tenant, "silo")
    finally:
        target = databases.placement_for(source.tenant, "silo")
        with databases.session() as conn:
            left = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (target.database,)).fetchone()
        if left:  # the move went through after all: the squatter's schema is still there
            with databases.session(target.database) as conn:
                conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(squatter)))
        with databases.session() as conn:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(squatter)))


def test_records_carried_twice_are_kept_once(
    databases: TenantDatabases, guard_at: Callable[[Placement], ExecutionGuard]
) -> None:
    source = tenant_with_agent(databases, "bridge")
    workflow = str(uuid.uuid4())
    assert guard_at(source).execute(MARK, [], StepKey(workflow, 0, "mark")).ok
    there = databases.migrate(source.tenant, "silo", PASSWORD)  # out and back: the bridge database kept its copy
    databases.set_access(there, Access.FULL)
    install_agent(databases, there)
    databases.finish_move(source.tenant)
    back = databases.migrate(source.tenant, "bridge", PASSWORD)
    databases.set_access(back, Access.FULL)
    install_agent(databases, back)
    databases.finish_move(source.tenant)
    assert records_of(databases, back, agent_role(databases, back)) == [(workflow, 0)]
    again = guard_at(back).execute(MARK, [], StepKey(workflow, 0, "mark"))
    assert [r.code for r in again.reasons] == ["step_already_done"]
    uri = databases.login_fields(agent_role(databases, back), AGENT_PASSWORD, back.database, back.schema)["uri"]
    with psycopg.connect(uri, autocommit=True) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(SCHEMA, TABLE)))  # still not the agent's to remove
