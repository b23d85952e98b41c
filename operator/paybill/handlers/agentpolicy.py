"""AgentPolicy handlers: check the policy against its tenant's live schema, install the database side, write status.

The policy lives in a tenant's namespace; its agent gets a login role of its own (credentials in a Secret,
never in status), column GRANTs and row-level security generated from the same rules the engine checks.
The grants follow the tenant: re-applied when its access or its database placement changes.
"""

from __future__ import annotations

import secrets
from typing import Any, NoReturn

import kopf

from ..api.agentpolicy import AgentPolicySpec
from ..api.meta import API_VERSION, GROUP, VERSION
from ..api.tenant import Access, TenantPhase
from ..database import DatabaseUnavailable, NameConflict, Placement, TenantDatabases
from ..database.agents.install import install, uninstall
from ..errors import first_line
from ..kubeclient import Kube
from ..lifecycle.tenant import (
    MANAGED_BY,
    TENANT_LABEL,
    SecretConflict,
    agent_grants_key,
    controlled_by,
    opaque_secret,
    owned_secret,
    owner_reference,
    secret_field,
)
from ..policy.rules import PolicyError
from ..policy.schema import SchemaError
from . import events
from .apply import TENANT_GRANTS, delete_owned_secret, publish_secret, wait_for, write_ready

INSTALLED_PHASES = (TenantPhase.ACTIVE, TenantPhase.SUSPENDED)


def secret_name(policy: str) -> str:
    return f"agent-{policy}"


def tenant_of(kube: Kube, namespace: str) -> dict[str, Any] | None:
    """The Tenant whose namespace this is. The tenant label only says which Tenant to ask (anyone who can
    create a namespace can write it); the namespace is that Tenant's only if the Tenant controls it by uid."""
    found = kube.get("v1", "namespaces", namespace)
    name = (((found or {}).get("metadata") or {}).get("labels") or {}).get(TENANT_LABEL)
    tenant = kube.get(API_VERSION, "tenants", name) if found is not None and name else None
    if tenant is None or found is None or not controlled_by(found, tenant["metadata"]["uid"]):
        return None
    return tenant


@kopf.on.resume(GROUP, VERSION, "agentpolicies")
@kopf.on.create(GROUP, VERSION, "agentpolicies")
@kopf.on.update(GROUP, VERSION, "agentpolicies")
def reconcile_policy(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    kube: Kube = memo.kube
    databases: TenantDatabases | None = memo.databases
    name, namespace = body.metadata.name, str(body.metadata.namespace)  # namespaced: never None
    spec = AgentPolicySpec.model_validate(dict(body.spec))  # the CRD schema has already refused bad shapes
    tenant = tenant_of(kube, namespace)
    if tenant is None:
        wait_for(body, patch, "TenantNotFound", f"namespace {namespace} belongs to no Tenant", delay=30)
    tenant_name = tenant["metadata"]["name"]
    state = tenant.get("status") or {}
    placement = state.get("database")
    if databases is None:
        write_ready(body, patch, "Pending", False, "DatabaseNotConfigured", "the operator has no tenant database")
        return
    if state.get("phase") not in INSTALLED_PHASES or not placement:
        wait_for(
            body,
            patch,
            "WaitingForTenant",
            f"tenant {tenant_name} is {state.get('phase') or 'new'}; its database is not ready",
            delay=10,
        )
    expected = (body.metadata.annotations or {}).get(TENANT_GRANTS)
    if expected and expected != agent_grants_key(state.get("access"), placement):
        raise kopf.TemporaryError(f"tenant {tenant_name} is changing to {expected}", delay=1)
    where = Placement.from_status(tenant_name, placement)
    access = Access(state.get("access") or Access.NONE)
    current = body.get("status") or {}
    try:
        password = _password(kube, body)
    except SecretConflict as exc:  # a Secret the policy does not control has its name: never read nor adopted
        _conflict(body, patch, "SecretConflict", first_line(exc), tenant_name)
    try:
        installed = install(
            databases, where, name, namespace, spec, password, access, previous_database=current.get("database")
        )
    except (PolicyError, SchemaError) as exc:
        message = first_line(exc)
        write_ready(body, patch, "Invalid", False, "InvalidPolicy", message, tenant=tenant_name)
        events.warn(body, reason="InvalidPolicy", message=message)
        return  # permanent until the policy, the tenant or its schema changes
    except NameConflict as exc:  # a role Paybill did not create has the name: never adopted, retried slowly
        _conflict(body, patch, "NameConflict", first_line(exc), tenant_name)
    except DatabaseUnavailable as exc:
        wait_for(body, patch, "DatabaseUnavailable", str(exc), delay=10)
    role = installed.role
    try:
        _publish(kube, body, databases.login_fields(role, password, where.database, where.schema))
    except SecretConflict as exc:  # squatted since the password was read
        _conflict(body, patch, "SecretConflict", first_line(exc), tenant_name)
    summary = (
        f"role {role} in {where.database}.{where.schema}: {len(spec.rules)} rules over "
        f"{', '.join(installed.tables) or 'no tables'}; tenant access {access}"
    )
    write_ready(
        body,
        patch,
        "Ready",
        True,
        "Installed",
        summary,
        tenant=tenant_name,
        role=role,
        database=where.database,
        schema=where.schema,
        tables=list(installed.tables),
        access=str(access),
        policyVersion=installed.version,
        credentialsSecret=secret_name(name),
    )
    if (current.get("policyVersion"), current.get("access")) != (installed.version, str(access)):
        events.info(body, reason="Installed", message=summary)
        if memo.audit is not None:
            memo.audit.append(
                "AgentPolicy",
                f"{namespace}/{name}",
                "Installed",
                {
                    "tenant": tenant_name,
                    "role": role,
                    "database": where.database,
                    "schema": where.schema,
                    "access": str(access),
                    "policyVersion": installed.version,
                    "tables": list(installed.tables),
                },
            )


@kopf.on.delete(GROUP, VERSION, "agentpolicies", retries=5)
def delete_policy(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """The role, its grants and its RLS policies go with the policy; so does its Secret."""
    state = body.get("status") or {}
    tenant = state.get("tenant")
    if memo.databases is not None and tenant:
        try:
            dropped = uninstall(
                memo.databases, body.metadata.name, str(body.metadata.namespace), tenant, state.get("database")
            )
        except DatabaseUnavailable as exc:
            raise kopf.TemporaryError(str(exc), delay=10) from None
        if dropped:
            events.info(body, reason="Uninstalled", message=f"role {state.get('role')} dropped")
            if memo.audit is not None:
                memo.audit.append(
                    "AgentPolicy",
                    f"{body.metadata.namespace}/{body.metadata.name}",
                    "Uninstalled",
                    {"tenant": tenant, "role": state.get("role")},
                )
    delete_owned_secret(memo.kube, secret_name(body.metadata.name), str(body.metadata.namespace), body, "AgentPolicy")


def _conflict(body: kopf.Body, patch: kopf.Patch, reason: str, message: str, tenant: str) -> NoReturn:
    """Something the policy did not create has a name it needs: said in status and an Event, retried slowly."""
    write_ready(body, patch, "Conflict", False, reason, message, tenant=tenant)
    events.warn(body, reason=reason, message=message)
    raise kopf.TemporaryError(message, delay=60)


def _password(kube: Kube, body: kopf.Body) -> str:
    """The agent role's password: kept in the Secret the policy controls, made once (again if the Secret is
    lost). SecretConflict if a Secret of that name is not the policy's: its password is never used."""
    secret = owned_secret(
        kube.get("v1", "secrets", secret_name(body.metadata.name), body.metadata.namespace), body, "AgentPolicy"
    )
    return (secret_field(secret, "password") if secret else None) or secrets.token_urlsafe(24)


def _publish(kube: Kube, body: kopf.Body, fields: dict[str, str]) -> None:
    publish_secret(
        kube,
        opaque_secret(
            {
                "name": secret_name(body.metadata.name),
                "namespace": body.metadata.namespace,
                "labels": dict(MANAGED_BY),
                "ownerReferences": [owner_reference(body, "AgentPolicy")],
            },
            fields,
        ),
    )
