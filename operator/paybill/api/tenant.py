"""Tenant: one customer, with its namespace, data and lifecycle."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from .meta import (
    AGE_COLUMN,
    LIST_SET,
    PHASE_COLUMN,
    READY_COLUMN,
    ROOT,
    CrdInfo,
    CustomResource,
    Model,
    PrinterColumn,
    Status,
    ValidationRule,
)
from .plan import NAME

# On a Tenant: the uid of the earlier Tenant of its name whose retained data it takes over (README, Tenant lifecycle).
ADOPT_RETAINED_DATA = "adopt.paybill.dev/retained-data"


class TenantPhase(StrEnum):
    PENDING = "Pending"
    PROVISIONING = "Provisioning"
    ACTIVE = "Active"
    SUSPENDED = "Suspended"
    MIGRATING = "Migrating"
    OFFBOARDING = "Offboarding"
    OFFBOARDED = "Offboarded"
    FAILED = "Failed"


class Access(StrEnum):
    """What the tenant's login role may do in its data (shared by billing, the database and the agents)."""

    FULL = "full"
    READ_ONLY = "read_only"
    NONE = "none"


class DeletionPolicy(StrEnum):
    RETAIN = "retain"
    SNAPSHOT = "snapshot"
    DESTROY = "destroy"


class TenantSpec(Model):
    displayName: str = Field(default="", max_length=256, description="Human-readable tenant name.")
    planRef: str = Field(pattern=NAME, max_length=63, description="Name of the Plan the tenant is on.")
    namespace: str | None = Field(
        default=None,
        pattern=NAME,
        max_length=63,
        description="Namespace owned by the tenant; defaults to tenant-<name>. Immutable once set.",
    )
    suspended: bool = Field(default=False, description="Suspend the tenant by hand (reversible).")
    deletionPolicy: DeletionPolicy = Field(
        default=DeletionPolicy.SNAPSHOT, description="What happens to tenant data on offboarding."
    )
    contactEmail: str | None = Field(
        default=None,
        pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$",
        max_length=254,
        description="Where lifecycle notices are sent.",
    )
    offboard: bool = Field(
        default=False,
        description="Offboard the tenant: final backup, then the deletion "
        "policy. The Tenant stays as the record; irreversible.",
    )


class DatabasePlacement(Model):
    isolation: str = Field(description="Isolation model the data is in.")
    database: str = Field(description="Database holding the tenant's data.")
    schema_: str = Field(alias="schema", description="Schema holding the tenant's tables.")
    role: str = Field(description="The tenant's login role (its password is in the credentials Secret).")


class TableChecksum(Model):
    rows: int = Field(ge=0, description="Row count.")
    md5: str = Field(description="md5 of the table's sorted row text.")


class BackupStatus(Model):
    location: str = Field(description="Where the final backup is stored.")
    sha256: str = Field(description="sha256 of the backup file.")
    bytes: int = Field(ge=0, description="Size of the backup file.")
    tables: dict[str, TableChecksum] = Field(default_factory=dict, description="Checksums of the data backed up.")
    takenAt: str | None = Field(default=None, description="When the backup was taken (RFC 3339).")


class InfrastructureStatus(Model):
    """What the tenant's Terraform runs did: counts, hashes and references, never an output's value (those go
    to the Secret paybill-infrastructure in the tenant's namespace)."""

    module: str | None = Field(default=None, description="The module run: <cloud>/<isolation> or a named override.")
    workspace: str | None = Field(default=None, description="The tenant's state the module is applied in (its model).")
    retiring: str | None = Field(
        default=None, description="A model's workspace the tenant left: destroyed once its data has moved."
    )
    retiringModule: str | None = Field(default=None, description="The module the retiring workspace was built from.")
    running: str | None = Field(default=None, description="The run in progress: plan, apply, destroy or drift.")
    runId: str | None = Field(default=None, description="The last run started.")
    lastRun: str | None = Field(default=None, description="The last run that ended: plan, apply, destroy or drift.")
    lastResult: str | None = Field(
        default=None, description="Succeeded, Failed, AwaitingApproval or Stale (a plan the state moved past)."
    )
    lastRunAt: str | None = Field(default=None, description="When the last run ended (RFC 3339).")
    message: str | None = Field(default=None, description="Terraform's summary, or its first error lines.")
    failures: int = Field(default=0, ge=0, description="Failed runs in a row (the retry backs off on it).")
    configDigest: str | None = Field(default=None, description="sha256 of the module and inputs last planned.")
    appliedDigest: str | None = Field(default=None, description="sha256 of the module and inputs last applied.")
    planHash: str | None = Field(default=None, description="sha256 of the last saved plan file.")
    appliedHash: str | None = Field(default=None, description="sha256 of the plan last applied.")
    artifact: str | None = Field(default=None, description="Where the plan's JSON is kept (outside etcd).")
    adds: int = Field(default=0, ge=0, description="Resources the plan adds.")
    changes: int = Field(default=0, ge=0, description="Resources the plan changes.")
    destroys: int = Field(default=0, ge=0, description="Resources the plan destroys.")
    destroyed: bool = Field(default=False, description="The infrastructure was destroyed (offboarding).")
    poolObjects: bool = Field(
        default=False,
        description="A pooled module that gives the tenant a prefix in the pool's bucket was applied for it (ever: "
        "what its application wrote there outlives the module).",
    )
    driftCheckedAt: str | None = Field(default=None, description="When drift was last checked (RFC 3339).")
    drifted: list[str] = Field(
        default_factory=list, json_schema_extra=LIST_SET, description="Resource addresses found drifted."
    )
    outputsSecret: str | None = Field(default=None, description="Secret in the tenant namespace with the outputs.")


class ComputeStatus(Model):
    """What the cloud's adapter last did to the tenant's instances (silo, bridge): stopped while the tenant is
    Suspended, started when it resumes."""

    wanted: str = Field(description="stopped or running.")
    result: str = Field(description="Done, or Failed (message says why, with the cloud's error code).")
    changed: list[str] = Field(
        default_factory=list, json_schema_extra=LIST_SET, description="Instances the adapter stopped or started."
    )
    unchanged: list[str] = Field(
        default_factory=list, json_schema_extra=LIST_SET, description="Instances already in the wanted state."
    )
    message: str | None = Field(default=None, description="What happened, or the cloud's error (never a credential).")
    at: str | None = Field(default=None, description="When (RFC 3339).")


class TenantStatus(Status):
    namespace: str | None = Field(default=None, description="The namespace provisioned for the tenant.")
    isolation: str | None = Field(default=None, description="Isolation model in effect.")
    plan: str | None = Field(default=None, description="Plan in effect.")
    database: DatabasePlacement | None = Field(default=None, description="Where the tenant's data lives.")
    access: Access | None = Field(default=None, description="Database access: full, read_only or none.")
    suspendedFor: list[str] = Field(
        default_factory=list, json_schema_extra=LIST_SET, description="Why the tenant is suspended: billing, manual."
    )
    restriction: str | None = Field(default=None, description="Billing restriction in effect.")
    backup: BackupStatus | None = Field(default=None, description="The final backup taken on offboarding.")
    credentialsSecret: str | None = Field(
        default=None, description="Secret in the tenant namespace with database credentials."
    )
    infrastructure: InfrastructureStatus | None = Field(
        default=None, description="The tenant's Terraform runs (when its plan has spec.provisioning)."
    )
    compute: ComputeStatus | None = Field(
        default=None, description="The tenant's instances stopped or started by the cloud's adapter (silo, bridge)."
    )


class Tenant(CustomResource):
    """One customer of the SaaS: namespace, data, plan and lifecycle."""

    crd = CrdInfo(
        kind="Tenant",
        plural="tenants",
        singular="tenant",
        namespaced=False,
        short_names=("tn",),
        description="Tenant is one customer: its namespace, its data and its lifecycle.",
        printer_columns=(
            PrinterColumn("Plan", ".spec.planRef"),
            PrinterColumn("Isolation", ".status.isolation"),
            PHASE_COLUMN,
            READY_COLUMN,
            AGE_COLUMN,
        ),
        validations=(
            ValidationRule(
                "has(self.namespace) == has(oldSelf.namespace) && "
                "(!has(self.namespace) || self.namespace == oldSelf.namespace)",
                "namespace is fixed when the Tenant is created (set or left to the default)",
            ),
            ValidationRule(
                "self.metadata.name.size() <= 56 && self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",
                "a Tenant's name must be a DNS label of at most 56 characters (its namespace is tenant-<name>)",
                path=ROOT,
            ),
            ValidationRule(
                "!self.startsWith('kube-') && self != 'default'",
                "namespace may not be a system namespace (kube-*, default)",
                path="namespace",
            ),
        ),
    )
    spec: TenantSpec
    status: TenantStatus | None = None
