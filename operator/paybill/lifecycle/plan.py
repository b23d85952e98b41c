"""A Plan's reconcile, decided: Ready when its spec is valid, what names it reconciles again when it changes or
goes, and whether its deletion waits for its users. Pure: the handlers read the objects, call these and apply what
they return."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from ..api.plan import PlanSpec
from .outcome import InvalidSpec, Notice, Readiness, Said, Touch, warn_once
from .references import Problem, plan_deletion_problem, plan_users

RELEASE_DELAY = 5  # seconds: how often a Plan held by its users looks again
PROVISIONING_RECHECK = 30  # seconds: a Plan whose provisioning lacks something looks again (a Secret made later)


def parse_plan(spec: Mapping[str, Any]) -> PlanSpec | InvalidSpec:
    try:
        return PlanSpec.model_validate(dict(spec))
    except ValidationError as exc:
        return InvalidSpec.of(exc)


@dataclass(frozen=True)
class PlanOutcome:
    phase: str
    ready: Readiness
    events: tuple[Notice, ...] = ()
    touch_users: str | None = None  # annotate the Tenants and Subscriptions naming the Plan with this value
    retry_after: float | None = None  # look again then


def decide_plan(
    spec: PlanSpec | InvalidSpec,
    changed: bool,
    uid: str | None,
    generation: int | None,
    provisioning_problems: tuple[str, ...] = (),
    said_ready: Said = (None, None),
    cloud_ready: tuple[bool, str, str] | None = None,
) -> PlanOutcome:
    """`changed`: created or updated (not resumed), so what names the Plan looks again: a Tenant or Subscription
    that waited for it, or one whose quotas, isolation or grace period it changed. `provisioning_problems`: what
    its spec.provisioning lacks (module, contract, credentials), found before any Terraform run; its tenants
    wait while there are any (they are touched all the same, so that they say why); it looks again every
    PROVISIONING_RECHECK seconds, warning once per problem. `cloud_ready`: the cloud preflight's CloudReady
    condition (None: none was made); failed, the Plan is not Ready for the same reason, looked at again as well."""
    if isinstance(spec, InvalidSpec):
        return PlanOutcome(
            "Invalid", Readiness(False, "InvalidSpec", spec.message), (Notice("InvalidSpec", spec.message, True),)
        )
    touch = f"{uid}/{generation}" if changed else None
    if provisioning_problems:
        message = "spec.provisioning: " + "; ".join(provisioning_problems)
        events = warn_once(said_ready, "ProvisioningInvalid", message)
        ready = Readiness(False, "ProvisioningInvalid", message)
        return PlanOutcome("Invalid", ready, events, touch, PROVISIONING_RECHECK)
    if cloud_ready is not None and not cloud_ready[0]:
        _, reason, message = cloud_ready
        message = f"cloud preflight: {message}"
        return PlanOutcome(
            "Invalid",
            Readiness(False, reason, message),
            warn_once(said_ready, reason, message),
            touch,
            PROVISIONING_RECHECK,
        )
    provisioned = f", infrastructure from {spec.provisioning.cloud}" if spec.provisioning else ""
    ready = Readiness(True, "Valid", f"{spec.tier} tier with {spec.isolation} isolation{provisioned}")
    return PlanOutcome("Ready", ready, touch_users=touch)


def plan_user_touches(
    plan: str, value: str, tenants: Iterable[Mapping[str, Any]], subscriptions: Iterable[Mapping[str, Any]]
) -> tuple[Touch, ...]:
    """Every Tenant and Subscription naming the Plan, annotated with `value` (whatever their state)."""
    return tuple(
        Touch(plural, obj["metadata"]["name"], "plan", value)
        for plural, objects in (("tenants", tenants), ("subscriptions", subscriptions))
        for obj in objects
        if (obj.get("spec") or {}).get("planRef") == plan
    )


@dataclass(frozen=True)
class PlanRelease:
    """A Plan being deleted: held by its finalizer while something uses it (a DeletionBlocked condition)."""

    blocked: Problem | None  # None: released
    events: tuple[Notice, ...] = ()
    retry_after: float | None = None


def decide_plan_release(
    plan: str, tenants: Iterable[Mapping[str, Any]], subscriptions: Iterable[Mapping[str, Any]], said_blocked: Said
) -> PlanRelease:
    """Released once no Tenant runs on the Plan and no Subscription bills it; until then held, the users named."""
    problem = plan_deletion_problem(plan, plan_users(plan, tenants, subscriptions))
    if problem is None:
        return PlanRelease(None)
    return PlanRelease(problem, warn_once(said_blocked, problem.reason, problem.message), RELEASE_DELAY)
