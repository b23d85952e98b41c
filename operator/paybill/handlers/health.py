"""How a provisioned tenant's data answers now (for the reconcile and the periodic resync alike): what its role
may do, and whether the credentials in its Secret log in. The password is used here and never leaves. And where
its data is when its placement record was lost: status is evidence, held against the operator's own records
(lifecycle/evidence.py)."""

from __future__ import annotations

from ..api.plan import Isolation
from ..api.tenant import TenantPhase as Phase
from ..database import Placement, TenantDatabases
from ..database.ownership import tenant_identity
from ..kubeclient import Kube
from ..lifecycle.evidence import Holdings, PlacementMismatch, Refused, recovered_placement
from ..lifecycle.reconcile import DataHealth, TenantObject
from ..lifecycle.tenant import CREDENTIALS_SECRET, owned_secret, secret_field

CHECKED_PHASES = (Phase.ACTIVE, Phase.SUSPENDED)


def observe_health(kube: Kube, databases: TenantDatabases, tenant: TenantObject, placement: Placement) -> DataHealth:
    secret = owned_secret(kube.get("v1", "secrets", CREDENTIALS_SECRET, tenant.namespace), tenant.manifest(), "Tenant")
    uri = secret_field(secret, "uri") if secret else None
    return DataHealth(databases.access_of(placement), databases.logs_in(uri) if uri else None)


def last_known(databases: TenantDatabases, tenant: TenantObject) -> Placement | None:
    """Where status last said the tenant's data is, once the operator's own records bear it out (the tenant's names
    under that isolation model, its role, its data there and nowhere else); None when nothing of the tenant's is
    left (a lost placement record told apart from data already removed). PlacementMismatch otherwise."""
    said = tenant.status.database
    if said is None:
        return None
    expected = {str(isolation): databases.placement_for(tenant.name, isolation) for isolation in Isolation}
    holdings = Holdings(
        expected,
        databases.owns_role(databases.tenant_role(tenant.name), tenant_identity(tenant.name)),
        frozenset(isolation for isolation, placement in expected.items() if databases.claims.holds_data(placement)),
    )
    found = recovered_placement(tenant.name, said, holdings)
    if isinstance(found, Refused):
        raise PlacementMismatch(found.message)
    return found


def checked(tenant: TenantObject) -> bool:
    """Only a tenant the operator has provisioned and keeps serving is checked."""
    return tenant.status.database is not None and tenant.phase in CHECKED_PHASES
