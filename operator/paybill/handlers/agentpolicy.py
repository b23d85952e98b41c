"""AgentPolicy handlers: check the policy against its tenant's live schema, install the database side, write status.

The policy lives in a tenant's namespace; its agent gets a login role of its own (credentials in a Secret,
never in status), column GRANTs and row-level security generated from the same rules the engine checks.
The grants follow the tenant: re-applied when its access or its database placement changes, and only where the
operator's own placement record says the tenant's data is (the Tenant's status is evidence, lifecycle/evidence.py).
What to do is decided in lifecycle/agentpolicy.py; these handlers read, carry it out and write what it says.
"""

from __future__ import annotations

import secrets
from typing import Any

import kopf
import psycopg

from ..api.agentpolicy import AgentPolicySpec, AgentPolicyStatus
from ..api.meta import API_VERSION, GROUP, VERSION
from ..api.tenant import TenantStatus
from ..database import DatabaseUnavailable, NameConflict, Placement, TenantDatabases
from ..database.agents.install import install, uninstall
from ..errors import first_line
from ..kubeclient import Kube
from ..lifecycle.agentpolicy import (
    AGENT_SECRET_LABEL,
    Failure,
    FailureKind,
    Install,
    Observed,
    PolicyObject,
    TenantView,
    Uninstall,
    decide,
    deleting,
    failed,
    installed,
    secret_name,
    uninstall_failed,
    uninstalled,
)
from ..lifecycle.agents import Outcome
from ..lifecycle.evidence import Records
from ..lifecycle.tenant import (
    MANAGED_BY,
    TENANT_LABEL,
    SecretConflict,
    controlled_by,
    opaque_secret,
    owned_secret,
    owner_reference,
    secret_field,
)
from ..policy.rules import PolicyError
from ..policy.schema import SchemaError
from .apply import TENANT_GRANTS, apply_agent_outcome, delete_owned_secret, publish_secret
from .instrument import reconciles


def tenant_of(kube: Kube, namespace: str) -> dict[str, Any] | None:
    """The Tenant whose namespace this is. The tenant label only says which Tenant to ask (anyone who can
    create a namespace can write it); the namespace is that Tenant's only if the Tenant controls it by uid."""
    found = kube.get("v1", "namespaces", namespace)
    name = (((found or {}).get("metadata") or {}).get("labels") or {}).get(TENANT_LABEL)
    tenant = kube.get(API_VERSION, "tenants", name) if found is not None and name else None
    if tenant is None or found is None or not controlled_by(found, tenant["metadata"]["uid"]):
        return None
    return tenant


def policy_object(body: kopf.Body) -> PolicyObject:
    """The policy parsed through its models (the CRD schema has already refused bad shapes)."""
    return PolicyObject(
        body.metadata.name,
        str(body.metadata.namespace),  # namespaced: never None
        AgentPolicySpec.model_validate(dict(body.spec)),
        AgentPolicyStatus.model_validate(dict(body.get("status") or {})),
        (body.metadata.annotations or {}).get(TENANT_GRANTS),
    )


def tenant_view(tenant: dict[str, Any] | None) -> TenantView | None:
    if tenant is None:
        return None
    meta = tenant["metadata"]
    return TenantView(meta["name"], TenantStatus.model_validate(tenant.get("status") or {}), meta["uid"])


def records_of(databases: TenantDatabases | None, tenant: dict[str, Any] | None) -> Records:
    """The operator's own records of the tenant's data: where it placed it, and whether an earlier Tenant of the
    name kept its data under it."""
    if databases is None or tenant is None:
        return Records(None)
    name = tenant["metadata"]["name"]
    recorded, _, _ = databases.recorded(name)
    access = databases.access_of(recorded) if recorded else None
    return Records(recorded.to_model() if recorded else None, databases.retained_by(name), access)


@kopf.on.resume(GROUP, VERSION, "agentpolicies")
@kopf.on.create(GROUP, VERSION, "agentpolicies")
@kopf.on.update(GROUP, VERSION, "agentpolicies")
@reconciles("agentpolicy")
def reconcile_policy(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    kube: Kube = memo.kube
    policy = policy_object(body)
    tenant = tenant_of(kube, policy.namespace)
    password, conflict = _password(kube, body)
    try:
        records = records_of(memo.databases, tenant)
    except (DatabaseUnavailable, psycopg.Error) as exc:
        failure = Failure(FailureKind.DATABASE_UNAVAILABLE, first_line(exc))
        apply_agent_outcome(body, patch, memo, failed(failure, tenant["metadata"]["name"] if tenant else ""))
        return
    seen = Observed(tenant_view(tenant), memo.databases is not None, records, conflict)
    outcome = decide(policy, seen)
    if isinstance(outcome.action, Install):
        outcome = _install(kube, memo.databases, body, policy, outcome.action, password)
    apply_agent_outcome(body, patch, memo, outcome)


@kopf.on.delete(GROUP, VERSION, "agentpolicies")  # retried until done: the role must not outlive its policy
@reconciles("agentpolicy")
def delete_policy(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    """The role, its grants and its RLS policies go with the policy; so does its Secret."""
    policy = policy_object(body)
    outcome = deleting(policy, memo.databases is not None)
    if isinstance(outcome.action, Uninstall):
        try:
            dropped = uninstall(
                memo.databases, policy.name, policy.namespace, outcome.action.tenant, outcome.action.database
            )
        except DatabaseUnavailable as exc:
            apply_agent_outcome(body, patch, memo, uninstall_failed(str(exc)))
        apply_agent_outcome(body, patch, memo, uninstalled(policy, dropped))
    delete_owned_secret(memo.kube, secret_name(policy.name), policy.namespace, body, "AgentPolicy")


def _install(
    kube: Kube, databases: TenantDatabases, body: kopf.Body, policy: PolicyObject, action: Install, password: str
) -> Outcome:
    """Install the policy and publish its login; what came of it, decided."""
    where = Placement.from_status(action.tenant, action.placement)
    try:
        done = install(
            databases,
            where,
            policy.name,
            policy.namespace,
            policy.spec,
            password,
            action.access,
            previous_database=action.previous_database,
        )
        _publish(kube, body, databases.login_fields(done.role, password, where.database, where.schema))
    except (PolicyError, SchemaError) as exc:
        return failed(Failure(FailureKind.INVALID_POLICY, first_line(exc)), action.tenant)
    except NameConflict as exc:
        return failed(Failure(FailureKind.NAME_CONFLICT, first_line(exc)), action.tenant)
    except SecretConflict as exc:  # squatted since the password was read
        return failed(Failure(FailureKind.SECRET_CONFLICT, first_line(exc)), action.tenant)
    except DatabaseUnavailable as exc:
        return failed(Failure(FailureKind.DATABASE_UNAVAILABLE, str(exc)), action.tenant)
    except psycopg.errors.InternalError_ as exc:  # another session changed the same catalog row: try again soon
        if "concurrently" not in str(exc):
            raise
        return failed(Failure(FailureKind.DATABASE_UNAVAILABLE, f"{first_line(exc)}; will retry"), action.tenant)
    return installed(policy, action, done)


def _password(kube: Kube, body: kopf.Body) -> tuple[str, str | None]:
    """The agent role's password: kept in the Secret the policy controls, made once (again if the Secret is
    lost). A Secret of that name that is not the policy's is a conflict: its password is never used."""
    try:
        secret = owned_secret(
            kube.get("v1", "secrets", secret_name(body.metadata.name), body.metadata.namespace), body, "AgentPolicy"
        )
    except SecretConflict as exc:
        return secrets.token_urlsafe(24), first_line(exc)
    return (secret_field(secret, "password") if secret else None) or secrets.token_urlsafe(24), None


def _publish(kube: Kube, body: kopf.Body, fields: dict[str, str]) -> None:
    publish_secret(
        kube,
        opaque_secret(
            {
                "name": secret_name(body.metadata.name),
                "namespace": body.metadata.namespace,
                "labels": {**MANAGED_BY, AGENT_SECRET_LABEL: "true"},  # a name may be too long for a label
                "ownerReferences": [owner_reference(body, "AgentPolicy")],
            },
            fields,
        ),
    )
