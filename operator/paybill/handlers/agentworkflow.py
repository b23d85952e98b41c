"""AgentWorkflow handlers: run the declared steps once, through the AgentPolicy they name, and record everything.

At most once: progress is written to status after every step, and a run the operator was interrupted in
is marked Failed, never run again (a mutation may have committed). Steps are fixed once submitted.
Every decision goes to the tamper-evident audit log; query rows go to a Secret, never to status.
A run happens in the workflow pool (threads of its own, bounded overall and per tenant), never in kopf's
executor, so agent work cannot delay tenant reconciliation.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import kopf

from ..api.agentpolicy import AgentPolicySpec
from ..api.agentworkflow import AgentWorkflowSpec
from ..api.meta import API_VERSION, GROUP, VERSION
from ..api.tenant import Access
from ..database import DatabaseUnavailable, Placement
from ..database.agents.guard import ExecutionGuard
from ..database.agents.install import engine_for
from ..errors import first_line
from ..kubeclient import Kube
from ..lifecycle.tenant import MANAGED_BY, SecretConflict, opaque_secret, owned_secret, owner_reference, secret_field
from ..policy.rules import PolicyError
from ..policy.schema import SchemaError
from ..workflows import StepOutcome, results_secret_data, run_steps
from ..workflows.pool import WorkflowPool
from . import events
from .agentpolicy import secret_name, tenant_of
from .apply import delete_owned_secret, publish_secret, wait_for, write_ready

FINISHED = ("Succeeded", "Denied", "Failed")


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


def _run(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo) -> None:
    kube: Kube = memo.kube
    name, namespace = body.metadata.name, body.metadata.namespace
    state = body.get("status") or {}
    if state.get("phase") in FINISHED:
        return
    if state.get("phase") == "Running":  # the operator stopped mid-run: what ran may have committed
        message = f"interrupted after {state.get('completedSteps', 0)} step(s); steps are never run twice"
        write_ready(body, patch, "Failed", False, "Interrupted", message)
        events.warn(body, reason="Interrupted", message=message)
        return
    spec = AgentWorkflowSpec.model_validate(dict(body.spec))
    policy = kube.get(API_VERSION, "agentpolicies", spec.policyRef, namespace)
    policy_state = (policy or {}).get("status") or {}
    if policy is None or policy_state.get("phase") != "Ready":
        state_of = "missing" if policy is None else policy_state.get("phase")
        wait_for(body, patch, "PolicyNotReady", f"agentpolicy/{spec.policyRef} is {state_of}", delay=5)
    if policy_state.get("access") == Access.NONE:
        _finish(
            body,
            patch,
            "Denied",
            "TenantSuspended",
            f"tenant {policy_state.get('tenant')} is suspended; its agents cannot run",
            [],
        )
        return
    tenant = tenant_of(kube, str(namespace))  # namespaced: never None
    placement = ((tenant or {}).get("status") or {}).get("database")
    if tenant is None or memo.databases is None or not placement:
        wait_for(body, patch, "WaitingForTenant", "the tenant's database is not ready", delay=5)
    where = Placement.from_status(tenant["metadata"]["name"], placement)
    try:
        engine = engine_for(
            memo.databases, where, AgentPolicySpec.model_validate(policy["spec"]), Access(policy_state["access"])
        )
    except (PolicyError, SchemaError) as exc:
        _finish(body, patch, "Denied", "InvalidPolicy", first_line(exc), [])
        return
    except DatabaseUnavailable as exc:
        wait_for(body, patch, "DatabaseUnavailable", str(exc), delay=5)
    try:  # only the policy's own Secret holds its login; the results name must be free or this workflow's
        secret = owned_secret(kube.get("v1", "secrets", secret_name(spec.policyRef), namespace), policy, "AgentPolicy")
        owned_secret(kube.get("v1", "secrets", _results_name(name), namespace), body, "AgentWorkflow")
    except SecretConflict as exc:
        wait_for(body, patch, "SecretConflict", first_line(exc), delay=30)
    login = secret_field(secret, "uri") if secret else None
    if not login:
        wait_for(body, patch, "CredentialsMissing", f"secret/{secret_name(spec.policyRef)} is not there yet", delay=5)

    progress: list[dict[str, Any]] = []

    def record(outcome: StepOutcome) -> None:
        progress.append(outcome.to_status())
        if memo.audit is not None:
            event = "StepRan" if outcome.ok else "StepDenied" if outcome.refused else "StepFailed"
            memo.audit.append(
                "AgentWorkflow", f"{namespace}/{name}", event, outcome.audit_details(spec.principal, spec.policyRef)
            )
        kube.merge_patch(
            API_VERSION,
            "agentworkflows",
            name,
            {"status": {"phase": "Running", **_progress(progress)}},
            namespace,
            subresource="status",
        )

    kube.merge_patch(
        API_VERSION, "agentworkflows", name, {"status": {"phase": "Running"}}, namespace, subresource="status"
    )
    with ExecutionGuard(engine, login, spec.principal, where.tenant) as guard:
        outcomes = run_steps(spec, guard, record)
    results: dict[str, str] | None = results_secret_data(outcomes)
    if results:
        try:
            _publish_results(kube, body, results)
        except SecretConflict as exc:  # squatted while the steps ran: the rows are not written there
            events.warn(body, reason="SecretConflict", message=first_line(exc))
            results = None
    last = outcomes[-1]
    if last.ok:
        _finish(
            body,
            patch,
            "Succeeded",
            "Completed",
            f"{len(outcomes)} step(s) ran under policy version {engine.version}",
            progress,
            results,
            engine.version,
        )
    else:
        phase = "Denied" if last.refused else "Failed"
        reason = last.reasons[0] if last.reasons else None
        _finish(
            body,
            patch,
            phase,
            "StepDenied" if phase == "Denied" else "StepFailed",
            f"step {last.name}: {reason.code + ': ' + reason.message if reason else 'did not run'}; "
            f"later steps were not run",
            progress,
            results,
            engine.version,
        )


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
        memo.kube, _results_name(body.metadata.name), str(body.metadata.namespace), body, "AgentWorkflow"
    )


def _finish(
    body: kopf.Body,
    patch: kopf.Patch,
    phase: str,
    reason: str,
    message: str,
    steps: list[dict[str, Any]],
    results: dict[str, str] | None = None,
    version: str | None = None,
) -> None:
    write_ready(
        body,
        patch,
        phase,
        phase == "Succeeded",
        reason,
        message,
        **_progress(steps),
        policyVersion=version,
        resultsSecret=_results_name(body.metadata.name) if results else None,
    )
    (events.info if phase == "Succeeded" else events.warn)(body, reason=reason, message=message)


def _progress(steps: list[dict[str, Any]]) -> dict[str, Any]:
    return {"steps": steps, "completedSteps": sum(step["executed"] for step in steps)}


def _results_name(workflow: str) -> str:
    return f"agentworkflow-{workflow}-results"


def _publish_results(kube: Kube, body: kopf.Body, data: dict[str, str]) -> None:
    publish_secret(
        kube,
        opaque_secret(
            {
                "name": _results_name(body.metadata.name),
                "namespace": body.metadata.namespace,
                "labels": dict(MANAGED_BY),
                "ownerReferences": [owner_reference(body, "AgentWorkflow")],
            },
            data,
        ),
    )
