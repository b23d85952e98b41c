"""Plan: a commercial tier with its isolation model, entitlements and quotas."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field

from .meta import (
    AGE_COLUMN,
    LIST_SET,
    READY_COLUMN,
    CrdInfo,
    CustomResource,
    Model,
    PrinterColumn,
    Status,
    ValidationRule,
)

QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|Ki|Mi|Gi|Ti|k|M|G|T)?$"
NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
MAX_UNIT_PRICES = 64  # bounds the pay-as-you-go CEL rule's size() of unitPrices


class Isolation(StrEnum):
    SILO = "silo"
    POOLED = "pooled"
    BRIDGE = "bridge"


class BillingInterval(StrEnum):
    MONTH = "month"
    YEAR = "year"
    NONE = "none"


class Cloud(StrEnum):
    """Where a plan's tenants get their infrastructure (operator/paybill/terraform/modules/<cloud>/<isolation>)."""

    LOCAL = "local"
    AWS = "aws"


class Approval(StrEnum):
    AUTO = "auto"
    MANUAL = "manual"


class Provisioning(Model):
    cloud: Cloud = Field(description="Cloud whose module (one per isolation model) builds each tenant's resources.")
    module: str | None = Field(
        default=None,
        pattern=NAME,
        max_length=63,
        description="A module directory under the operator's PAYBILL_TERRAFORM_MODULES_DIR, used instead of the "
        "shipped <cloud>/<isolation> module; it must meet the module contract.",
    )
    approval: Approval = Field(
        default=Approval.AUTO,
        description="auto applies each plan at once; manual stops after planning until the Tenant is annotated "
        "paybill.dev/approve-plan=<plan hash>.",
    )
    region: str = Field(default="us-east-1", pattern=NAME, max_length=63, description="Region passed to the module.")
    costCenter: str = Field(
        default="", max_length=63, description="Tagged on every resource; defaults to the plan's tier."
    )
    credentialsSecret: str | None = Field(
        default=None,
        pattern=NAME,
        max_length=253,
        description="Secret in the operator's namespace with the provider's credentials (aws: AWS_ACCESS_KEY_ID, "
        "AWS_SECRET_ACCESS_KEY); only provider variables (AWS_*, ARM_*, GOOGLE_*, ...) reach Terraform.",
    )
    driftCheckSeconds: int = Field(
        default=0, ge=0, le=604800, description="Check each tenant's infrastructure for drift this often (0: never)."
    )
    autoRemediate: bool = Field(default=False, description="Re-apply the module when drift is found.")


class Entitlements(Model):
    features: dict[str, bool] = Field(default_factory=dict, description="Boolean feature flags.")
    limits: dict[str, int] = Field(default_factory=dict, description="Numeric limits by name.")
    allowedValues: dict[str, Annotated[list[str], Field(json_schema_extra=LIST_SET)]] = Field(
        default_factory=dict, description="Sets of allowed values by name."
    )


class Quotas(Model):
    cpu: str = Field(default="1", pattern=QUANTITY, description="CPU for the tenant namespace (quantity).")
    memory: str = Field(default="1Gi", pattern=QUANTITY, description="Memory for the tenant namespace.")
    storage: str = Field(default="5Gi", pattern=QUANTITY, description="Persistent storage for the tenant.")
    databaseSizeMi: int = Field(default=1024, ge=1, description="Maximum tenant database size in MiB.")
    maxAgents: int = Field(default=1, ge=0, le=10000, description="Maximum number of AI agents.")
    agentStatementsPerDay: int = Field(default=1000, ge=0, description="Agent SQL statements allowed per day.")


class Pricing(Model):
    interval: BillingInterval = Field(default=BillingInterval.MONTH, description="Billing interval.")
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$", description="ISO 4217 currency code.")
    unitPrices: dict[str, str] = Field(
        default_factory=dict, max_length=MAX_UNIT_PRICES, description="Unit prices by metered unit, as decimal strings."
    )
    payAsYouGo: bool = Field(default=False, description="Whether usage is billed in arrears.")


class PlanSpec(Model):
    tier: str = Field(pattern=NAME, max_length=63, description="Tier name, e.g. free, pro, enterprise.")
    isolation: Isolation = Field(
        description="Tenant data isolation: silo (own database), bridge "
        "(own schema) or pooled (shared tables with row-level security)."
    )
    entitlements: Entitlements = Field(default_factory=Entitlements, description="What the plan grants.")
    quotas: Quotas = Field(default_factory=Quotas, description="Resource quotas for each tenant.")
    trialDays: int = Field(default=0, ge=0, le=365, description="Days of free trial.")
    gracePeriodDays: int = Field(
        default=7, ge=0, le=90, description="Days a past-due tenant keeps service before restriction."
    )
    pricing: Pricing = Field(default_factory=Pricing, description="Pricing metadata.")
    provisioning: Provisioning | None = Field(
        default=None,
        description="Infrastructure per tenant, built by Terraform before the tenant turns Active and destroyed on "
        "offboarding; absent: no infrastructure.",
    )


class Plan(CustomResource):
    """A commercial tier: isolation model, entitlements, quotas and pricing."""

    crd = CrdInfo(
        kind="Plan",
        plural="plans",
        singular="plan",
        namespaced=False,
        short_names=("pbplan",),
        description="Plan is a commercial tier: isolation model, entitlements, quotas and pricing.",
        printer_columns=(
            PrinterColumn("Tier", ".spec.tier"),
            PrinterColumn("Isolation", ".spec.isolation"),
            READY_COLUMN,
            AGE_COLUMN,
        ),
        validations=(
            ValidationRule(
                "!self.pricing.payAsYouGo || size(self.pricing.unitPrices) > 0",
                "a pay-as-you-go plan needs at least one unit price",
            ),
        ),
    )
    spec: PlanSpec
    status: Status | None = None
