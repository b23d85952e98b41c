"""AgentWorkflow handlers: run the declared steps once, through the AgentPolicy they name, and record everything.

Exactly once per step: each step commits with its completion record in the tenant's database, and a run the
operator was interrupted in resumes at the first step not recorded (workflows/run.py). Steps are fixed once
submitted.
Every decision goes to the tamper-evident audit log; query rows go to a Secret, never to status.
A run happens in the workflow pool (threads of its own, bounded overall and per tenant), never in kopf's
executor, so agent work cannot delay tenant reconciliation. What to do is decided in workflows/reconcile.py;
these handlers read, carry it out and write what it says.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import functools
import os
from collections.abc import Mapping
from typing import Any

import kopf
import psycopg

from ..api.agentpolicy import AgentPolicySpec, AgentPolicyStatus
from ..api.agentworkflow import AgentWorkflowSpec, AgentWorkflowStatus
from ..api.meta import API_VERSION, GROUP, VERSION
from ..audit import AuditLog, AuditUnavailable
from ..audit.versions import PolicyVersions
from ..database import DatabaseUnavailable, Placement, TenantDatabases
from ..database.agents.guard import ExecutionGuard
from ..database.agents.install import engine_for
from ..errors import first_line
from ..kubeclient import Kube, KubeError
from ..lifecycle.agentpolicy import secret_name
from ..lifecycle.agents import Outcome
from ..lifecycle.drift import ObjectConflict
from ..lifecycle.evidence import Records
from ..lifecycle.tenant import MANAGED_BY, SecretConflict, opaque_secret, owned_secret, owner_reference, secret_field
from ..metrics import gate_step, timed_engine
from ..policy import Gate
from ..policy.rules import PolicyError
from ..policy.schema import SchemaError
from ..workflows import StepOutcome, approvals, results_secret_data, run_steps
from ..workflows.admission import REQUESTER
from ..workflows.approvals import Grant, Requester
from ..workflows.pool import WorkflowPool
from ..workflows.reconcile import (
    RUNNING,
    EngineFailure,
    LoadEngine,
    Observed,
    PolicyView,
    Run,
    RunSteps,
    WorkflowObject,
    decide,
    finished,
    prepared,
    progress,
    results_access,
    results_expire_at,
    results_expired,
    results_name,
    settled,
    status_fields,
    step_approvals,
    step_record,
    terminal_conditions,
)
from ..workflows.stamp import admission_outcome
from . import events
from .agentpolicy import records_of, tenant_of, tenant_view
from .apply import apply_agent_outcome, audit, converge, delete_owned_secret, publish_secret
from .instrument import reconciles
from .stamping import claimed, ring_for
from .suspension import suspended_now

RETENTION_ENV = "PAYBILL_WORKFLOW_RESULTS_RETENTION"
RETENTION_DEFAULT = 7 * 24 * 3600  # seconds a finished workflow's results Secret is kept


def results_retention(environ: Mapping[str, str]) -> datetime.timedelta:
    """How long results are kept (PAYBILL_WORKFLOW_RESULTS_RETENTION seconds, default 7 days)."""
    seconds = int(environ.get(RETENTION_ENV) or RETENTION_DEFAULT)
    if seconds <= 0:
        raise ValueError(f"{RETENTION_ENV} must be a positive number of seconds, not {seconds}")
    return datetime.timedelta(seconds=seconds)


@kopf.on.startup()
def start_workflow_pool(memo: kopf.Memo, **_: Any) -> None:
    memo.workflow_pool = WorkflowPool.from_environ(os.environ)
    memo.results_retention = results_retention(os.environ)


@kopf.on.cleanup()
def stop_workflow_pool(memo: kopf.Memo, **_: Any) -> None:
    memo.workflow_pool.shutdown()


@kopf.on.resume(GROUP, VERSION, "agentworkflows")
@kopf.on.create(GROUP, VERSION, "agentworkflows")
@reconciles("agentworkflow")
async def run_workflow(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    pool: WorkflowPool = memo.workflow_pool
    await pool.run(str(body.metadata.namespace), functools.partial(_run, body, patch, memo))


def workflow_object(body: kopf.Body) -> WorkflowObject:
    """The workflow parsed through its models (the CRD schema has already refused bad shapes)."""
    return WorkflowObject(
        body.metadata.name,
        str(body.metadata.namespace),  # namespaced: never None
        AgentWorkflowSpec.model_validate(dict(body.spec)),
        AgentWorkflowStatus.model_validate(dict(body.get("status") or {})),
        str(body.metadata.uid),
        dict(body.metadata.annotations),
    )


def _run(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo) -> None:
    workflow = workflow_object(body)
    outcome = (  # nothing runs without the operator's own admission stamp, on the one object it admitted
        settled(workflow)
        or admission_outcome(
            workflow.namespace, workflow.name, workflow.spec, workflow.annotations, ring_for(memo, workflow.annotations)
        )
        or claimed(memo, workflow)
    )
    if outcome is None:
        seen, login = _observe(memo.kube, body, workflow, memo.databases)
        seen = dataclasses.replace(seen, grants=recorded_grants(memo.audit, workflow))
        outcome = decide(workflow, seen)
        if isinstance(outcome.action, LoadEngine):
            engine, failure = _engine(memo, outcome.action)
            outcome = prepared(workflow, seen, outcome.action, failure)
            if isinstance(outcome.action, RunSteps):
                assert engine is not None and login is not None  # prepared runs only with both
                outcome = _run_steps(body, memo, workflow, engine, login, outcome.action, seen.grants)
    apply_agent_outcome(body, patch, memo, outcome)  # raises to retry: never for a terminal phase
    if outcome.report is not None:  # the terminal phases are conditions too (kubectl wait --for=condition=...)
        report = outcome.report
        conditions = list(patch.status.get("conditions") or [])
        generation = body.metadata.get("generation")
        patch.status["conditions"] = terminal_conditions(
            conditions, report.phase, report.reason, report.message, generation
        )


def recorded_grants(log: AuditLog | None, workflow: WorkflowObject) -> tuple[Grant, ...]:
    """The approvals and rejections of this workflow the admission webhook recorded (none without the log)."""
    if log is None:
        return ()
    records = log.records(approvals.AUDIT_KIND, f"{workflow.namespace}/{workflow.name}")
    return tuple(approvals.recorded((r.details for r in records if r.event in approvals.GRANT_EVENTS), workflow.uid))


def _observe(
    kube: Kube, body: kopf.Body, workflow: WorkflowObject, databases: TenantDatabases | None
) -> tuple[Observed, str | None]:
    """The policy the workflow names, the Tenant, the operator's records of its data, and the Secrets the run uses
    (the login kept out of `Observed`)."""
    policy = kube.get(API_VERSION, "agentpolicies", workflow.spec.policyRef, workflow.namespace)
    login, conflict = None, None
    if policy is not None:
        try:
            login = _login(kube, body, workflow, policy)
        except SecretConflict as exc:
            conflict = first_line(exc)
    tenant = tenant_of(kube, workflow.namespace)
    try:
        records: Records | None = records_of(databases, tenant)
    except (DatabaseUnavailable, psycopg.Error):
        records = None
    seen = Observed(policy_view(policy), tenant_view(tenant), databases is not None, conflict, bool(login), records)
    return dataclasses.replace(seen, suspended=suspended_now(kube, tenant)), login


def policy_view(policy: dict[str, Any] | None) -> PolicyView | None:
    if policy is None:
        return None
    status = AgentPolicyStatus.model_validate(policy.get("status") or {})
    return PolicyView(AgentPolicySpec.model_validate(policy["spec"]), status)


def _login(kube: Kube, body: kopf.Body, workflow: WorkflowObject, policy: dict[str, Any]) -> str | None:
    """The agent's login, from the policy's own Secret only; SecretConflict if that Secret, or one of the results'
    name, is someone else's."""
    ref, namespace = workflow.spec.policyRef, workflow.namespace
    secret = owned_secret(kube.get("v1", "secrets", secret_name(ref), namespace), policy, "AgentPolicy")
    owned_secret(kube.get("v1", "secrets", results_name(workflow.name), namespace), body, "AgentWorkflow")
    return secret_field(secret, "uri") if secret else None


def _engine(memo: kopf.Memo, load: LoadEngine) -> tuple[Gate | None, EngineFailure | None]:
    """The engine on the tenant's live schema, or why it could not be built."""
    try:
        where = Placement.from_status(load.tenant, load.placement)
        return timed_engine(engine_for(memo.databases, where, load.policy, load.access)), None
    except (PolicyError, SchemaError) as exc:
        return None, EngineFailure(first_line(exc), invalid_policy=True)
    except DatabaseUnavailable as exc:
        return None, EngineFailure(str(exc), invalid_policy=False)


def _run_steps(
    body: kopf.Body,
    memo: kopf.Memo,
    workflow: WorkflowObject,
    engine: Gate,
    login: str,
    run: RunSteps,
    grants: tuple[Grant, ...],
) -> Outcome:
    """Mark the workflow Running, run its steps (status and audit record after each; each step given only the
    approvals of its own plan hash), publish the rows and the Role that lets the agent read them."""
    kube: Kube = memo.kube
    outcomes: list[StepOutcome] = []

    def write(status: AgentWorkflowStatus) -> None:
        kube.merge_patch(
            API_VERSION,
            "agentworkflows",
            workflow.name,
            {"status": status_fields(status)},
            workflow.namespace,
            subresource="status",
        )

    def record(outcome: StepOutcome) -> None:
        gate_step(outcome)
        outcomes.append(outcome)
        entry = step_record(workflow, outcome)
        details = {**entry.details, "requester": workflow.annotations[REQUESTER]}  # verified before the run
        audit(body, memo.audit, entry.kind, entry.name, entry.event, details)
        write(progress(outcomes))

    version = PolicyVersions(memo.databases.connect).store(engine.rules.spec, engine.schema)  # for replay
    write(AgentWorkflowStatus(phase=RUNNING))
    with ExecutionGuard(engine, login, workflow.spec.principal, run.tenant) as guard:
        approved = functools.partial(step_approvals, workflow, grants)
        ran = run_steps(workflow.spec, guard, record, str(body.metadata.uid), version, approved)
    results, conflict = results_secret_data(ran), None
    if results:
        try:
            _publish_results(kube, body, results)
        except SecretConflict as exc:  # squatted while the steps ran: the rows are not written there
            results, conflict = {}, first_line(exc)
        else:
            try:
                for manifest in results_access(workflow, run.readers, owner_reference(body, "AgentWorkflow")):
                    converge(kube, body, manifest)
            except ObjectConflict as exc:  # a Role of that name is someone else's: the agent cannot read the rows
                conflict = first_line(exc)
    expire_at = results_expire_at(datetime.datetime.now(datetime.UTC), memo.results_retention)
    return finished(workflow, Run(ran, engine.version, bool(results), conflict, expire_at), grants)


@kopf.on.update(GROUP, VERSION, "agentworkflows", field="spec")
def refuse_changes(body: kopf.Body, **_: Any) -> None:
    events.warn(
        body,
        reason="Immutable",
        message="an AgentWorkflow's steps are fixed once submitted; the change is ignored (submit a new AgentWorkflow)",
    )


@kopf.on.delete(GROUP, VERSION, "agentworkflows", optional=True)
@reconciles("agentworkflow")
def delete_results(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    delete_owned_secret(
        memo.kube, results_name(body.metadata.name), str(body.metadata.namespace), body, "AgentWorkflow"
    )


def _publish_results(kube: Kube, body: kopf.Body, data: dict[str, str]) -> None:
    publish_secret(
        kube,
        opaque_secret(
            {
                "name": results_name(body.metadata.name),
                "namespace": body.metadata.namespace,
                "labels": dict(MANAGED_BY),
                "ownerReferences": [owner_reference(body, "AgentWorkflow")],
            },
            data,
        ),
    )


def _results_kept(status: kopf.Status, **_: Any) -> bool:
    return bool(status.get("resultsSecret")) and bool(status.get("resultsExpireAt"))


@kopf.daemon(GROUP, VERSION, "agentworkflows", when=_results_kept, cancellation_timeout=10)
async def expire_results(body: kopf.Body, memo: kopf.Memo, stopped: kopf.DaemonStopped, **_: Any) -> None:
    """Delete a finished workflow's results Secret once its retention is over (the Role that reads it names only
    that Secret, and goes with the workflow)."""
    status = AgentWorkflowStatus.model_validate(dict(body.get("status") or {}))
    while not stopped:
        left = results_expired(status, datetime.datetime.now(datetime.UTC))
        if left is None:
            return
        if left > 0:
            await stopped.wait(min(left, 3600))
            continue
        await asyncio.to_thread(_delete_results, memo.kube, body)
        return


def _delete_results(kube: Kube, body: kopf.Body) -> None:
    name, namespace = results_name(body.metadata.name), str(body.metadata.namespace)
    delete_owned_secret(kube, name, namespace, body, "AgentWorkflow")
    kube.merge_patch(
        API_VERSION, "agentworkflows", body.metadata.name, {"status": {"resultsSecret": None}}, namespace, "status"
    )
    events.info(body, reason="ResultsExpired", message=f"secret/{name} deleted: its retention period is over")


async def review_approvals(
    operation: str | None,
    body: kopf.Body,
    old: kopf.Body | None,
    userinfo: Mapping[str, Any],
    memo: kopf.Memo,
    dryrun: bool,
    submitter: str | None,
) -> str | None:
    """For the admission webhook (handlers/admission.py): why this write of approve-/reject- annotations is
    refused, or None. An admitted approval or rejection is recorded in the audit log, with who gave it, before it
    is admitted (nothing recorded, nothing admitted): the reconciler honours only what is recorded."""
    new_annotations = dict(body.metadata.annotations)
    old_annotations = dict(old.metadata.annotations) if old is not None else {}
    if not approvals.changes(old_annotations, new_annotations):
        return None
    requester = Requester.from_user_info(userinfo)
    namespace, name = str(body.metadata.namespace), str(body.metadata.name)
    try:
        may = await asyncio.to_thread(_may_approve, memo.kube, requester, namespace, name)
        acts_as = await asyncio.to_thread(_acts_as, memo.kube, requester, submitter) if may and submitter else False
    except KubeError as exc:  # the API server could not say: nothing is approved on a guess
        return f"whether {requester.username} may approve could not be checked: {first_line(exc)}"
    steps = [str(step.get("name")) for step in body.spec.get("steps") or []]
    uid = str((old or body).metadata.uid)
    verdict = approvals.review(old_annotations, new_annotations, requester, may, uid, steps, submitter, acts_as)
    if not verdict.allowed or dryrun or not verdict.grants:
        return None if verdict.allowed else verdict.message
    log: AuditLog | None = memo.audit
    if log is None:
        return "approvals are recorded in the audit log, and this operator has none"
    try:  # the Tenant the record belongs to, so `paybill audit export --tenant` finds it
        tenant = await asyncio.to_thread(tenant_of, memo.kube, namespace)
    except KubeError as exc:
        return f"the tenant of namespace {namespace} could not be read: {first_line(exc)}"
    if tenant is None:
        return f"namespace {namespace} is not a tenant's"
    for grant in verdict.grants:
        details = {**grant.details(), "tenant": tenant["metadata"]["name"]}
        try:
            written = await asyncio.to_thread(
                log.append, approvals.AUDIT_KIND, f"{namespace}/{name}", grant.event, details
            )
        except (AuditUnavailable, ValueError) as exc:
            return f"the approval could not be recorded: {first_line(exc)}"
        if written is None:
            return "the audit log's database is unavailable: the approval is not recorded, try again"
    return None


def _may_approve(kube: Kube, requester: Requester, namespace: str, name: str) -> bool:
    """The API server's answer: may the requester `approve` this AgentWorkflow (a SubjectAccessReview)."""
    attributes = {"verb": approvals.APPROVE_VERB, "group": GROUP, "resource": "agentworkflows", "name": name}
    return _allowed(kube, requester, {"namespace": namespace, **attributes})


def _acts_as(kube: Kube, requester: Requester, submitter: str) -> bool:
    """Whether the requester may act as the ServiceAccount `submitter` names (system:serviceaccount:<ns>:<name>):
    mint its tokens, impersonate it, or run or exec into a workload in its namespace (a person who can could have
    submitted the workflow). Tokens minted earlier by someone who has since lost the right are not seen."""
    namespace, _, account = submitter.removeprefix(approvals.SERVICE_ACCOUNT_USER).partition(":")
    if not submitter.startswith(approvals.SERVICE_ACCOUNT_USER) or not namespace or not account:
        return False
    checks = [(*check, account) for check in approvals.ACTING_AS_ACCOUNT]
    checks += [(*check, "") for check in approvals.RUNNING_AS_ACCOUNT]
    return any(
        _allowed(
            kube,
            requester,
            {"namespace": namespace, "group": group, "resource": resource, "subresource": sub, "verb": verb}
            | ({"name": name} if name else {}),
        )
        for group, resource, sub, verb, name in checks
    )


def _allowed(kube: Kube, requester: Requester, attributes: Mapping[str, str]) -> bool:
    """A SubjectAccessReview of the requester for `attributes`."""
    review = kube.create(
        {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "metadata": {},
            "spec": {"user": requester.username, "groups": list(requester.groups), "resourceAttributes": attributes},
        }
    )
    return bool((review.get("status") or {}).get("allowed"))
