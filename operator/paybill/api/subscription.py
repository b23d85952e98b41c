"""Subscription: the billing state that binds a tenant to a plan."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from .meta import AGE_COLUMN, PHASE_COLUMN, CrdInfo, CustomResource, Model, PrinterColumn, Status
from .plan import NAME


class BillingStatus(StrEnum):
    TRIALING = "trialing"
    ACTIVE = "active"
    PAST_DUE = "past_due"
    UNPAID = "unpaid"
    PAUSED = "paused"
    CANCELED = "canceled"


class Restriction(StrEnum):
    NONE = "none"
    GRACE_PERIOD = "grace_period"
    GRACE_PERIOD_OVER = "grace_period_over"
    RESTRICTED = "restricted"


class SubscriptionSpec(Model):
    tenantRef: str = Field(pattern=NAME, max_length=63, description="Name of the Tenant billed.")
    planRef: str = Field(pattern=NAME, max_length=63, description="Name of the Plan subscribed to.")
    billingStatus: BillingStatus = Field(
        default=BillingStatus.ACTIVE, description="Billing status as reported by the payment provider."
    )
    pastDueSince: str | None = Field(default=None, description="When the subscription became past due (RFC 3339).")


class SubscriptionStatus(Status):
    restriction: Restriction = Field(
        default=Restriction.NONE, description="Service restriction derived from billing and grace period."
    )


class Subscription(CustomResource):
    """Billing state of one tenant on one plan."""

    crd = CrdInfo(
        kind="Subscription",
        plural="subscriptions",
        singular="subscription",
        namespaced=False,
        short_names=("pbsub",),
        description="Subscription is the billing state that binds a Tenant to a Plan.",
        printer_columns=(
            PrinterColumn("Tenant", ".spec.tenantRef"),
            PrinterColumn("Plan", ".spec.planRef"),
            PrinterColumn("Billing", ".spec.billingStatus"),
            PHASE_COLUMN,
            AGE_COLUMN,
        ),
    )
    spec: SubscriptionSpec
    status: SubscriptionStatus | None = None
