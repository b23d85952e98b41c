"""How a provisioned tenant's data answers now (for the reconcile and the periodic resync alike): what its role
may do, and whether the credentials in its Secret log in. The password is used here and never leaves."""

from __future__ import annotations

from ..api.tenant import TenantPhase as Phase
from ..database import Placement, TenantDatabases
from ..kubeclient import Kube
from ..lifecycle.reconcile import DataHealth, TenantObject
from ..lifecycle.tenant import CREDENTIALS_SECRET, owned_secret, secret_field

CHECKED_PHASES = (Phase.ACTIVE, Phase.SUSPENDED)


def observe_health(kube: Kube, databases: TenantDatabases, tenant: TenantObject, placement: Placement) -> DataHealth:
    secret = owned_secret(kube.get("v1", "secrets", CREDENTIALS_SECRET, tenant.namespace), tenant.manifest(), "Tenant")
    uri = secret_field(secret, "uri") if secret else None
    return DataHealth(databases.access_of(placement), databases.logs_in(uri) if uri else None)


def checked(tenant: TenantObject) -> bool:
    """Only a tenant the operator has provisioned and keeps serving is checked."""
    return tenant.status.database is not None and tenant.phase in CHECKED_PHASES
