"""Where a tenant's data lives under each isolation model, and the names of the shared objects. Pure.

- pooled: shared database `paybill_pooled`, schema `app`, rows keyed by tenant_id under row-level security.
- bridge: shared database `paybill_bridge`, own schema and own role.
- silo: own database (schema `app`), own role; nobody else may connect.

The tenant's role name (opaque, see `ownership`) is also its bridge schema and its silo database.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..api.plan import Isolation
from ..api.tenant import DatabasePlacement

POOLED_DATABASE = "paybill_pooled"
BRIDGE_DATABASE = "paybill_bridge"
APP_SCHEMA = "app"
POOLED_GROUP = "paybill_pooled_tenants"
CONTROL_SCHEMA = "paybill"
SHARED_OWNER = "Paybill shared data"  # the owner recorded for the shared databases and the pooled group


@dataclass(frozen=True)
class Placement:
    """Where a tenant's data lives, and the (opaque) login role that reaches it."""

    tenant: str
    isolation: Isolation
    database: str
    schema: str
    role: str

    @property
    def pooled(self) -> bool:
        return self.isolation == Isolation.POOLED

    def to_model(self) -> DatabasePlacement:
        """The Tenant's status.database: where the data lives, without the tenant's name."""
        return DatabasePlacement(
            isolation=str(self.isolation), database=self.database, schema=self.schema, role=self.role
        )

    def to_status(self) -> dict[str, str]:
        """`to_model` as written into a Tenant's status."""
        return self.to_model().model_dump(by_alias=True)

    @classmethod
    def from_status(cls, tenant: str, status: DatabasePlacement | Mapping[str, Any]) -> Placement:
        """The placement a Tenant's status.database records (the inverse of `to_status`)."""
        model = status if isinstance(status, DatabasePlacement) else DatabasePlacement.model_validate(status)
        return cls(tenant, Isolation(model.isolation), model.database, model.schema_, model.role)


def placement_at(tenant: str, isolation: Isolation | str, role: str) -> Placement:
    """Where `tenant`'s data lives under `isolation`, given its opaque role name (also its schema or database)."""
    isolation = Isolation(isolation)
    if isolation == Isolation.POOLED:
        return Placement(tenant, isolation, POOLED_DATABASE, APP_SCHEMA, role)
    if isolation == Isolation.BRIDGE:
        return Placement(tenant, isolation, BRIDGE_DATABASE, role, role)
    return Placement(tenant, isolation, role, APP_SCHEMA, role)
