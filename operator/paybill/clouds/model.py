"""What every cloud adapter takes and returns: plain frozen dataclasses, the one protocol, the one error.

An adapter is built for one cloud account and one region (a Plan's `spec.provisioning`); the domain never sees an
SDK type. Results are data: a preflight that fails is a `Preflight` with a reason, not an exception; a cloud that
answers "not found" is an empty result. `CloudError` is for what the adapter cannot answer (the cloud refused, or
kept failing after the retries); it carries the cloud's own error code and never a credential.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from paybill.terraform.adoption import CloudObject


class Cloud(StrEnum):
    AWS = "aws"
    AZURE = "azure"
    GCP = "gcp"
    OCI = "oci"
    IBM = "ibm"


class PowerState(StrEnum):
    """An instance's state, in one vocabulary for every cloud (each adapter maps its own)."""

    RUNNING = "running"
    STARTING = "starting"
    STOPPING = "stopping"
    STOPPED = "stopped"
    TERMINATED = "terminated"
    OTHER = "other"


@dataclass(frozen=True)
class CloudPlan:
    """What preflight checks a Plan's provisioning for: where, and how much the model needs per tenant."""

    name: str
    region: str
    isolation: str  # silo | bridge | pooled
    cost_center: str = ""
    instances: int = 1  # instances one tenant needs in this region (0: the model builds none)
    vcpus: int = 2  # per instance
    networks: int = 0  # networks (VPC, VCN, VNet) one tenant needs

    @classmethod
    def per_model(cls, name: str, region: str, isolation: str, cost_center: str = "") -> CloudPlan:
        """What one tenant of each model is built (terraform/modules/<cloud>/<isolation>): a silo tenant gets its
        own network and instance, a bridge tenant an instance in the pool's network, a pooled tenant nothing."""
        instances, networks = {"silo": (1, 1), "bridge": (1, 0)}.get(isolation, (0, 0))
        return cls(name, region, isolation, cost_center, instances=instances, networks=networks)


@dataclass(frozen=True)
class Resource:
    """One cloud object carrying Paybill's tags."""

    cloud: Cloud
    kind: str  # instance | database
    id: str
    name: str
    state: PowerState
    tenant: str  # the tenant tag's value ("" when missing)
    plan: str = ""
    cost_center: str = ""
    region: str = ""


class Verdict(StrEnum):
    OK = "Ok"
    INVALID_CREDENTIALS = "InvalidCredentials"
    UNKNOWN_REGION = "UnknownRegion"
    INSUFFICIENT_QUOTA = "InsufficientQuota"
    CLOUD_ERROR = "CloudError"


@dataclass(frozen=True)
class Preflight:
    """The answer to "may tenants of this plan be built there?": `reason` is a condition reason, `message` its text
    (the cloud's error code in it, never a credential)."""

    cloud: Cloud
    verdict: Verdict
    message: str
    quota: Mapping[str, tuple[float, float]] = field(default_factory=dict)  # metric -> (available, needed)

    @property
    def ok(self) -> bool:
        return self.verdict is Verdict.OK

    @property
    def reason(self) -> str:
        return self.verdict.value


@dataclass(frozen=True)
class PowerChange:
    """What suspend or resume did: the instances it asked to change and those already in the wanted state."""

    changed: tuple[str, ...]
    unchanged: tuple[str, ...]


class CloudError(Exception):
    """A cloud answered an error the adapter cannot turn into a result: its code, HTTP status and a message
    with every credential value removed."""

    def __init__(self, cloud: Cloud, code: str, message: str, status: int | None = None) -> None:
        super().__init__(f"{cloud.value}: {code}: {message}")
        self.cloud = cloud
        self.code = code
        self.message = message
        self.status = status


class Unsupported(Exception):
    """What this cloud's adapter cannot do here (say, find a tenant's resources for Terraform to adopt)."""


class CloudAdapter(Protocol):
    """One cloud account in one region, seen through Paybill's tags."""

    cloud: Cloud

    def preflight(self, plan: CloudPlan) -> Preflight: ...

    def inventory(self, tenant: str) -> list[Resource]: ...

    def suspend(self, tenant: str) -> PowerChange: ...

    def resume(self, tenant: str) -> PowerChange: ...

    def orphans(self, known_tenants: Collection[str]) -> list[Resource]: ...

    def tenant_objects(self, tenant: str) -> list[CloudObject]:
        """The tenant's objects as Terraform types them (with their tags, to be checked: a name proves nothing),
        found by its tag and by the names the modules give: what an interrupted apply may have left untracked.
        Unsupported for a cloud without this lookup."""
        ...
