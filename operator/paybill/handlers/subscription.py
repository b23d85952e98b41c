"""Subscription handlers: read the Subscription, its Tenant and its Plan, ask lifecycle/subscription.py, apply its
answer (status, Events, a nudge to the Tenant). A past-due Subscription is looked at again every minute, so its
grace period runs out on time; a deleted Tenant makes its Subscriptions reconcile again and find it missing."""

from __future__ import annotations

import datetime
from typing import Any

import kopf

from ..api.meta import API_VERSION, GROUP, VERSION
from ..api.subscription import BillingStatus, SubscriptionSpec
from ..kubeclient import Kube
from ..lifecycle.outcome import said
from ..lifecycle.plan import parse_plan
from ..lifecycle.references import TenantSeen
from ..lifecycle.subscription import SubscriptionSeen, decide_subscription, subscriptions_of_tenant_gone
from .apply import post, touch_all, write_ready
from .instrument import leading_now, reconciles


def _observe(kube: Kube, body: kopf.Body, spec: SubscriptionSpec) -> SubscriptionSeen:
    plan = kube.get(API_VERSION, "plans", spec.planRef)
    tenant = kube.get(API_VERSION, "tenants", spec.tenantRef)
    status = body.get("status") or {}
    return SubscriptionSeen(
        tenant=None if tenant is None else TenantSeen.of(tenant),
        plan=None if plan is None else parse_plan(plan.get("spec") or {}),
        restriction=status.get("restriction"),
        ready=said(status),
        generation=body.metadata.get("generation"),
    )


def _reconcile(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo) -> None:
    spec = SubscriptionSpec.model_validate(dict(body.spec))
    outcome = decide_subscription(spec, _observe(memo.kube, body, spec), datetime.datetime.now(datetime.UTC))
    ready = outcome.ready
    write_ready(body, patch, outcome.phase, ready.ok, ready.reason, ready.message, **outcome.status_fields())
    post(body, outcome.events)
    touch_all(memo.kube, outcome.touches)
    if outcome.retry_after is not None:
        raise kopf.TemporaryError(outcome.ready.message, delay=outcome.retry_after)


@kopf.on.resume(GROUP, VERSION, "subscriptions")
@kopf.on.create(GROUP, VERSION, "subscriptions")
@kopf.on.update(GROUP, VERSION, "subscriptions")
@reconciles("subscription")
def reconcile_subscription(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    _reconcile(body, patch, memo)


@kopf.timer(
    GROUP,
    VERSION,
    "subscriptions",
    interval=60,
    idle=30,
    when=lambda spec, **_: spec.get("billingStatus") == BillingStatus.PAST_DUE,
)
def grace_clock(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    """A past-due subscription moves on by itself when its grace period ends (on the leader only)."""
    if leading_now():
        _reconcile(body, patch, memo)


def _deleted(type: str, **_: Any) -> bool:  # kopf names the argument
    return type == "DELETED"


@kopf.on.event(GROUP, VERSION, "tenants", when=_deleted)
def tenant_gone(name: str, memo: kopf.Memo, **_: Any) -> None:
    """A Tenant deleted: its Subscriptions reconcile again and find it missing."""
    touch_all(memo.kube, subscriptions_of_tenant_gone(name, memo.kube.list(API_VERSION, "subscriptions")))
