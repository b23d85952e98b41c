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

import functools
import os
from typing import Any

import kopf
import psycopg

from ..api.agentpolicy import AgentPolicySpec, AgentPolicyStatus
from ..api.agentworkflow import AgentWorkflowSpec, AgentWorkflowStatus
from ..api.meta import API_VERSION, GROUP, VERSION
from ..audit.versions import PolicyVersions
from ..database import DatabaseUnavailable, Placement, TenantDatabases
from ..database.agents.guard import ExecutionGuard
from ..database.agents.install import engine_for
from ..errors import first_line
from ..kubeclient import Kube
from ..lifecycle.agentpolicy import secret_name
from ..lifecycle.agents import Outcome
from ..lifecycle.evidence import Records
from ..lifecycle.tenant import MANAGED_BY, SecretConflict, opaque_secret, owned_secret, owner_reference, secret_field
from ..policy import PolicyEngine
from ..policy.rules import PolicyError
from ..policy.schema import SchemaError
from ..workflows import StepOutcome, results_secret_data, run_steps
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
    results_name,
    settled,
    status_fields,
    step_record,
)
from . import events
from .agentpolicy import records_of, tenant_of, tenant_view
from .apply import apply_agent_outcome, audit, delete_owned_secret, publish_secret


@kopf.on.startup()
def start_workflow_pool(memo: kopf.Memo, **_: Any) -> None:
    memo.workflow_pool = WorkflowPool.from_environ(os.environ)


@kopf.on.cleanup()
def stop_workflow_pool(memo: kopf.Memo, **_: Any) -> None:
    memo.workflow_pool.shutdown()


@kopf.on.resume(GROUP, VERSION, "agentworkflows")
@kopf.on.create(GROUP, VERSION, "agentworkflows")
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
    )


def _run(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo) -> None:
    workflow = workflow_object(body)
    outcome = settled(workflow)
    if outcome is None:
        seen, login = _observe(memo.kube, body, workflow, memo.databases)
        outcome = decide(workflow, seen)
        if isinstance(outcome.action, LoadEngine):
            engine, failure = _engine(memo, outcome.action)
            outcome = prepared(workflow, seen, outcome.action, failure)
            if isinstance(outcome.action, RunSteps):
                assert engine is not None and login is not None  # prepared runs only with both
                outcome = _run_steps(body, memo, workflow, engine, login, outcome.action)
    apply_agent_outcome(body, patch, memo, outcome)


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
    return seen, login


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


def _engine(memo: kopf.Memo, load: LoadEngine) -> tuple[PolicyEngine | None, EngineFailure | None]:
    """The engine on the tenant's live schema, or why it could not be built."""
    try:
        where = Placement.from_status(load.tenant, load.placement)
        return engine_for(memo.databases, where, load.policy, load.access), None
    except (PolicyError, SchemaError) as exc:
        return None, EngineFailure(first_line(exc), invalid_policy=True)
    except DatabaseUnavailable as exc:
        return None, EngineFailure(str(exc), invalid_policy=False)


def _run_steps(
    body: kopf.Body, memo: kopf.Memo, workflow: WorkflowObject, engine: PolicyEngine, login: str, run: RunSteps
) -> Outcome:
    """Mark the workflow Running, run its steps (status and audit record after each), publish the rows."""
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
        outcomes.append(outcome)
        entry = step_record(workflow, outcome)
        audit(body, memo.audit, entry.kind, entry.name, entry.event, entry.details)
        write(progress(outcomes))

    version = PolicyVersions(memo.databases.connect).store(engine.rules.spec, engine.schema)  # for replay
    write(AgentWorkflowStatus(phase=RUNNING))
    with ExecutionGuard(engine, login, workflow.spec.principal, run.tenant) as guard:
        ran = run_steps(workflow.spec, guard, record, str(body.metadata.uid), version)
    results, conflict = results_secret_data(ran), None
    if results:
        try:
            _publish_results(kube, body, results)
        except SecretConflict as exc:  # squatted while the steps ran: the rows are not written there
            results, conflict = {}, first_line(exc)
    return finished(workflow, Run(ran, engine.version, bool(results), conflict))


@kopf.on.update(GROUP, VERSION, "agentworkflows", field="spec")
def refuse_changes(body: kopf.Body, **_: Any) -> None:
    events.warn(
        body,
        reason="Immutable",
        message="an AgentWorkflow's steps are fixed once submitted; the change is ignored (submit a new AgentWorkflow)",
    )


@kopf.on.delete(GROUP, VERSION, "agentworkflows", optional=True)
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
