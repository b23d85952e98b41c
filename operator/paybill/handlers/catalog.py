"""Plan and Subscription handlers: validate, resolve references, write status, re-reconcile tenants.

A Plan in use is held by its finalizer (the users in a DeletionBlocked condition); a Plan or Tenant that is gone
all the same makes what referenced it reconcile again, so that broken references show as conditions."""

from __future__ import annotations

import datetime
from typing import Any

import kopf
from pydantic import ValidationError

from ..api.meta import API_VERSION, GROUP, VERSION
from ..api.plan import PlanSpec
from ..billing.grace import billing_state
from ..kubeclient import Kube
from ..lifecycle.conditions import set_condition
from ..lifecycle.references import Problem, plan_deletion_problem, plan_users, subscription_problem
from . import events
from .apply import touch, write_ready

RELEASE_DELAY = 5  # how often a Plan held by its users looks again


def _condition_of(body: kopf.Body, type_: str = "Ready") -> tuple[str | None, str | None]:
    conditions: list[dict[str, Any]] = (body.get("status") or {}).get("conditions") or []
    condition = next((c for c in conditions if c.get("type") == type_), {})
    return condition.get("reason"), condition.get("message")


def _warn_once(body: kopf.Body, problem: Problem, type_: str = "Ready") -> None:
    """A Warning Event when the problem is new, not on every retry."""
    if _condition_of(body, type_) != (problem.reason, problem.message):
        events.warn(body, reason=problem.reason, message=problem.message)


@kopf.on.resume(GROUP, VERSION, "plans")
@kopf.on.create(GROUP, VERSION, "plans")
@kopf.on.update(GROUP, VERSION, "plans")
def reconcile_plan(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, reason: str, **_: Any) -> None:
    try:
        spec = PlanSpec.model_validate(dict(body.spec))
    except ValidationError as exc:
        message = "; ".join(f"spec.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        write_ready(body, patch, "Invalid", False, "InvalidSpec", message)
        events.warn(body, reason="InvalidSpec", message=message)
        return
    write_ready(body, patch, "Ready", True, "Valid", f"{spec.tier} tier with {spec.isolation} isolation")
    if reason in ("create", "update"):  # what names it reconciles again: a plan it waited for, or changed quotas,
        _touch_users(
            memo.kube,
            body.metadata.name,  # isolation or grace period
            f"{body.metadata.uid}/{body.metadata.get('generation')}",
        )


def _touch_users(kube: Kube, plan: str, value: str) -> None:
    for plural in ("tenants", "subscriptions"):
        for obj in kube.list(API_VERSION, plural):
            if (obj.get("spec") or {}).get("planRef") == plan:
                touch(kube, plural, obj["metadata"]["name"], "plan", value)


def _reconcile_subscription(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo) -> None:
    spec = body.spec
    phase = str(spec.get("billingStatus", "active")).replace("_", " ").title().replace(" ", "")
    plan = memo.kube.get(API_VERSION, "plans", spec["planRef"])
    tenant = memo.kube.get(API_VERSION, "tenants", spec["tenantRef"])
    problem = subscription_problem(spec, tenant, plan)
    if problem is not None:
        _warn_once(body, problem)
        if problem.reason != "PlanMismatch":
            write_ready(body, patch, phase, False, problem.reason, problem.message)
            raise kopf.TemporaryError(problem.message, delay=10)
    assert plan is not None  # a missing plan is a problem above
    state = billing_state(
        spec.get("billingStatus", "active"),
        spec.get("pastDueSince"),
        int(plan["spec"].get("gracePeriodDays", 7)),
        datetime.datetime.now(datetime.UTC),
    )
    previous = (body.get("status") or {}).get("restriction")
    if problem is not None:  # billed all the same, by the plan it names
        write_ready(body, patch, phase, False, problem.reason, problem.message, restriction=str(state.restriction))
    else:
        write_ready(
            body,
            patch,
            phase,
            True,
            "Resolved",
            f"tenant {spec['tenantRef']} on plan {spec['planRef']}: {state.message}",
            restriction=str(state.restriction),
        )
    if previous != state.restriction:
        events.info(
            body, reason="RestrictionChanged", message=f"{previous or 'none'} -> {state.restriction}: {state.message}"
        )
    # The tenant reads billing from its index; the touch makes it look now rather than at its next event.
    touch(
        memo.kube,
        "tenants",
        spec["tenantRef"],
        "billing",
        f"{spec.get('billingStatus', 'active')}/{state.restriction}/{body.metadata.get('generation')}",
    )


@kopf.on.resume(GROUP, VERSION, "subscriptions")
@kopf.on.create(GROUP, VERSION, "subscriptions")
@kopf.on.update(GROUP, VERSION, "subscriptions")
def reconcile_subscription(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    _reconcile_subscription(body, patch, memo)


@kopf.timer(
    GROUP,
    VERSION,
    "subscriptions",
    interval=60,
    idle=30,
    when=lambda spec, **_: spec.get("billingStatus") == "past_due",
)
def grace_clock(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    """A past-due subscription moves on by itself when its grace period ends."""
    _reconcile_subscription(body, patch, memo)


@kopf.on.delete(GROUP, VERSION, "plans")
def release_plan(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """The Plan goes only once no Tenant runs on it and no Subscription bills it; until then its finalizer holds
    it and a DeletionBlocked condition names the users."""
    kube: Kube = memo.kube
    name = body.metadata.name
    users = plan_users(name, kube.list(API_VERSION, "tenants"), kube.list(API_VERSION, "subscriptions"))
    problem = plan_deletion_problem(name, users)
    if problem is None:
        return
    _warn_once(body, problem, "DeletionBlocked")
    conditions = set_condition(
        list((body.get("status") or {}).get("conditions") or []),
        "DeletionBlocked",
        True,
        problem.reason,
        problem.message,
        body.metadata.get("generation"),
    )
    kube.merge_patch(API_VERSION, "plans", name, {"status": {"conditions": conditions}}, subresource="status")
    raise kopf.TemporaryError(problem.message, delay=RELEASE_DELAY)


def _deleted(type: str, **_: Any) -> bool:  # kopf names the argument
    return type == "DELETED"


@kopf.on.event(GROUP, VERSION, "plans", when=_deleted)
def plan_gone(name: str, memo: kopf.Memo, **_: Any) -> None:
    """A Plan deleted all the same (say, its finalizer removed by hand): what referenced it reconciles again
    and finds it missing."""
    _touch_users(memo.kube, name, f"{name} deleted")


@kopf.on.event(GROUP, VERSION, "tenants", when=_deleted)
def tenant_gone(name: str, memo: kopf.Memo, **_: Any) -> None:
    """A Tenant deleted: its Subscriptions reconcile again and find it missing."""
    for subscription in memo.kube.list(API_VERSION, "subscriptions"):
        if (subscription.get("spec") or {}).get("tenantRef") == name:
            touch(memo.kube, "subscriptions", subscription["metadata"]["name"], "tenant", f"{name} deleted")
