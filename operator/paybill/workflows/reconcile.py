"""The AgentWorkflow reconciler's decisions: (the workflow, what was observed) -> the action, status, Events. Pure.

A workflow runs at most once. The handler (handlers/agentworkflow.py) asks `settled` whether the workflow is past
its run; if not, it reads the policy it names, the Tenant and the Secrets into `Observed` and calls `decide`;
asked to load the engine, it builds it on the tenant's live schema and hands what came of it to `prepared`;
asked to run, it runs the steps (each one's status and audit record from `progress` and `step_record`) and
hands the run to `finished`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..api.agentpolicy import AgentPolicySpec, AgentPolicyStatus
from ..api.agentworkflow import AgentWorkflowSpec, AgentWorkflowStatus, StepStatus
from ..api.tenant import Access, DatabasePlacement
from ..lifecycle.agentpolicy import TenantView, secret_name
from ..lifecycle.agents import AuditRecord, Outcome, Report, Wait
from ..lifecycle.evidence import Records, agent_placement_problem
from ..lifecycle.outcome import Notice
from .run import StepOutcome

FINISHED = ("Succeeded", "Denied", "Failed")
RUNNING = "Running"


def results_name(workflow: str) -> str:
    """The Secret holding the queries' rows."""
    return f"agentworkflow-{workflow}-results"


@dataclass(frozen=True)
class WorkflowObject:
    """The AgentWorkflow as read, parsed once through its models."""

    name: str
    namespace: str
    spec: AgentWorkflowSpec
    status: AgentWorkflowStatus = field(default_factory=AgentWorkflowStatus)


@dataclass(frozen=True)
class PolicyView:
    """The AgentPolicy the workflow names."""

    spec: AgentPolicySpec
    status: AgentPolicyStatus = field(default_factory=AgentPolicyStatus)


@dataclass(frozen=True)
class Observed:
    """The world as the handler read it for one reconcile."""

    policy: PolicyView | None
    tenant: TenantView | None = None  # the Tenant that controls the namespace
    database_configured: bool = True
    secret_conflict: str | None = None  # the policy's login Secret, or the results' name, is someone else's
    has_login: bool = False  # the policy's Secret holds its login
    records: Records | None = None  # the operator's own records of the tenant's data (None: could not be read)


@dataclass(frozen=True)
class LoadEngine:
    """Build the engine that checks the steps: the policy as the tenant's access allows, on its live schema."""

    tenant: str
    placement: DatabasePlacement
    policy: AgentPolicySpec
    access: Access


@dataclass(frozen=True)
class EngineFailure:
    """Why the engine could not be built: the policy no longer fits the schema, or the database is unavailable."""

    message: str
    invalid_policy: bool


@dataclass(frozen=True)
class RunSteps:
    """Mark the workflow Running and run its steps under the engine, as the agent's role, on `tenant`'s data."""

    tenant: str


@dataclass(frozen=True)
class Run:
    """What running the steps came to."""

    outcomes: Sequence[StepOutcome]  # one per step attempted, in order (at least one)
    version: str  # the policy version the steps were checked under
    results: bool  # the queries' rows were written to the results Secret
    results_conflict: str | None = None  # the results' name was taken while the steps ran


def settled(workflow: WorkflowObject) -> Outcome | None:
    """What a workflow past its run gets, without looking at anything else: nothing once finished. None: yet to
    run, or to resume (a run the operator was interrupted in continues at its first step not recorded as done in
    the tenant's database, workflows/run.py: status is no evidence of what committed)."""
    if workflow.status.phase in FINISHED:
        return Outcome()
    return None


def decide(workflow: WorkflowObject, seen: Observed) -> Outcome:
    """Load the engine when the policy is installed and the tenant's data ready."""
    if (past := settled(workflow)) is not None:
        return past
    policy, ref = seen.policy, workflow.spec.policyRef
    if policy is None or policy.status.phase != "Ready":
        state = "missing" if policy is None else policy.status.phase
        return Outcome(wait=Wait("PolicyNotReady", f"agentpolicy/{ref} is {state}", 5))
    access = Access(policy.status.access or Access.NONE)  # deny by default: no recorded access is none
    if access == Access.NONE:
        return _finish(
            workflow, "Denied", "TenantSuspended", f"tenant {policy.status.tenant} is suspended; its agents cannot run"
        )
    placement = seen.tenant.status.database if seen.tenant is not None else None
    if seen.tenant is None or not seen.database_configured or placement is None:
        return Outcome(wait=Wait("WaitingForTenant", "the tenant's database is not ready", 5))
    # status is only evidence: the engine reads the schema where the operator's own records say the data is
    if seen.records is None:
        return Outcome(wait=Wait("DatabaseUnavailable", "the operator's records of the tenant's data were not read", 5))
    if problem := agent_placement_problem(seen.tenant.name, seen.tenant.uid, placement, seen.records):
        return Outcome(wait=Wait("PlacementMismatch", problem, 5))
    return Outcome(action=LoadEngine(seen.tenant.name, placement, policy.spec, access))


def prepared(workflow: WorkflowObject, seen: Observed, load: LoadEngine, failure: EngineFailure | None) -> Outcome:
    """Run once the engine is built and the policy's login is there (and no one else's Secret has a name the
    run uses)."""
    if failure is not None and failure.invalid_policy:
        return _finish(workflow, "Denied", "InvalidPolicy", failure.message)
    if failure is not None:
        return Outcome(wait=Wait("DatabaseUnavailable", failure.message, 5))
    if seen.secret_conflict is not None:
        return Outcome(wait=Wait("SecretConflict", seen.secret_conflict, 30))
    if not seen.has_login:
        login = secret_name(workflow.spec.policyRef)
        return Outcome(wait=Wait("CredentialsMissing", f"secret/{login} is not there yet", 5))
    return Outcome(action=RunSteps(load.tenant))


def progress(outcomes: Sequence[StepOutcome]) -> AgentWorkflowStatus:
    """The status while the steps run: each attempted step and how many ran."""
    steps = [StepStatus.model_validate(outcome.to_status()) for outcome in outcomes]
    return AgentWorkflowStatus(phase=RUNNING, steps=steps, completedSteps=sum(step.executed for step in steps))


def step_record(workflow: WorkflowObject, outcome: StepOutcome) -> AuditRecord:
    """The audit record of one step: ran, denied by the gate, or failed."""
    ran = "StepResumed" if outcome.resumed is not None else "StepRan"
    event = ran if outcome.ok else "StepDenied" if outcome.refused else "StepFailed"
    spec = workflow.spec
    return AuditRecord(
        "AgentWorkflow",
        f"{workflow.namespace}/{workflow.name}",
        event,
        outcome.audit_details(spec.principal, spec.policyRef),
    )


def finished(workflow: WorkflowObject, run: Run) -> Outcome:
    """Succeeded when the last step ran, else Denied (the gate refused it) or Failed (an error stopped it)."""
    said = (Notice("SecretConflict", run.results_conflict, warning=True),) if run.results_conflict else ()
    last = run.outcomes[-1]
    if last.ok:
        message = f"{len(run.outcomes)} step(s) ran under policy version {run.version}"
        outcome = _finish(workflow, "Succeeded", "Completed", message, run.outcomes, run.results, run.version)
    else:
        phase = "Denied" if last.refused else "Failed"
        reason = last.reasons[0] if last.reasons else None
        message = (
            f"step {last.name}: {reason.code + ': ' + reason.message if reason else 'did not run'}; "
            f"later steps were not run"
        )
        kind = "StepDenied" if phase == "Denied" else "StepFailed"
        outcome = _finish(workflow, phase, kind, message, run.outcomes, run.results, run.version)
    return Outcome(report=outcome.report, events=said + outcome.events)


def _finish(
    workflow: WorkflowObject,
    phase: str,
    reason: str,
    message: str,
    outcomes: Sequence[StepOutcome] = (),
    results: bool = False,
    version: str | None = None,
) -> Outcome:
    running = progress(outcomes)
    status = AgentWorkflowStatus(
        steps=running.steps,
        completedSteps=running.completedSteps,
        policyVersion=version,
        resultsSecret=results_name(workflow.name) if results else None,
    )
    ok = phase == "Succeeded"
    return Outcome(
        report=Report(phase, ok, reason, message, status),
        events=(Notice(reason, message, warning=not ok),),
    )


def status_fields(status: AgentWorkflowStatus) -> dict[str, Any]:
    """A status as the API stores it (by wire names, only the fields set)."""
    return status.model_dump(mode="json", by_alias=True, exclude_unset=True)
