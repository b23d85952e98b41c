"""A tenant's agents moved with its data: before a completed move's source is removed (FinishMove), each of the
tenant's AgentPolicies is installed where the data is now and its login published there, so its agent goes on
working on the new placement instead of waiting for its own reconcile. Until then its writes at the source are
held (database/agents/hold.py): refused, never lost. A policy that cannot be installed here (invalid, a name or
Secret taken, row security DDL that waited too long) is left to its own reconcile, which retries it or says why
in its status; the move is not held up by it."""

from __future__ import annotations

from typing import Any

from ..api.agentpolicy import AgentPolicySpec
from ..api.meta import API_VERSION
from ..api.tenant import Access
from ..database import DatabaseUnavailable, NameConflict, Placement, TenantDatabases
from ..database.agents.install import install
from ..kubeclient import Kube
from ..lifecycle.agentpolicy import secret_name
from ..lifecycle.tenant import MANAGED_BY, SecretConflict, opaque_secret, owned_secret, owner_reference, secret_field
from ..policy.rules import PolicyError
from ..policy.schema import SchemaError
from .apply import publish_secret


def install_agents_where_the_data_is(kube: Kube, databases: TenantDatabases, tenant: str, namespace: str) -> None:
    """After a cut-over (the record names a source left behind), install every AgentPolicy of the tenant's namespace
    at the current placement, with the tenant's access there, and point its login Secret at it."""
    current, _, previous = databases.recorded(tenant)
    if current is None or previous is None:
        return
    access = databases.access_of(current)
    for policy in kube.list(API_VERSION, "agentpolicies", namespace):
        try:
            _install(kube, databases, policy, current, access)
        except (PolicyError, SchemaError, NameConflict, SecretConflict, DatabaseUnavailable):
            continue  # its own reconcile retries or reports it; its agent's writes at the source stay refused


def _install(kube: Kube, databases: TenantDatabases, policy: dict[str, Any], where: Placement, access: Access) -> None:
    meta = policy["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    secret = owned_secret(kube.get("v1", "secrets", secret_name(name), namespace), policy, "AgentPolicy")
    password = secret_field(secret, "password") if secret else None
    if not password:
        return  # never installed yet: its own reconcile makes its login
    spec = AgentPolicySpec.model_validate(policy["spec"])
    done = install(databases, where, name, namespace, spec, password, access)
    fields = databases.login_fields(done.role, password, where.database, where.schema)
    metadata = {
        "name": secret_name(name),
        "namespace": namespace,
        "labels": dict(MANAGED_BY),
        "ownerReferences": [owner_reference(policy, "AgentPolicy")],
    }
    publish_secret(kube, opaque_secret(metadata, fields))
