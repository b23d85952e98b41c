"""From billing status and grace period to the tenant's restriction and data access. Pure.

active, trialing                      -> none               full service
past_due, within the grace period     -> grace_period       full service, a warning
past_due, grace period over           -> grace_period_over  read-only: writes refused
unpaid, paused, canceled              -> restricted         suspended (cause: billing)
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from dataclasses import dataclass

from ..api.plan import PlanSpec
from ..api.subscription import BillingStatus, Restriction, SubscriptionSpec
from ..api.tenant import Access


@dataclass(frozen=True)
class BillingState:
    restriction: Restriction
    message: str
    recheck_after: float | None = None  # seconds until the restriction changes by itself (grace ends)

    @property
    def suspends(self) -> bool:
        return self.restriction == Restriction.RESTRICTED

    @property
    def access(self) -> Access:
        if self.restriction == Restriction.RESTRICTED:
            return Access.NONE
        return Access.READ_ONLY if self.restriction == Restriction.GRACE_PERIOD_OVER else Access.FULL


def parse_time(value: str | None) -> datetime.datetime | None:
    if not value:
        return None
    parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)


def billing_state(
    status: BillingStatus | str, past_due_since: str | None, grace_days: int, now: datetime.datetime
) -> BillingState:
    status = BillingStatus(status)
    if status in (BillingStatus.ACTIVE, BillingStatus.TRIALING):
        return BillingState(Restriction.NONE, f"subscription is {status}")
    if status == BillingStatus.PAST_DUE:
        since = parse_time(past_due_since) or now
        ends = since + datetime.timedelta(days=grace_days)
        if now < ends:
            return BillingState(
                Restriction.GRACE_PERIOD,
                f"payment past due; full service until the grace period ends at {ends.strftime('%Y-%m-%dT%H:%M:%SZ')}",
                (ends - now).total_seconds(),
            )
        return BillingState(
            Restriction.GRACE_PERIOD_OVER,
            f"payment past due and the {grace_days}-day grace period is over; data is read-only",
        )
    return BillingState(Restriction.RESTRICTED, f"subscription is {status}; service is suspended")


@dataclass(frozen=True)
class Billed:
    """One Subscription of a Tenant, by name."""

    name: str
    spec: SubscriptionSpec


def billing_of(subscriptions: Iterable[Billed], plan: PlanSpec, now: datetime.datetime) -> BillingState:
    """A Tenant's billing: by its Subscription first in name order, under its Plan's grace period; not billed
    without one."""
    first = min(subscriptions, key=lambda billed: billed.name, default=None)
    if first is None:
        return BillingState(Restriction.NONE, "no subscription: not billed")
    return billing_state(first.spec.billingStatus, first.spec.pastDueSince, plan.gracePeriodDays, now)
