"""What every handler does to the world: converge owned objects, publish and delete Secrets it controls, nudge a
Paybill object to reconcile again, and write phase, observed generation and the Ready condition."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NoReturn

import kopf

from ..api.meta import API_VERSION
from ..audit import AuditLog, AuditUnavailable
from ..errors import first_line
from ..kubeclient import Kube, KubeError, resource_path
from ..lifecycle.agents import Outcome as AgentOutcome
from ..lifecycle.conditions import set_condition
from ..lifecycle.drift import OwnedAction, conflict, converged, describe, owned_action, stamped
from ..lifecycle.outcome import Notice, Touch
from ..lifecycle.tenant import (
    SecretAction,
    SecretConflict,
    controller_reference,
    owned_secret,
    secret_action,
    secret_conflict,
)
from . import events

TRIGGER = "trigger.paybill.dev"  # not kopf's own prefix, so a change here re-runs the tenant's reconcile
TENANT_GRANTS = f"{TRIGGER}/tenant"  # on an AgentPolicy: the tenant state its grants must follow
OPERATOR_NAMESPACE_ENV = "PAYBILL_OPERATOR_NAMESPACE"
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def touch(kube: Kube, plural: str, name: str, key: str, value: str) -> None:
    """Annotate a Paybill object so that its own reconcile runs again (kopf sees the annotation change)."""
    try:
        kube.merge_patch(API_VERSION, plural, name, {"metadata": {"annotations": {f"{TRIGGER}/{key}": value}}})
    except KubeError as exc:
        if exc.status != 404:
            raise


def touch_all(kube: Kube, touches: Iterable[Touch]) -> None:
    for t in touches:
        touch(kube, t.plural, t.name, t.key, t.value)


def post(body: kopf.Body, notices: Iterable[Notice]) -> None:
    """The Events a decision asked for, about `body`."""
    for notice in notices:
        (events.warn if notice.warning else events.info)(body, reason=notice.reason, message=notice.message)


def operator_namespace() -> str | None:
    """The namespace the operator runs in (set by the chart from the downward API, else the service account's)."""
    if os.environ.get(OPERATOR_NAMESPACE_ENV):
        return os.environ[OPERATOR_NAMESPACE_ENV]
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or None
    except OSError:
        return None


def converge(kube: Kube, body: kopf.Body, desired: dict[str, Any]) -> None:
    """Create the owned object, or bring it back to `desired` where it drifted (an Event says so); ObjectConflict
    (nothing written) if an object of that name is not the Tenant's."""
    plural, namespaced = kube.plural_of(desired["apiVersion"], desired["kind"])
    name, namespace = desired["metadata"]["name"], desired["metadata"].get("namespace") if namespaced else None
    existing = kube.get(desired["apiVersion"], plural, name, namespace)
    action = owned_action(existing, desired)
    try:
        if action == OwnedAction.CONFLICT:
            raise conflict(existing or {}, desired)
        if action == OwnedAction.CREATE:
            kube.create(stamped(desired))
        elif action in (OwnedAction.UPDATE, OwnedAction.REVERT) and existing is not None:
            # only the version checked (resourceVersion) is replaced
            kube.request(
                "PUT", resource_path(desired["apiVersion"], plural, namespace, name), converged(existing, desired)
            )
            plan = body.spec.get("planRef")
            if action == OwnedAction.REVERT:
                events.info(
                    body, reason="DriftReverted", message=f"{describe(desired)} was edited; restored to plan {plan}"
                )
            else:
                events.info(body, reason="PlanApplied", message=f"{describe(desired)} updated to plan {plan}")
    except KubeError as exc:
        if exc.status != 409:
            raise
        converge(kube, body, desired)  # made or changed since we read it: decide again on what is there now


def publish_secret(kube: Kube, desired: dict[str, Any]) -> None:
    """Create the Secret, or patch its data where it differs from `desired`, if it is the desired controller's;
    SecretConflict (nothing written) if a Secret of that name is someone else's."""
    meta = desired["metadata"]
    current = kube.get("v1", "secrets", meta["name"], meta["namespace"])
    action = secret_action(current, desired)
    try:
        if action == SecretAction.CONFLICT:
            owner = controller_reference(desired)
            raise secret_conflict(current or {}, owner["kind"], owner["name"])
        if action == SecretAction.CREATE:
            kube.create(desired)
        elif action == SecretAction.UPDATE and current is not None:  # only the version we checked: ownership
            kube.merge_patch(
                "v1",
                "secrets",
                meta["name"],
                {
                    "metadata": {  # cannot change in between
                        "resourceVersion": current["metadata"]["resourceVersion"]
                    },
                    "data": desired["data"],
                },
                meta["namespace"],
            )
    except KubeError as exc:
        if exc.status != 409:
            raise
        publish_secret(kube, desired)  # made or changed since we read it: decide again on what is there now


def delete_owned_secret(kube: Kube, name: str, namespace: str, owner: kopf.Body, kind: str) -> None:
    """Delete the Secret only if `owner` controls it (the checked uid and version as preconditions)."""
    try:
        secret = owned_secret(kube.get("v1", "secrets", name, namespace), owner, kind)
    except SecretConflict:
        return  # someone else's: left as it is
    if secret is None:
        return
    preconditions = {key: secret["metadata"][key] for key in ("uid", "resourceVersion")}
    try:
        kube.request("DELETE", resource_path("v1", "secrets", namespace, name), {"preconditions": preconditions})
    except KubeError as exc:
        if exc.status == 409:
            delete_owned_secret(kube, name, namespace, owner, kind)
        elif exc.status != 404:
            raise


def write_ready(
    body: kopf.Body, patch: kopf.Patch, phase: str, ok: bool | None, reason: str, message: str, **fields: Any
) -> None:
    generation = body.metadata.get("generation")
    conditions = set_condition(
        list((body.get("status") or {}).get("conditions") or []), "Ready", ok, reason, message, generation
    )
    patch.status.update(phase=phase, observedGeneration=generation, conditions=conditions, **fields)


def wait_for(body: kopf.Body, patch: kopf.Patch, reason: str, message: str, delay: float) -> NoReturn:
    """Pending until something else is ready: said in status, once as a Warning Event, and retried."""
    conditions = (body.get("status") or {}).get("conditions") or []
    if next((c.get("reason") for c in conditions if c.get("type") == "Ready"), None) != reason:
        events.warn(body, reason=reason, message=message)
    write_ready(body, patch, "Pending", False, reason, message)
    raise kopf.TemporaryError(message, delay=delay)


def audit(body: kopf.Body, log: AuditLog | None, kind: str, name: str, event: str, details: dict[str, Any]) -> None:
    """Append to the audit log. A record it refuses (its outage buffer full, or a value no database could store)
    is never silent: a Warning Event says so, and the log itself records how many it dropped."""
    if log is None:
        return
    try:
        log.append(kind, name, event, details)
    except (AuditUnavailable, ValueError) as exc:
        events.warn(body, reason="AuditUnavailable", message=f"audit record {event} dropped: {first_line(exc)}")


def apply_agent_outcome(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, outcome: AgentOutcome) -> None:
    """What an agent reconciler decided (lifecycle/agents.py): the status or the wait, the Events, the audit
    record, then a retry if asked."""
    if outcome.wait is not None:
        wait_for(body, patch, outcome.wait.reason, outcome.wait.message, outcome.wait.delay)
    if outcome.report is not None:
        report = outcome.report
        write_ready(body, patch, report.phase, report.ok, report.reason, report.message, **report.written())
    post(body, outcome.events)
    if outcome.audit is not None:
        audit(body, memo.audit, outcome.audit.kind, outcome.audit.name, outcome.audit.event, outcome.audit.details)
    if outcome.retry is not None:
        raise kopf.TemporaryError(outcome.retry.message, delay=outcome.retry.delay)
