"""The AgentWorkflow reconciler's decisions: (the workflow, what was observed) -> the action, status, Events. Pure.

A workflow runs at most once. The handler (handlers/agentworkflow.py) asks `settled` whether the workflow is past
its run; if not, it reads the policy it names, the Tenant and the Secrets into `Observed` and calls `decide`;
asked to load the engine, it builds it on the tenant's live schema and hands what came of it to `prepared`;
asked to run, it runs the steps (each one's status and audit record from `progress` and `step_record`) and
hands the run to `finished`.

A step whose policy rule needs approval stops the run in AwaitingApproval with its plan hash in status; the run is
looked at again every APPROVAL_POLL seconds and runs again (the steps done are not repeated, workflows/run.py)
only when something it waits for may have changed: an admitted approval or rejection, or the policy's version
(workflows/approvals.py says what an approval is and who may give it). Terminal phases are also conditions
(Complete, Denied, Failed: `kubectl wait --for=condition=Complete`).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..api.agentpolicy import AgentPolicySpec, AgentPolicyStatus
from ..api.agentworkflow import AgentWorkflowSpec, AgentWorkflowStatus, ApprovalStatus, StepStatus
from ..api.plan import PlanSpec
from ..api.tenant import Access, DatabasePlacement, TenantSpec
from ..billing.grace import Billed, billing_of
from ..lifecycle.agentpolicy import TenantView, secret_name
from ..lifecycle.agents import AuditRecord, Outcome, Report, Retry, Wait
from ..lifecycle.conditions import set_condition
from ..lifecycle.evidence import Records, agent_placement_problem
from ..lifecycle.outcome import Notice
from ..lifecycle.tenant import MANAGED_BY
from . import approvals
from .approvals import Grant
from .run import StepOutcome

FINISHED = ("Succeeded", "Denied", "Failed")
RUNNING = "Running"
AWAITING = "AwaitingApproval"
APPROVAL_POLL = 3.0  # seconds between looks at a workflow waiting for approval
# Each terminal phase is also a condition of its own, True in that phase and False in the others.
TERMINAL_CONDITIONS = {"Succeeded": "Complete", "Denied": "Denied", "Failed": "Failed"}


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
    uid: str = ""
    annotations: Mapping[str, str] = field(default_factory=dict)


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
    grants: tuple[Grant, ...] = ()  # approvals and rejections the admission webhook admitted and recorded
    suspended: bool = False  # the tenant's spec or its subscription suspends it now (`tenant_suspended`)


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
    readers: tuple[str, ...] = ()  # the agent's ServiceAccounts: they may read the results Secret


@dataclass(frozen=True)
class Run:
    """What running the steps came to."""

    outcomes: Sequence[StepOutcome]  # one per step attempted, in order (at least one)
    version: str  # the policy version the steps were checked under
    results: bool  # the queries' rows were written to the results Secret
    results_conflict: str | None = None  # the results' name was taken while the steps ran
    results_expire_at: str | None = None  # when the results Secret is to be deleted


def tenant_suspended(spec: TenantSpec, plan: PlanSpec | None, billed: Sequence[Billed], now: datetime.datetime) -> bool:
    """Suspended as the tenant's lifecycle decides it (by hand, or by its subscription: unpaid, paused, canceled),
    from what its spec and its subscriptions say now; its status says so only once the leader has reconciled it."""
    return spec.suspended or (plan is not None and billing_of(billed, plan, now).suspends)


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
    if workflow.status.phase == AWAITING and not approval_news(workflow, seen):
        pending = workflow.status.approval
        return Outcome(retry=Retry(pending.message if pending else "awaiting approval", APPROVAL_POLL))
    policy, ref = seen.policy, workflow.spec.policyRef
    if policy is None or policy.status.phase != "Ready":
        state = "missing" if policy is None else policy.status.phase
        return Outcome(wait=Wait("PolicyNotReady", f"agentpolicy/{ref} is {state}", 5))
    access = Access(policy.status.access or Access.NONE)  # deny by default: no recorded access is none
    if access == Access.NONE:
        return _finish(
            workflow, "Denied", "TenantSuspended", f"tenant {policy.status.tenant} is suspended; its agents cannot run"
        )
    if seen.suspended:  # before its status says so: the leader may not have reconciled the change yet
        tenant = seen.tenant.name if seen.tenant is not None else policy.status.tenant
        return _finish(workflow, "Denied", "TenantSuspended", f"tenant {tenant} is suspended; its agents cannot run")
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
    assert seen.policy is not None  # decide loads the engine only for a policy
    readers = tuple(s.serviceAccount for s in seen.policy.spec.subjects if s.agent == workflow.spec.principal)
    return Outcome(action=RunSteps(load.tenant, readers))


def results_access(
    workflow: WorkflowObject, readers: Sequence[str], owner: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A Role that reads exactly this workflow's results Secret (by name, `get` only) and its RoleBinding to the
    agent's ServiceAccounts, both owned by the workflow (gone with it). The agent's own Role has no Secrets."""
    name = results_name(workflow.name)
    meta = {
        "name": name,
        "namespace": workflow.namespace,
        "labels": dict(MANAGED_BY),
        "ownerReferences": [dict(owner)],
    }
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": meta,
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": [name], "verbs": ["get"]}],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": meta,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [
            {"kind": "ServiceAccount", "name": account, "namespace": workflow.namespace} for account in sorted(readers)
        ],
    }
    return role, binding


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


def approval_news(workflow: WorkflowObject, seen: Observed) -> bool:
    """Whether a workflow waiting for approval may run further: the approvers of the awaited hash changed since the
    last look, a rejection was admitted, or the policy's version moved (the awaited hash is void). Only a trigger:
    what runs is decided again."""
    pending = workflow.status.approval
    if pending is None:
        return True
    annotations, grants = workflow.annotations, seen.grants
    if approvals.rejection(pending.step, annotations, grants) is not None:
        return True
    if approvals.granted(pending.step, pending.planHash, annotations, grants) != set(pending.approvedBy):
        return True  # an approval more (or one withdrawn): fewer than a rule needs is no news at every look
    return seen.policy is not None and seen.policy.status.policyVersion != pending.policyVersion


def awaits_approval(outcome: StepOutcome) -> bool:
    """The step was refused only because its rule needs approvals it does not have yet (the engine's only reason;
    the guard adds its own `denied` to any refused statement; warn and audit only record policy-level reasons)."""
    decided = outcome.decision.refusing()
    return (
        not outcome.executed
        and bool(decided)
        and all(r.code == "approval_required" for r in decided)
        and all(r.code in ("approval_required", "denied") for r in outcome.reasons)
    )


def step_approvals(
    workflow: WorkflowObject, grants: Sequence[Grant], step: str, plan_hash: str | None
) -> frozenset[str]:
    """Who approved exactly this plan hash of `step` (none once the step is rejected): what the engine is given."""
    if approvals.rejection(step, workflow.annotations, grants) is not None:
        return frozenset()
    return approvals.granted(step, plan_hash, workflow.annotations, grants)


def finished(workflow: WorkflowObject, run: Run, grants: Sequence[Grant] = ()) -> Outcome:
    """Succeeded when the last step ran; AwaitingApproval when it waits for one (Denied once rejected); else Denied
    (the gate refused it) or Failed (an error stopped it)."""
    said = (Notice("SecretConflict", run.results_conflict, warning=True),) if run.results_conflict else ()
    last = run.outcomes[-1]
    rejected = approvals.rejection(last.name, workflow.annotations, grants) if awaits_approval(last) else None
    if last.ok:
        message = f"{len(run.outcomes)} step(s) ran under policy version {run.version}"
        outcome = _finish(workflow, "Succeeded", "Completed", message, run)
    elif rejected is not None:
        message = f"step {last.name} was rejected by {rejected.approver}; later steps were not run"
        outcome = _finish(workflow, "Denied", "Rejected", message, run)
    elif awaits_approval(last):
        return awaiting(workflow, run, grants, said)
    else:
        phase = "Denied" if last.refused else "Failed"
        reason = last.reasons[0] if last.reasons else None
        message = (
            f"step {last.name}: {reason.code + ': ' + reason.message if reason else 'did not run'}; "
            f"later steps were not run"
        )
        kind = "StepDenied" if phase == "Denied" else "StepFailed"
        outcome = _finish(workflow, phase, kind, message, run)
    return Outcome(report=outcome.report, events=said + outcome.events)


def awaiting(workflow: WorkflowObject, run: Run, grants: Sequence[Grant], said: tuple[Notice, ...] = ()) -> Outcome:
    """The run stops at a step waiting for approval of its plan hash; earlier approvals of other hashes of that
    step (the policy, the schema or the tenant changed since) are void, and status says so."""
    last = run.outcomes[-1]
    plan_hash = last.decision.plan_hash or ""
    before = workflow.status.approval
    void = set(before.voided) if before is not None and before.step == last.name else set()
    if before is not None and before.step == last.name and before.planHash != plan_hash:
        void.add(before.planHash)
    void.update(g.plan_hash for g in approvals.voided(last.name, plan_hash, grants))
    void.discard(plan_hash)
    needs = "; ".join(r.message for r in last.reasons)
    message = (
        f"step {last.name} {needs}: approve plan hash {plan_hash} with "
        f"`{approvals.approve_command(workflow.name, last.name, plan_hash)} --overwrite` "
        f"(or reject it: {approvals.REJECT_PREFIX}{last.name}={plan_hash})"
    )
    if void:
        message += f"; approvals of {', '.join(sorted(void))} are void (policy version is now {run.version})"
    running = progress(run.outcomes)
    status = AgentWorkflowStatus(
        steps=running.steps,
        completedSteps=running.completedSteps,
        policyVersion=run.version,
        approval=ApprovalStatus(
            step=last.name,
            planHash=plan_hash,
            policyVersion=run.version,
            voided=sorted(void),
            approvedBy=sorted(approvals.granted(last.name, plan_hash, workflow.annotations, grants)),
            message=message,
        ),
    )
    events: tuple[Notice, ...] = ()
    if before is None or (before.step, before.planHash) != (last.name, plan_hash):
        events = (Notice(AWAITING, message, warning=False),)
        if void:
            events += (Notice("ApprovalVoided", f"step {last.name}: {message}", warning=True),)
    return Outcome(
        report=Report(AWAITING, False, AWAITING, message, status),
        events=said + events,
        retry=Retry(message, APPROVAL_POLL),
    )


def results_expire_at(finished_at: datetime.datetime, retention: datetime.timedelta) -> str:
    return (finished_at + retention).astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def results_expired(status: AgentWorkflowStatus, now: datetime.datetime) -> float | None:
    """Seconds until the results Secret is to be deleted (<= 0: now); None when there is nothing to delete."""
    if status.resultsSecret is None or status.resultsExpireAt is None:
        return None
    expire_at = datetime.datetime.fromisoformat(status.resultsExpireAt.replace("Z", "+00:00"))
    return (expire_at - now).total_seconds()


def terminal_conditions(
    conditions: list[dict[str, Any]], phase: str, reason: str, message: str, generation: int | None
) -> list[dict[str, Any]]:
    """Complete, Denied and Failed: the one of the terminal phase True, the others False (none before the end)."""
    if phase not in TERMINAL_CONDITIONS:
        return conditions
    for terminal, type_ in TERMINAL_CONDITIONS.items():
        said = (reason, message) if terminal == phase else (f"Not{terminal}", f"the workflow ended {phase}")
        conditions = set_condition(conditions, type_, terminal == phase, *said, generation)
    return conditions


def _finish(workflow: WorkflowObject, phase: str, reason: str, message: str, run: Run | None = None) -> Outcome:
    running = progress(run.outcomes if run is not None else ())
    results = run is not None and run.results
    status = AgentWorkflowStatus(
        steps=running.steps,
        completedSteps=running.completedSteps,
        policyVersion=run.version if run is not None else None,
        resultsSecret=results_name(workflow.name) if results else None,
    )
    if workflow.status.approval is not None:
        status.approval = None  # no longer awaited
    if results and run is not None and run.results_expire_at is not None:
        status.resultsExpireAt = run.results_expire_at
    ok = phase == "Succeeded"
    return Outcome(
        report=Report(phase, ok, reason, message, status),
        events=(Notice(reason, message, warning=not ok),),
    )


def status_fields(status: AgentWorkflowStatus) -> dict[str, Any]:
    """A status as the API stores it (by wire names, only the fields set)."""
    return status.model_dump(mode="json", by_alias=True, exclude_unset=True)
