"""Tenant handlers: read the world, ask lifecycle.reconcile what to do, do it, write the status it built.

Level-based and idempotent: every reconcile reads the world (plan, subscriptions, namespace, recorded database
placement) and converges it, so an operator killed at any point reaches the same end state.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kopf
import psycopg

from ..api.meta import API_VERSION, GROUP, VERSION
from ..api.plan import Isolation, PlanSpec
from ..api.subscription import SubscriptionSpec
from ..billing.grace import Billed
from ..database import DatabaseUnavailable, TenantDatabases
from ..database.control import name_claim
from ..lifecycle import reconcile as decisions
from ..lifecycle.evidence import PlacementMismatch
from ..lifecycle.reconcile import Observed, Outcome, TenantObject
from ..lifecycle.tenant import SecretConflict
from . import events
from .apply import operator_namespace, post
from .health import checked, last_known, observe_health
from .infrastructure import observe_infrastructure
from .instrument import reconciles
from .tenant_actions import TenantActions, failure_of


@kopf.index(GROUP, VERSION, "subscriptions")
def subscriptions_by_tenant(name: str, spec: kopf.Spec, **_: Any) -> dict[str, Billed]:
    """The subscriptions of each tenant, in memory (the billing the reconcile reads)."""
    return {spec.get("tenantRef", ""): Billed(name, SubscriptionSpec.model_validate(dict(spec)))}


def read(body: kopf.Body) -> TenantObject:
    """The Tenant, parsed once through its models."""
    return TenantObject.of(body)


def observe(tenant: TenantObject, memo: kopf.Memo, subscriptions: list[Billed], retry: int) -> Observed:
    """The world one reconcile decides on: plan, billing, namespace, and where the data is."""
    plan = memo.kube.get(API_VERSION, "plans", tenant.spec.planRef)
    spec = PlanSpec.model_validate(plan["spec"]) if plan is not None else None
    plan_object = decisions.PlanObject(plan["metadata"]["name"], spec) if plan is not None and spec else None
    return Observed(
        plan=plan_object,
        subscriptions=tuple(subscriptions),
        namespace=memo.kube.get("v1", "namespaces", tenant.namespace),
        operator_namespace=operator_namespace(),
        database_configured=memo.databases is not None,
        retry=retry,
        infrastructure=observe_infrastructure(memo, tenant, plan_object),
        **_observe_data(tenant, memo, spec.isolation if spec else None),
    )


def _observe_data(tenant: TenantObject, memo: kopf.Memo, isolation: str | None) -> dict[str, Any]:
    databases: TenantDatabases | None = memo.databases
    if databases is None:
        return {}
    try:
        retained_by = databases.retained_by(tenant.name)
        claim = name_claim(tenant.name, tenant.uid, retained_by, tenant.adopt_retained)
        if claim.refused is not None:  # an earlier Tenant's retained data: never this one's unless it adopts it
            return {"retained": claim.refused}
        current, moving_to, previous = databases.recorded(tenant.name)
        place = functools.partial(databases.placement_for, tenant.name)
        target, left = place(isolation) if isolation else None, (place(previous),) if previous else ()
        others = tuple(place(other) for other in Isolation if current is None or other != current.isolation)
        known = last_known(databases, tenant) if current is None else None
    except (DatabaseUnavailable, psycopg.Error, SecretConflict, PlacementMismatch) as exc:
        return {"data_error": failure_of(exc, "reading the placement")}
    try:  # a check that cannot be made never holds up what the decision must do (a suspension, say)
        health = observe_health(memo.kube, databases, tenant, current) if current and checked(tenant) else None
    except (DatabaseUnavailable, psycopg.Error, SecretConflict):
        health = None
    backup, own = tenant.status.backup, own_backup(databases, tenant)
    intact = backup is not None and Path(backup.location) == own and _intact(own, backup.sha256)
    data = decisions.DataPlacement(current, left, target, place(moving_to) if moving_to else None, others, known)
    kept = retained_by == tenant.uid
    return {"data": data, "backup_intact": intact, "health": health, "kept_by_this_tenant": kept}


def decide_safely(tenant: TenantObject, decide: Callable[[], Outcome], retry: int) -> Outcome:
    """The decision; if reading the world failed, the decision on that failure."""
    try:
        return decide()
    except Exception as exc:  # a failed read is a condition and an Event too
        failure = failure_of(exc, "reading the world")
        if decisions.offboarding(tenant):
            return decisions.failed_offboarding(tenant, failure)
        return decisions.failed(tenant, failure, retry)


def carry_out(actions: TenantActions, outcome: Outcome, retry: int, patch: kopf.Patch | None) -> None:
    """The actions in order (if one fails, what the decisions make of the failure instead of the rest); then the
    transitions, the status, the Events, and a retry if one is asked for."""
    step = "reconcile"
    try:
        for action in outcome.actions:
            step = type(action).__name__
            actions.act(action)
    except Exception as exc:  # every failure is a condition, an Event and a retry, never only a log line
        failure = failure_of(exc, step)
        if outcome.offboarding:
            outcome = decisions.failed_offboarding(actions.tenant, failure, actions.phase)
        else:
            outcome = decisions.failed(actions.tenant, failure, retry, actions.phase)
    actions.record(outcome.transitions, outcome.why)
    if outcome.status is not None and patch is not None:
        patch.status.update(outcome.status.model_dump(mode="json", by_alias=True, exclude_unset=True))
    post(actions.body, outcome.events)
    if outcome.retry is not None:
        raise kopf.TemporaryError(outcome.retry_message, delay=outcome.retry)


def own_backup(databases: TenantDatabases, tenant: TenantObject) -> Path | None:
    """Where this Tenant's final backup is, by the operator's own naming (never a path status names)."""
    directory = databases.backup_dir
    return directory / f"{decisions.backup_label(tenant)}.sql" if directory is not None else None


def _intact(location: Path, sha256: str) -> bool:
    return location.exists() and hashlib.sha256(location.read_bytes()).hexdigest() == sha256


@kopf.on.resume(GROUP, VERSION, "tenants")
@kopf.on.create(GROUP, VERSION, "tenants")
@kopf.on.update(GROUP, VERSION, "tenants")  # type: ignore[arg-type]  # kopf passes the index by its name
@reconciles("tenant")
def reconcile_tenant(
    body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, retry: int, subscriptions_by_tenant: kopf.Index, **_: Any
) -> None:
    tenant = read(body)
    subscriptions = list(subscriptions_by_tenant.get(tenant.name, []))
    outcome = decide_safely(
        tenant, lambda: decisions.decide(tenant, observe(tenant, memo, subscriptions, retry)), retry
    )
    carry_out(TenantActions(body, tenant, memo), outcome, retry, patch)


@kopf.on.delete(GROUP, VERSION, "tenants")
@reconciles("tenant")
def delete_tenant(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, retry: int, **_: Any) -> None:
    tenant = read(body)
    actions = TenantActions(body, tenant, memo)
    offboarding = decide_safely(
        tenant, lambda: decisions.offboard(tenant, observe(tenant, memo, [], retry), True), retry
    )
    carry_out(actions, offboarding, retry, patch)
    if actions.backup is not None:
        message = f"tenant deleted; final backup {actions.backup.location} sha256 {actions.backup.sha256}"
        events.info(body, reason="Offboarded", message=message)
