"""Typed values that cross the runner's boundary: what a run is asked, what it returns."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .adoption import Adoption

# A tenant id names a PostgreSQL schema, a working directory and Kubernetes objects: a DNS label, nothing else.
TENANT_ID = re.compile(r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")
WORKSPACE = re.compile(r"^[a-z][a-z0-9]{0,19}$")
CLOUDS = ("local", "aws", "azure", "gcp", "oci", "ibm")
MODELS = ("silo", "pooled", "bridge")
# what a destroy does to the data-bearing resources (databases, buckets): the Tenant's spec.deletionPolicy
DELETION_POLICIES = ("destroy", "snapshot", "retain")
# The bridge and pooled modules name their objects paybill-<tenant>-<model> (silo's are paybill-<tenant>): a change
# of model builds the new model's objects beside the old ones
MODEL_SUFFIXES = ("bridge", "pooled")


def checked_tenant_id(tenant_id: str) -> str:
    if not TENANT_ID.fullmatch(tenant_id):
        raise ValueError(f"tenant id {tenant_id!r} is not a DNS label of at most 40 characters")
    return tenant_id


@dataclass(frozen=True)
class ModuleInputs:
    """The one input contract every module takes (see modules/README.md)."""

    tenant_id: str
    plan: str
    region: str
    cost_center: str
    sizes: Mapping[str, int] = field(default_factory=dict)  # from the plan's quotas
    pool: str = "default"
    deletion_policy: str = "snapshot"  # destroy: data goes; snapshot: a final snapshot first, objects kept; retain
    workspace: str = "default"  # the tenant's state of this module (one per isolation model), not an input

    def __post_init__(self) -> None:
        checked_tenant_id(self.tenant_id)
        if self.deletion_policy not in DELETION_POLICIES:
            raise ValueError(f"deletion policy {self.deletion_policy!r}: one of {', '.join(DELETION_POLICIES)}")
        if not WORKSPACE.fullmatch(self.workspace):
            raise ValueError(f"workspace {self.workspace!r} is not a lowercase name of at most 20 characters")

    def variables(self) -> dict[str, Any]:
        return {
            "tenant_id": self.tenant_id,
            "plan": self.plan,
            "region": self.region,
            "cost_center": self.cost_center,
            "sizes": dict(self.sizes),
            "pool": self.pool,
            "deletion_policy": self.deletion_policy,
        }


@dataclass(frozen=True)
class ModuleRef:
    cloud: str
    model: str

    def __post_init__(self) -> None:
        if self.cloud not in CLOUDS:
            raise ValueError(f"unknown cloud {self.cloud!r}: one of {', '.join(CLOUDS)}")
        if self.model not in MODELS:
            raise ValueError(f"unknown isolation model {self.model!r}: one of {', '.join(MODELS)}")


@dataclass(frozen=True)
class PlanSummary:
    """What status may hold about a plan: counts, the plan file's sha256 and where its JSON artifact lives."""

    tenant_id: str
    adds: int
    changes: int
    destroys: int
    plan_hash: str
    artifact: str  # e.g. "postgresql:paybill_terraform.plans/<hash>"
    addresses: tuple[str, ...] = ()

    @property
    def has_changes(self) -> bool:
        return bool(self.adds or self.changes or self.destroys)


@dataclass(frozen=True)
class OutputValue:
    value: Any
    sensitive: bool

    def __repr__(self) -> str:  # never print a sensitive value by accident
        return f"OutputValue(value={'<sensitive>' if self.sensitive else repr(self.value)}, sensitive={self.sensitive})"


@dataclass(frozen=True)
class Outputs:
    values: Mapping[str, OutputValue]

    def public(self) -> dict[str, Any]:
        """Outputs fit for status and logs: the non-sensitive ones."""
        return {name: out.value for name, out in self.values.items() if not out.sensitive}

    def secret_data(self) -> dict[str, str]:
        """Every output as strings, for the tenant's Secret (the only place sensitive ones go)."""
        return {
            name: out.value if isinstance(out.value, str) else _json(out.value) for name, out in self.values.items()
        }


@dataclass(frozen=True)
class LockRecovery:
    """A stale state lock the runner force-released (by ending its holder's session): for the audit chain."""

    tenant_id: str
    lock_key: int
    holder_backend_pid: int
    holder_application: str
    held_seconds: float
    reason: str


@dataclass(frozen=True)
class ApplyResult:
    summary: PlanSummary
    outputs: Outputs
    lock_recoveries: tuple[LockRecovery, ...] = ()
    adoption: Adoption | None = None  # what an interrupted apply had left in the cloud, imported by this one


@dataclass(frozen=True)
class DestroyResult:
    tenant_id: str
    destroyed: int
    lock_recoveries: tuple[LockRecovery, ...] = ()
    adoption: Adoption | None = None  # what an interrupted apply had left in the cloud, imported to be destroyed


@dataclass(frozen=True)
class DriftReport:
    tenant_id: str
    drifted: bool
    addresses: tuple[str, ...]
    summary: PlanSummary | None = None


def _json(value: Any) -> str:
    import json

    return json.dumps(value, sort_keys=True, separators=(",", ":"))
