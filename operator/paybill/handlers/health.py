"""How a provisioned tenant's data answers now (for the reconcile and the periodic resync alike): what its role
may do, and whether the credentials in its Secret log in. The password is used here and never leaves."""

from __future__ import annotations

from ..api.tenant import TenantPhase as Phase
from ..database import Placement, TenantDatabases
from ..database.ownership import tenant_identity
from ..kubeclient import Kube
from ..lifecycle.reconcile import DataHealth, TenantObject
from ..lifecycle.tenant import CREDENTIALS_SECRET, owned_secret, secret_field

CHECKED_PHASES = (Phase.ACTIVE, Phase.SUSPENDED)


def observe_health(kube: Kube, databases: TenantDatabases, tenant: TenantObject, placement: Placement) -> DataHealth:
    secret = owned_secret(kube.get("v1", "secrets", CREDENTIALS_SECRET, tenant.namespace), tenant.manifest(), "Tenant")
    uri = secret_field(secret, "uri") if secret else None
    return DataHealth(databases.access_of(placement), databases.logs_in(uri) if uri else None)


def last_known(databases: TenantDatabases, tenant: TenantObject) -> Placement | None:
    """Where status last said the tenant's data is, if Paybill still owns the tenant's role there (so a lost
    placement record is told apart from data already removed)."""
    known = tenant.status.database
    if known is None or not databases.owns_role(known.role, tenant_identity(tenant.name)):
        return None
    return Placement.from_status(tenant.name, known)


def checked(tenant: TenantObject) -> bool:
    """Only a tenant the operator has provisioned and keeps serving is checked."""
    return tenant.status.database is not None and tenant.phase in CHECKED_PHASES
