"""A Subscription's reconcile and a Tenant's billing, decided without a cluster or a database: the phase from the
billing status, broken references, the restriction ladder under the Plan's grace period and the Events it posts."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from paybill.api.plan import PlanSpec
from paybill.api.subscription import Restriction, SubscriptionSpec
from paybill.billing.grace import Billed, billing_of
from paybill.lifecycle.outcome import InvalidSpec, Notice, Readiness, Touch
from paybill.lifecycle.references import TenantSeen
from paybill.lifecycle.subscription import (
    REFERENCE_RETRY,
    SubscriptionSeen,
    decide_subscription,
    subscriptions_of_tenant_gone,
)

NOW = datetime.datetime(2026, 11, 30, 12, tzinfo=datetime.UTC)
PLAN = PlanSpec.model_validate({"tier": "pro", "isolation": "pooled"})  # the default 7-day grace period
ON_PRO = TenantSeen("pro")


def sub(billing: str = "active", past_due_days: float | None = None, plan: str = "pro") -> SubscriptionSpec:
    since = None if past_due_days is None else (NOW - datetime.timedelta(days=past_due_days)).isoformat()
    return SubscriptionSpec.model_validate(
        {"tenantRef": "acme", "planRef": plan, "billingStatus": billing, "pastDueSince": since}
    )


def seen(**fields: Any) -> SubscriptionSeen:
    return SubscriptionSeen(**{"tenant": ON_PRO, "plan": PLAN, "generation": 3, **fields})


@pytest.mark.parametrize(
    ("billing", "past_due_days", "phase", "restriction", "says"),
    [
        ("active", None, "Active", Restriction.NONE, "subscription is active"),
        ("trialing", None, "Trialing", Restriction.NONE, "subscription is trialing"),
        ("past_due", 1, "PastDue", Restriction.GRACE_PERIOD, "full service until the grace period ends at"),
        ("past_due", None, "PastDue", Restriction.GRACE_PERIOD, "full service until the grace period ends at"),
        ("past_due", 8, "PastDue", Restriction.GRACE_PERIOD_OVER, "the 7-day grace period is over; data is read-only"),
        ("unpaid", None, "Unpaid", Restriction.RESTRICTED, "subscription is unpaid; service is suspended"),
        ("paused", None, "Paused", Restriction.RESTRICTED, "subscription is paused; service is suspended"),
        ("canceled", None, "Canceled", Restriction.RESTRICTED, "subscription is canceled; service is suspended"),
    ],
)
def test_the_phase_and_restriction_follow_the_billing_status(
    billing: str, past_due_days: float | None, phase: str, restriction: Restriction, says: str
) -> None:
    outcome = decide_subscription(sub(billing, past_due_days), seen(restriction=str(restriction)), NOW)
    assert (outcome.phase, outcome.restriction, outcome.retry_after) == (phase, restriction, None)
    assert outcome.ready.ok is True and outcome.ready.reason == "Resolved"
    assert outcome.ready.message.startswith("tenant acme on plan pro: ") and says in outcome.ready.message
    assert outcome.events == ()  # the restriction did not change
    assert outcome.status_fields() == {"restriction": str(restriction)}
    assert outcome.touches == (Touch("tenants", "acme", "billing", f"{billing}/{restriction}/3"),)


GONE = TenantSeen("pro", deleting=True)
INVALID = InvalidSpec("spec.tier: String should match pattern")


@pytest.mark.parametrize(
    ("tenant", "plan", "reason", "message"),
    [
        (None, PLAN, "ReferenceNotFound", "tenant 'acme' not found"),
        (ON_PRO, None, "ReferenceNotFound", "plan 'pro' not found"),
        (None, None, "ReferenceNotFound", "plan 'pro' and tenant 'acme' not found"),
        (GONE, PLAN, "TenantDeleting", "tenant 'acme' is being deleted"),
        (ON_PRO, INVALID, "PlanInvalid", "plan 'pro' is invalid: spec.tier: String should match pattern"),
        (TenantSeen("free"), INVALID, "PlanInvalid", "plan 'pro' is invalid: spec.tier: String should match pattern"),
        (None, INVALID, "ReferenceNotFound", "tenant 'acme' not found"),
    ],
)
def test_a_broken_reference_is_not_ready_not_billed_and_retried(
    tenant: TenantSeen | None, plan: PlanSpec | InvalidSpec | None, reason: str, message: str
) -> None:
    outcome = decide_subscription(sub("unpaid"), seen(tenant=tenant, plan=plan, restriction="none"), NOW)
    assert outcome.phase == "Unpaid"
    assert outcome.ready == Readiness(False, reason, message)
    assert (outcome.restriction, outcome.touches, outcome.retry_after) == (None, (), REFERENCE_RETRY)
    assert outcome.status_fields() == {}  # the restriction last written stays
    assert outcome.events == (Notice(reason, message, warning=True),)


def test_a_problem_is_warned_about_once_not_on_every_retry() -> None:
    first = decide_subscription(sub(), seen(tenant=None), NOW)
    again = decide_subscription(sub(), seen(tenant=None, ready=(first.ready.reason, first.ready.message)), NOW)
    assert len(first.events) == 1 and again.events == ()
    other = decide_subscription(sub(), seen(tenant=None, ready=("ReferenceNotFound", "plan 'pro' not found")), NOW)
    assert len(other.events) == 1  # the same reason with another message is news


def test_a_tenant_on_another_plan_is_not_ready_but_billed_by_the_plan_it_names() -> None:
    short = PlanSpec.model_validate({"tier": "pro", "isolation": "pooled", "gracePeriodDays": 3})
    mismatch = ("PlanMismatch", "tenant 'acme' is on plan 'free', this subscription bills plan 'pro'")
    outcome = decide_subscription(
        sub("past_due", 4), seen(tenant=TenantSeen("free"), plan=short, restriction="grace_period"), NOW
    )
    assert outcome.ready == Readiness(False, *mismatch)
    assert outcome.restriction == Restriction.GRACE_PERIOD_OVER  # the named plan's 3 days, not the default 7
    assert outcome.retry_after is None
    assert [(e.reason, e.warning) for e in outcome.events] == [("PlanMismatch", True), ("RestrictionChanged", False)]
    assert outcome.touches == (Touch("tenants", "acme", "billing", "past_due/grace_period_over/3"),)
    said = decide_subscription(sub("past_due", 4), seen(tenant=TenantSeen("free"), plan=short, ready=mismatch), NOW)
    assert [e.reason for e in said.events] == ["RestrictionChanged"]


@pytest.mark.parametrize(
    ("previous", "billing", "event"),
    [
        (None, "active", "none -> none: subscription is active"),  # the first reconcile says where it starts
        ("none", "active", None),
        ("none", "unpaid", "none -> restricted: subscription is unpaid; service is suspended"),
        ("restricted", "active", "restricted -> none: subscription is active"),
        ("restricted", "canceled", None),
    ],
)
def test_a_changed_restriction_is_an_event(previous: str | None, billing: str, event: str | None) -> None:
    outcome = decide_subscription(sub(billing), seen(restriction=previous), NOW)
    assert outcome.events == (() if event is None else (Notice("RestrictionChanged", event),))


@pytest.mark.parametrize(
    ("grace_days", "past_due_for", "restriction"),
    [
        (7, datetime.timedelta(days=7) - datetime.timedelta(seconds=1), Restriction.GRACE_PERIOD),
        (7, datetime.timedelta(days=7), Restriction.GRACE_PERIOD_OVER),
        (1, datetime.timedelta(hours=23), Restriction.GRACE_PERIOD),
        (1, datetime.timedelta(days=1), Restriction.GRACE_PERIOD_OVER),
        (0, datetime.timedelta(0), Restriction.GRACE_PERIOD_OVER),
    ],
)
def test_the_grace_clock_runs_out_at_the_plans_grace_period(
    grace_days: int, past_due_for: datetime.timedelta, restriction: Restriction
) -> None:
    plan = PlanSpec.model_validate({"tier": "pro", "isolation": "pooled", "gracePeriodDays": grace_days})
    spec = sub("past_due", 0)  # past due since NOW; the clock is read later
    outcome = decide_subscription(spec, seen(plan=plan, restriction="grace_period"), NOW + past_due_for)
    assert outcome.restriction == restriction
    changed = restriction != Restriction.GRACE_PERIOD
    assert [e.message.split(":")[0] for e in outcome.events] == (
        ["grace_period -> grace_period_over"] if changed else []
    )


def test_a_deleted_tenants_subscriptions_reconcile_again() -> None:
    subscriptions = [
        {"metadata": {"name": "acme"}, "spec": {"tenantRef": "acme", "planRef": "pro"}},
        {"metadata": {"name": "acme-2"}, "spec": {"tenantRef": "acme", "planRef": "free"}},
        {"metadata": {"name": "globex"}, "spec": {"tenantRef": "globex", "planRef": "pro"}},
        {"metadata": {"name": "empty"}},
    ]
    assert subscriptions_of_tenant_gone("acme", subscriptions) == (
        Touch("subscriptions", "acme", "tenant", "acme deleted"),
        Touch("subscriptions", "acme-2", "tenant", "acme deleted"),
    )
    assert subscriptions_of_tenant_gone("initech", subscriptions) == ()


@pytest.mark.parametrize(
    ("subscriptions", "grace_days", "restriction", "message"),
    [
        ([], 7, Restriction.NONE, "no subscription: not billed"),
        ([("acme", "active", None)], 7, Restriction.NONE, "subscription is active"),
        ([("b", "active", None), ("a", "unpaid", None)], 7, Restriction.RESTRICTED, "subscription is unpaid"),
        ([("a", "past_due", 2), ("b", "unpaid", None)], 7, Restriction.GRACE_PERIOD, "payment past due"),
        ([("a", "past_due", 2)], 1, Restriction.GRACE_PERIOD_OVER, "the 1-day grace period is over"),
    ],
)
def test_a_tenants_billing_is_its_first_subscription_by_name_under_its_plan(
    subscriptions: list[tuple[str, str, float | None]], grace_days: int, restriction: Restriction, message: str
) -> None:
    plan = PlanSpec.model_validate({"tier": "pro", "isolation": "pooled", "gracePeriodDays": grace_days})
    billed = [Billed(name, sub(billing, days)) for name, billing, days in subscriptions]
    state = billing_of(billed, plan, NOW)
    assert state.restriction == restriction and message in state.message
