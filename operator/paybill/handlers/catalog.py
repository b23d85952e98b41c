"""Plan and Subscription handlers: validate, resolve references, write status."""

from __future__ import annotations

from typing import Any

import kopf
from pydantic import ValidationError

from ..api.meta import API_VERSION, GROUP, VERSION
from ..api.plan import PlanSpec
from ..lifecycle.conditions import set_condition


def _write(body: kopf.Body, patch: kopf.Patch, phase: str, ok: bool, reason: str, message: str) -> None:
    generation = body.metadata.get("generation")
    conditions = set_condition(list((body.get("status") or {}).get("conditions") or []), "Ready", ok, reason,
                               message, generation)
    patch.status.update(phase=phase, observedGeneration=generation, conditions=conditions)


@kopf.on.resume(GROUP, VERSION, "plans")
@kopf.on.create(GROUP, VERSION, "plans")
@kopf.on.update(GROUP, VERSION, "plans")
def reconcile_plan(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    try:
        spec = PlanSpec.model_validate(dict(body.spec))
    except ValidationError as exc:
        message = "; ".join(f"spec.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        _write(body, patch, "Invalid", False, "InvalidSpec", message)
        kopf.warn(body, reason="InvalidSpec", message=message)
        return
    _write(body, patch, "Ready", True, "Valid", f"{spec.tier} tier with {spec.isolation} isolation")


@kopf.on.resume(GROUP, VERSION, "subscriptions")
@kopf.on.create(GROUP, VERSION, "subscriptions")
@kopf.on.update(GROUP, VERSION, "subscriptions")
def reconcile_subscription(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    spec = body.spec
    phase = str(spec.get("billingStatus", "active")).replace("_", " ").title().replace(" ", "")
    missing = [f"{kind} {name!r}" for kind, plural, name in (("plan", "plans", spec["planRef"]),
                                                             ("tenant", "tenants", spec["tenantRef"]))
               if memo.kube.get(API_VERSION, plural, name) is None]
    if missing:
        message = f"{' and '.join(missing)} not found"
        _write(body, patch, phase, False, "ReferenceNotFound", message)
        kopf.warn(body, reason="ReferenceNotFound", message=message)
        raise kopf.TemporaryError(message, delay=10)
    _write(body, patch, phase, True, "Resolved", f"tenant {spec['tenantRef']} on plan {spec['planRef']}")
