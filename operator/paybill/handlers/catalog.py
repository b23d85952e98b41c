"""Plan and Subscription handlers: validate, resolve references, write status, re-reconcile tenants."""

from __future__ import annotations

import datetime
from typing import Any

import kopf
from pydantic import ValidationError

from ..api.meta import API_VERSION, GROUP, VERSION
from ..api.plan import PlanSpec
from ..billing.grace import billing_state
from ..kube.client import Kube, KubeError
from .status import write_ready
from .tenant import TRIGGER


def _touch_tenant(kube: Kube, name: str, key: str, value: str) -> None:
    """Annotate a Tenant so that its own reconcile runs again (kopf sees the annotation change)."""
    try:
        kube.merge_patch(API_VERSION, "tenants", name, {"metadata": {"annotations": {f"{TRIGGER}/{key}": value}}})
    except KubeError as exc:
        if exc.status != 404:
            raise


@kopf.on.resume(GROUP, VERSION, "plans")
@kopf.on.create(GROUP, VERSION, "plans")
@kopf.on.update(GROUP, VERSION, "plans")
def reconcile_plan(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, reason: str, **_: Any) -> None:
    try:
        spec = PlanSpec.model_validate(dict(body.spec))
    except ValidationError as exc:
        message = "; ".join(f"spec.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        write_ready(body, patch, "Invalid", False, "InvalidSpec", message)
        kopf.warn(body, reason="InvalidSpec", message=message)
        return
    write_ready(body, patch, "Ready", True, "Valid", f"{spec.tier} tier with {spec.isolation} isolation")
    if reason == "update":  # a changed plan re-reconciles its tenants (quotas, isolation, grace period)
        for tenant in memo.kube.list(API_VERSION, "tenants"):
            if tenant.get("spec", {}).get("planRef") == body.metadata.name:
                _touch_tenant(memo.kube, tenant["metadata"]["name"], "plan", str(body.metadata.get("generation")))


def _reconcile_subscription(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo) -> None:
    spec = body.spec
    phase = str(spec.get("billingStatus", "active")).replace("_", " ").title().replace(" ", "")
    plan = memo.kube.get(API_VERSION, "plans", spec["planRef"])
    tenant = memo.kube.get(API_VERSION, "tenants", spec["tenantRef"])
    missing = [f"{kind} {name!r}" for kind, name, found in (("plan", spec["planRef"], plan),
                                                             ("tenant", spec["tenantRef"], tenant)) if found is None]
    if missing:
        message = f"{' and '.join(missing)} not found"
        write_ready(body, patch, phase, False, "ReferenceNotFound", message)
        kopf.warn(body, reason="ReferenceNotFound", message=message)
        raise kopf.TemporaryError(message, delay=10)
    state = billing_state(spec.get("billingStatus", "active"), spec.get("pastDueSince"),
                          int(plan["spec"].get("gracePeriodDays", 7)), datetime.datetime.now(datetime.UTC))
    previous = (body.get("status") or {}).get("restriction")
    write_ready(body, patch, phase, True, "Resolved", f"tenant {spec['tenantRef']} on plan {spec['planRef']}: "
                                                 f"{state.message}", restriction=str(state.restriction))
    if previous != state.restriction:
        kopf.info(body, reason="RestrictionChanged", message=f"{previous or 'none'} -> {state.restriction}: "
                                                             f"{state.message}")
    # The tenant reads billing from its index; the touch makes it look now rather than at its next event.
    _touch_tenant(memo.kube, spec["tenantRef"], "billing",
                  f"{spec.get('billingStatus', 'active')}/{state.restriction}/{body.metadata.get('generation')}")


@kopf.on.resume(GROUP, VERSION, "subscriptions")
@kopf.on.create(GROUP, VERSION, "subscriptions")
@kopf.on.update(GROUP, VERSION, "subscriptions")
def reconcile_subscription(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    _reconcile_subscription(body, patch, memo)


@kopf.timer(GROUP, VERSION, "subscriptions", interval=60, idle=30,
            when=lambda spec, **_: spec.get("billingStatus") == "past_due")
def grace_clock(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    """A past-due subscription moves on by itself when its grace period ends."""
    _reconcile_subscription(body, patch, memo)
