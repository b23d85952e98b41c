"""Run an AgentWorkflow's declared steps in order through the policy engine and the execution guard.

A step runs only if the engine admits it *and* it is the kind it was declared as (a query reads, a
mutation writes); the first step that is refused or fails stops the run, so later steps never run. Each
step commits on its own; a mutation commits with its completion record (database/agents/steps.py) in the same
transaction. A run interrupted anywhere (or taken up again after an approval) skips the mutations recorded, which
never run again, and runs every other step: a query changes nothing, and is read again so that its rows are in
the results.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..api.agentworkflow import AgentWorkflowSpec, StepKind
from ..policy.decision import Decision, Reason

if TYPE_CHECKING:  # the guard is the database side's; a run only calls it
    from ..database.agents.guard import ExecutionGuard
    from ..database.agents.steps import StepRecord

STATEMENTS = {StepKind.QUERY: ("select",), StepKind.MUTATION: ("insert", "update", "delete")}
RESULTS_BUDGET = 900 * 1024  # a Secret holds at most 1 MiB


@dataclass(frozen=True)
class StepOutcome:
    name: str
    decision: Decision
    executed: bool = False
    reasons: tuple[Reason, ...] = ()
    columns: tuple[str, ...] = ()
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    rows_affected: int = 0
    error: str | None = None  # the database's full message: the audit log only
    resumed: StepRecord | None = None  # done in an interrupted run (its record): not run again
    replay: dict[str, Any] = field(default_factory=dict)  # what the audit needs to decide it again (audit/review.py)

    @property
    def ok(self) -> bool:
        return self.executed and not self.reasons

    @property
    def plan_hash(self) -> str | None:
        return self.resumed.plan_hash if self.resumed is not None else self.decision.plan_hash

    @property
    def refused(self) -> bool:
        """Stopped by the gate (policy, declared kind, limits, the database's own grants), not by an error."""
        return not self.ok and not any(r.code == "database_error" for r in self.reasons)

    def to_status(self) -> dict[str, Any]:
        reasons = [
            {k: v for k, v in r.to_json().items() if k in ("code", "message", "rule", "position")} for r in self.reasons
        ]
        return {
            "name": self.name,
            "decision": "allow" if self.decision.allowed or self.resumed is not None else "deny",
            "executed": self.executed,
            "reasons": reasons,
            "rowsReturned": len(self.rows),
            "rowsAffected": self.rows_affected,
            "planHash": self.plan_hash,
            "sql": self.decision.sql if self.executed else None,
        }

    def audit_details(self, principal: str, policy: str) -> dict[str, Any]:
        """What the audit log keeps: the decision and its effect (with the database's full error), never the rows."""
        details = {
            "step": self.name,
            "principal": principal,
            "policy": policy,
            "executed": self.executed,
            "rowsReturned": len(self.rows),
            "rowsAffected": self.rows_affected,
            "reasons": [r.to_json() for r in self.reasons],
            "decision": self.decision.to_json(),
        }
        if self.error is not None:
            details["databaseError"] = self.error
        if self.resumed is not None:
            details["resumed"] = {"rows": self.resumed.rows, "planHash": self.resumed.plan_hash}
        return {**details, **self.replay}


def run_steps(
    spec: AgentWorkflowSpec,
    guard: ExecutionGuard,
    record: Callable[[StepOutcome], None],
    workflow: str,
    policy_content: str | None = None,
    approvals: Callable[[str, str | None], frozenset[str]] | None = None,
) -> list[StepOutcome]:
    """Run the steps of run `workflow` (the AgentWorkflow's uid) in order until one is refused or fails, skipping
    the mutations recorded as done; `record` sees each outcome as it happens. `policy_content`: the policy version's
    content address (audit/versions.py), kept with each decision so that it can be replayed. `approvals(step,
    plan hash)`: who approved exactly that plan hash of that step (workflows/approvals.py); given to that step only."""
    from ..database.agents.steps import StepKey  # the database side, loaded with the guard that runs the steps

    done = guard.recorded(workflow)
    outcomes: list[StepOutcome] = []
    for index, step in enumerate(spec.steps):
        params = list(step.params)
        decision = guard.engine.decide(spec.principal, step.sql, params, guard.tenant)
        guard.approvals = approvals(step.name, decision.plan_hash) if approvals is not None else frozenset()
        if guard.approvals:
            decision = guard.engine.decide(spec.principal, step.sql, params, guard.tenant, guard.approvals)
        replay = {
            "statement": step.sql,
            "params": params,
            "tenant": guard.tenant,
            "approvals": sorted(guard.approvals),
            "policyContent": policy_content,
        }
        mutation = StepKind(step.kind) == StepKind.MUTATION
        if mutation and (past := done.get(index)) is not None:
            outcome = StepOutcome(step.name, decision, True, rows_affected=past.rows, resumed=past, replay=replay)
        elif decision.allowed and decision.statement not in STATEMENTS[StepKind(step.kind)]:
            outcome = StepOutcome(
                step.name,
                decision,
                reasons=(
                    Reason(
                        "kind_mismatch",
                        f"step {step.name} is declared a {step.kind} but its statement is "
                        f"{str(decision.statement).upper()}",
                    ),
                ),
                replay=replay,
            )
        else:
            ran = guard.execute(step.sql, params, StepKey(workflow, index, step.name) if mutation else None)
            reasons = ran.reasons if ran.decision.allowed else ran.decision.reasons + ran.reasons
            outcome = StepOutcome(
                step.name,
                ran.decision,
                ran.executed,
                tuple(reasons),
                ran.columns,
                ran.rows,
                ran.rows_affected,
                ran.error,
                replay=replay,
            )
        record(outcome)
        outcomes.append(outcome)
        if not outcome.ok:
            break
    return outcomes


def results_secret_data(outcomes: list[StepOutcome]) -> dict[str, str]:
    """One JSON document per query step (columns and rows), cut to what fits in a Secret."""
    data: dict[str, str] = {}
    used = 0
    for outcome in outcomes:
        if not outcome.executed or not outcome.columns:
            continue
        rows = [list(row) for row in outcome.rows]
        document = json.dumps({"columns": list(outcome.columns), "rows": rows, "truncated": False}, default=str)
        while len(document) + used > RESULTS_BUDGET and rows:
            rows = rows[: len(rows) // 2]
            document = json.dumps({"columns": list(outcome.columns), "rows": rows, "truncated": True}, default=str)
        used += len(document)
        data[f"{outcome.name}.json"] = document
    return data
