"""Plan: a commercial tier with its isolation model, entitlements and quotas."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated

from pydantic import Field, model_validator

from .meta import (
    AGE_COLUMN,
    LIST_ATOMIC,
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
    AZURE = "azure"
    GCP = "gcp"
    OCI = "oci"
    IBM = "ibm"


# Each cloud's region when a Plan names none, and the shape of its region names (preflight asks the cloud whether
# the region exists; the shape refuses another cloud's name, e.g. eastus on aws, at the API server already)
DEFAULT_REGIONS = {
    Cloud.LOCAL: "us-east-1",
    Cloud.AWS: "us-east-1",
    Cloud.AZURE: "eastus",
    Cloud.GCP: "us-central1",
    Cloud.OCI: "us-ashburn-1",
    Cloud.IBM: "us-south",
}
REGION_SHAPES = {
    Cloud.AWS: (r"^[a-z]{2}(-gov|-iso|-isob)?-[a-z]+-[0-9]+$", "like us-east-1"),
    Cloud.AZURE: (r"^[a-z]+[0-9]*$", "like eastus or westeurope"),
    Cloud.GCP: (r"^[a-z]+-[a-z]+[0-9]+$", "like us-central1"),
    Cloud.OCI: (r"^[a-z]{2}-[a-z]+-[0-9]+$", "like us-ashburn-1"),
    Cloud.IBM: (r"^[a-z]{2}-[a-z]{2,5}$", "like us-south or eu-de"),
}


def _region_rule(cloud: Cloud) -> ValidationRule:
    pattern, example = REGION_SHAPES[cloud]
    return ValidationRule(
        f"self.cloud != '{cloud.value}' || !has(self.region) || self.region.matches('{pattern}')",
        f"region is not a {cloud.value} region name ({example})",
        "provisioning",
    )


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
    region: str | None = Field(
        default=None,
        pattern=NAME,
        max_length=63,
        description="Region passed to the module and checked by preflight; default per cloud: aws us-east-1, "
        "azure eastus, gcp us-central1, oci us-ashburn-1, ibm us-south.",
    )
    costCenter: str = Field(
        default="", max_length=63, description="Tagged on every resource; defaults to the plan's tier."
    )
    credentialsSecret: str | None = Field(
        default=None,
        pattern=NAME,
        max_length=253,
        description="Secret in the operator's namespace with the provider's credentials (aws: AWS_ACCESS_KEY_ID, "
        "AWS_SECRET_ACCESS_KEY; azure: ARM_SUBSCRIPTION_ID, ARM_TENANT_ID, ARM_CLIENT_ID, ARM_CLIENT_SECRET, "
        "ARM_ACCESS_TOKEN; gcp: GOOGLE_PROJECT and GOOGLE_CREDENTIALS or GOOGLE_OAUTH_ACCESS_TOKEN; oci: "
        "OCI_TENANCY_OCID, OCI_USER_OCID, OCI_FINGERPRINT, OCI_PRIVATE_KEY, OCI_COMPARTMENT_OCID; ibm: IC_API_KEY); "
        "only provider variables (AWS_*, ARM_*, GOOGLE_*, OCI_*, IC_*) reach Terraform.",
    )
    driftCheckSeconds: int = Field(
        default=0, ge=0, le=604800, description="Check each tenant's infrastructure for drift this often (0: never)."
    )
    autoRemediate: bool = Field(default=False, description="Re-apply the module when drift is found.")

    @model_validator(mode="after")
    def _region_of_the_cloud(self) -> Provisioning:
        shape = REGION_SHAPES.get(self.cloud)
        if shape is not None and self.region is not None and not re.fullmatch(shape[0], self.region):
            raise ValueError(f"region {self.region!r} is not a {self.cloud} region name ({shape[1]})")
        return self

    @property
    def target_region(self) -> str:
        """The region named, or the cloud's default."""
        return self.region or DEFAULT_REGIONS[self.cloud]


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


ORPHANS_LISTED = 20  # the orphans a Plan's status names (the count says how many there are)


class OrphanReport(Model):
    """The last look in the Plan's cloud account and region for resources tagged with a tenant that no longer
    exists: left behind, they keep costing money."""

    checkedAt: str = Field(description="When the cloud was last looked at (RFC 3339).")
    count: int = Field(default=0, ge=0, description="Orphaned resources found (instances and databases).")
    tenants: list[str] = Field(
        default_factory=list,
        max_length=ORPHANS_LISTED,
        json_schema_extra=LIST_SET,
        description="The tenants they are tagged with (first ones).",
    )
    resources: list[str] = Field(
        default_factory=list,
        max_length=ORPHANS_LISTED,
        json_schema_extra=LIST_ATOMIC,
        description="The first orphans, as `<kind> <id> (tenant <name>)`.",
    )
    error: str | None = Field(default=None, description="Why the cloud could not be looked at (its error code).")


class PlanStatus(Status):
    orphans: OrphanReport | None = Field(
        default=None, description="Cloud resources of tenants that no longer exist, as last looked for."
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
            *(_region_rule(cloud) for cloud in REGION_SHAPES),
        ),
    )
    spec: PlanSpec
    status: PlanStatus | None = None
