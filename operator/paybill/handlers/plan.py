"""Plan handlers: read the Plan and what names it, ask lifecycle/plan.py, apply its answer.

A Plan in use is held by its finalizer (the users in a DeletionBlocked condition); a Plan that is gone all the same
makes what referenced it reconcile again, so that broken references show as conditions."""

from __future__ import annotations

from typing import Any

import kopf

from ..api.meta import API_VERSION, GROUP, VERSION
from ..api.plan import PlanSpec
from ..kubeclient import Kube
from ..lifecycle.conditions import set_condition
from ..lifecycle.outcome import said
from ..lifecycle.plan import decide_plan, decide_plan_release, parse_plan, plan_user_touches
from .apply import post, touch_all, write_ready
from .infrastructure import plan_problems


@kopf.on.resume(GROUP, VERSION, "plans")
@kopf.on.create(GROUP, VERSION, "plans")
@kopf.on.update(GROUP, VERSION, "plans")
def reconcile_plan(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, reason: str, **_: Any) -> None:
    meta = body.metadata
    spec = parse_plan(body.spec)
    problems = plan_problems(memo.kube, spec) if isinstance(spec, PlanSpec) else ()
    changed = reason in ("create", "update")
    outcome = decide_plan(spec, changed, meta.uid, meta.get("generation"), problems, said(body.get("status")))
    write_ready(body, patch, outcome.phase, outcome.ready.ok, outcome.ready.reason, outcome.ready.message)
    post(body, outcome.events)
    if outcome.touch_users is not None:
        _touch_users(memo.kube, meta.name, outcome.touch_users)
    if outcome.retry_after is not None:
        raise kopf.TemporaryError(outcome.ready.message, delay=outcome.retry_after)


def _touch_users(kube: Kube, plan: str, value: str) -> None:
    tenants, subscriptions = kube.list(API_VERSION, "tenants"), kube.list(API_VERSION, "subscriptions")
    touch_all(kube, plan_user_touches(plan, value, tenants, subscriptions))


@kopf.on.delete(GROUP, VERSION, "plans")
def release_plan(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """The Plan goes only once no Tenant runs on it and no Subscription bills it; until then its finalizer holds
    it and a DeletionBlocked condition names the users."""
    kube: Kube = memo.kube
    name, status = body.metadata.name, body.get("status") or {}
    tenants, subscriptions = kube.list(API_VERSION, "tenants"), kube.list(API_VERSION, "subscriptions")
    release = decide_plan_release(name, tenants, subscriptions, said(status, "DeletionBlocked"))
    if release.blocked is None:
        return
    post(body, release.events)
    conditions = set_condition(
        list(status.get("conditions") or []),
        "DeletionBlocked",
        True,
        release.blocked.reason,
        release.blocked.message,
        body.metadata.get("generation"),
    )
    kube.merge_patch(API_VERSION, "plans", name, {"status": {"conditions": conditions}}, subresource="status")
    raise kopf.TemporaryError(release.blocked.message, delay=release.retry_after)


def _deleted(type: str, **_: Any) -> bool:  # kopf names the argument
    return type == "DELETED"


@kopf.on.event(GROUP, VERSION, "plans", when=_deleted)
def plan_gone(name: str, memo: kopf.Memo, **_: Any) -> None:
    """A Plan deleted all the same (say, its finalizer removed by hand): what referenced it reconciles again
    and finds it missing."""
    _touch_users(memo.kube, name, f"{name} deleted")
