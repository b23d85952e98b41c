"""A Subscription's reconcile, decided: its phase from the billing status, its Ready condition from its references,
the restriction its Plan's grace period gives, the Events to post and the Tenant to nudge; and a Tenant's billing
from its Subscriptions. Pure: the handlers read the objects, call these and apply what they return."""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..api.plan import PlanSpec
from ..api.subscription import BillingStatus, Restriction, SubscriptionSpec, SubscriptionStatus
from ..billing.grace import BillingState, billing_state
from .outcome import InvalidSpec, Notice, Readiness, Said, Touch, warn_once
from .references import Problem, TenantSeen, reference_problem

REFERENCE_RETRY = 10  # seconds: how often a Subscription with a broken reference looks again
PLAN_MISMATCH = "PlanMismatch"  # a problem that leaves the Subscription billed, by the plan it names


@dataclass(frozen=True)
class SubscriptionSeen:
    """What one reconcile of a Subscription read: its Tenant and Plan (None: not found) and its own status."""

    tenant: TenantSeen | None
    plan: PlanSpec | InvalidSpec | None
    restriction: str | None = None  # status.restriction as last written
    ready: Said = (None, None)  # its Ready condition as last written
    generation: int | None = None


@dataclass(frozen=True)
class SubscriptionOutcome:
    phase: str
    ready: Readiness
    restriction: Restriction | None  # None: not billed (a broken reference), status.restriction left as it is
    events: tuple[Notice, ...] = ()
    touches: tuple[Touch, ...] = ()
    retry_after: float | None = None  # seconds until it looks again; the Ready message says why

    def status_fields(self) -> dict[str, Any]:
        """The status fields beside phase and conditions, through the model: the restriction, when billed."""
        if self.restriction is None:
            return {}
        return SubscriptionStatus(restriction=self.restriction).model_dump(include={"restriction"})


def phase_of(status: BillingStatus | str) -> str:
    """The Subscription's phase names its billing status: past_due -> PastDue."""
    return str(BillingStatus(status)).replace("_", " ").title().replace(" ", "")


def problem_of(spec: SubscriptionSpec, seen: SubscriptionSeen) -> Problem | None:
    """Why the Subscription is not Ready: a reference problem, or a Plan whose spec its model refuses."""
    problem = reference_problem(spec.tenantRef, spec.planRef, seen.tenant, plan_found=seen.plan is not None)
    if isinstance(seen.plan, InvalidSpec) and (problem is None or problem.reason == PLAN_MISMATCH):
        return Problem("PlanInvalid", f"plan {spec.planRef!r} is invalid: {seen.plan.message}")
    return problem


def decide_subscription(spec: SubscriptionSpec, seen: SubscriptionSeen, now: datetime.datetime) -> SubscriptionOutcome:
    phase = phase_of(spec.billingStatus)
    problem = problem_of(spec, seen)
    warnings = () if problem is None else warn_once(seen.ready, problem.reason, problem.message)
    if problem is not None and problem.reason != PLAN_MISMATCH:
        return SubscriptionOutcome(
            phase, Readiness(False, problem.reason, problem.message), None, warnings, retry_after=REFERENCE_RETRY
        )
    assert isinstance(seen.plan, PlanSpec)  # a missing or invalid plan is a problem above
    state = billing_state(spec.billingStatus, spec.pastDueSince, seen.plan.gracePeriodDays, now)
    if problem is not None:  # billed all the same, by the plan it names
        ready = Readiness(False, problem.reason, problem.message)
    else:
        ready = Readiness(True, "Resolved", f"tenant {spec.tenantRef} on plan {spec.planRef}: {state.message}")
    changed = () if seen.restriction == state.restriction else (_restriction_changed(seen.restriction, state),)
    # The tenant reads billing from its index; the touch makes it look now rather than at its next event.
    touch = Touch("tenants", spec.tenantRef, "billing", f"{spec.billingStatus}/{state.restriction}/{seen.generation}")
    return SubscriptionOutcome(phase, ready, state.restriction, warnings + changed, (touch,))


def _restriction_changed(previous: str | None, state: BillingState) -> Notice:
    return Notice("RestrictionChanged", f"{previous or 'none'} -> {state.restriction}: {state.message}")


def subscriptions_of_tenant_gone(tenant: str, subscriptions: Iterable[Mapping[str, Any]]) -> tuple[Touch, ...]:
    """A Tenant deleted: its Subscriptions reconcile again and find it missing."""
    return tuple(
        Touch("subscriptions", s["metadata"]["name"], "tenant", f"{tenant} deleted")
        for s in subscriptions
        if (s.get("spec") or {}).get("tenantRef") == tenant
    )
