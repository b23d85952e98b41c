"""Tenant provisioning decisions, free of I/O."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ..api.meta import API_VERSION
from ..api.plan import Quotas

TENANT_LABEL = "paybill.dev/tenant"
PLAN_LABEL = "paybill.dev/plan"
ISOLATION_LABEL = "paybill.dev/isolation"
MANAGED_BY = {"app.kubernetes.io/managed-by": "paybill"}
# Pods a tenant admin creates run under the restricted Pod Security Standard: no privileged, host or root pods.
POD_SECURITY = {"pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/warn": "restricted"}


def tenant_namespace(name: str, spec: dict[str, Any]) -> str:
    return spec.get("namespace") or f"tenant-{name}"


def namespace_manifest(tenant: dict[str, Any], plan: dict[str, Any]) -> dict[str, Any]:
    """The tenant's namespace, labelled for selection and owned by the Tenant (deleted with it)."""
    meta = tenant["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": tenant_namespace(meta["name"], tenant.get("spec", {})),
            "labels": {
                **MANAGED_BY,
                **POD_SECURITY,
                TENANT_LABEL: meta["name"],
                PLAN_LABEL: plan["metadata"]["name"],
                ISOLATION_LABEL: plan["spec"]["isolation"],
            },
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": "Tenant",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
    }


# Namespaces no Tenant may ever adopt or delete (the CRD refuses them too; the operator's own is added at run time).
SYSTEM_NAMESPACE_PREFIX = "kube-"
SYSTEM_NAMESPACES = frozenset({"default"})


def protected_namespace(name: str, operator_namespace: str | None) -> bool:
    """A system namespace or the operator's own: never a tenant's."""
    return name.startswith(SYSTEM_NAMESPACE_PREFIX) or name in SYSTEM_NAMESPACES or name == operator_namespace


def controlled_by(existing: Mapping[str, Any], owner_uid: str, kind: str = "Tenant") -> bool:
    """The object's controller is this very Paybill object (its uid, not a name or a label anyone can write)."""
    return any(
        ref.get("uid") == owner_uid
        and ref.get("controller") is True
        and ref.get("kind") == kind
        and ref.get("apiVersion") == API_VERSION
        for ref in (existing.get("metadata") or {}).get("ownerReferences") or []
    )


def may_delete_namespace(existing: dict[str, Any] | None, tenant_uid: str, operator_namespace: str | None) -> bool:
    """Only a namespace the Tenant created and controls, and never a protected one, goes with the Tenant."""
    return (
        existing is not None
        and not protected_namespace(existing["metadata"]["name"], operator_namespace)
        and controlled_by(existing, tenant_uid)
    )


@dataclass(frozen=True)
class NamespaceCheck:
    ok: bool
    reason: str
    message: str


def check_namespace(
    existing: dict[str, Any] | None, name: str, tenant_uid: str, operator_namespace: str | None
) -> NamespaceCheck:
    """A namespace may be adopted only if it is ours: never a system one, another tenant's or a user's."""
    if protected_namespace(name, operator_namespace):
        return NamespaceCheck(
            False, "NamespaceProtected", f"namespace {name!r} is a system namespace; a tenant may not use it"
        )
    if existing is None:
        return NamespaceCheck(True, "Missing", "namespace will be created")
    if not controlled_by(existing, tenant_uid):
        owner = (existing.get("metadata", {}).get("labels") or {}).get(TENANT_LABEL)
        who = f"tenant {owner!r}" if owner else "something other than this tenant"
        return NamespaceCheck(False, "NamespaceConflict", f"namespace {name!r} already exists and belongs to {who}")
    if existing.get("metadata", {}).get("deletionTimestamp"):
        return NamespaceCheck(False, "NamespaceTerminating", "namespace is being deleted; waiting")
    return NamespaceCheck(True, "Exists", "namespace exists")


ADMIN_ACCOUNT = "tenant-admin"
AGENT_ACCOUNT = "tenant-agent"
CREDENTIALS_SECRET = "paybill-database"
QUOTA = "paybill-quota"
LIMITS = "paybill-limits"
NETWORK_POLICY = "paybill-default-deny"


READ = ["get", "list", "watch"]
WRITE = [*READ, "create", "update", "patch", "delete"]
# What a tenant admin runs and reads in its namespace, by name. Not granted: writing Secrets (the operator's
# credentials live there), pods/exec, attach and portforward (a shell in any pod), ServiceAccounts, Roles and
# RoleBindings (escalation), quotas, limits and network policies (the plan's), DaemonSets (every node), nor any
# status subresource or deletecollection.
TENANT_ADMIN_RULES: list[dict[str, Any]] = [
    {"apiGroups": [""], "resources": ["pods", "services", "configmaps", "persistentvolumeclaims"], "verbs": WRITE},
    {
        "apiGroups": [""],
        "resources": ["pods/log", "secrets", "serviceaccounts", "endpoints", "events", "resourcequotas", "limitranges"],
        "verbs": READ,
    },
    {"apiGroups": ["apps"], "resources": ["deployments", "statefulsets"], "verbs": WRITE},
    {
        "apiGroups": ["apps"],
        "resources": ["deployments/scale", "statefulsets/scale"],
        "verbs": ["get", "update", "patch"],
    },
    {"apiGroups": ["apps"], "resources": ["replicasets"], "verbs": READ},
    {"apiGroups": ["batch"], "resources": ["jobs", "cronjobs"], "verbs": WRITE},
    {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": READ},
    {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles", "rolebindings"], "verbs": READ},
    {"apiGroups": ["paybill.dev"], "resources": ["agentpolicies", "agentworkflows"], "verbs": WRITE},
]
# An agent submits workflows and reads the policy it runs under; nothing else.
TENANT_AGENT_RULES: list[dict[str, Any]] = [
    {"apiGroups": ["paybill.dev"], "resources": ["agentworkflows"], "verbs": [*READ, "create"]},
    {"apiGroups": ["paybill.dev"], "resources": ["agentpolicies"], "verbs": READ},
]
ROLE_RULES = {ADMIN_ACCOUNT: TENANT_ADMIN_RULES, AGENT_ACCOUNT: TENANT_AGENT_RULES}


def owner_reference(owner: Mapping[str, Any], kind: str = "Tenant") -> dict[str, Any]:
    """A controller reference to a Paybill object (a Tenant unless `kind` says otherwise)."""
    meta = owner["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": kind,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _meta(tenant: dict[str, Any], name: str, namespace: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": namespace,
        "labels": {**MANAGED_BY, TENANT_LABEL: tenant["metadata"]["name"]},
        "ownerReferences": [owner_reference(tenant)],
    }


def tenant_resources(tenant: dict[str, Any], plan: dict[str, Any]) -> list[dict[str, Any]]:
    """Everything in the tenant's namespace but the credentials: accounts, RBAC, quotas, default-deny network."""
    namespace = tenant_namespace(tenant["metadata"]["name"], tenant.get("spec", {}))
    quotas = Quotas.model_validate(plan.get("spec", {}).get("quotas") or {}).model_dump()  # defaults from api/
    resources: list[dict[str, Any]] = []
    for account in (ADMIN_ACCOUNT, AGENT_ACCOUNT):
        resources.append({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(tenant, account, namespace)})
    for account, role_rules in ROLE_RULES.items():
        resources.append(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": _meta(tenant, account, namespace),
                "rules": role_rules,
            }
        )
        resources.append(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": _meta(tenant, account, namespace),
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": account},
                "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
            }
        )
    resources.append(
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": _meta(tenant, QUOTA, namespace),
            "spec": {
                "hard": {
                    "requests.cpu": quotas["cpu"],
                    "limits.cpu": quotas["cpu"],
                    "requests.memory": quotas["memory"],
                    "limits.memory": quotas["memory"],
                    "requests.storage": quotas["storage"],
                }
            },
        }
    )
    ceiling = {"cpu": quotas["cpu"], "memory": quotas["memory"]}
    resources.append(
        {
            "apiVersion": "v1",
            "kind": "LimitRange",
            "metadata": _meta(tenant, LIMITS, namespace),
            "spec": {
                "limits": [
                    {
                        "type": "Container",
                        "max": ceiling,
                        "default": ceiling,
                        "defaultRequest": {"cpu": "50m", "memory": "64Mi"},
                    }
                ]
            },
        }
    )
    resources.append(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": _meta(tenant, NETWORK_POLICY, namespace),
            "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
        }
    )
    return resources


def owned_manifests(tenant: dict[str, Any], plan: dict[str, Any]) -> list[dict[str, Any]]:
    """Everything the Tenant keeps as the plan says: its namespace and the objects in it (not the Secrets)."""
    return [namespace_manifest(tenant, plan), *tenant_resources(tenant, plan)]


def credentials_secret(tenant: dict[str, Any], fields: dict[str, str]) -> dict[str, Any]:
    """The tenant's database credentials."""
    namespace = tenant_namespace(tenant["metadata"]["name"], tenant.get("spec", {}))
    return opaque_secret(_meta(tenant, CREDENTIALS_SECRET, namespace), fields)


def opaque_secret(metadata: dict[str, Any], fields: dict[str, str]) -> dict[str, Any]:
    """A Secret; `fields` are encoded here and never logged or put in status."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": metadata,
        "data": {key: base64.b64encode(value.encode()).decode() for key, value in sorted(fields.items())},
    }


def secret_field(secret: dict[str, Any], key: str) -> str | None:
    value = (secret.get("data") or {}).get(key)
    return base64.b64decode(value).decode() if value else None


class SecretConflict(Exception):
    """A Secret has the name the operator would use and is not the owner's: never read, changed or deleted."""


class SecretAction(StrEnum):
    CREATE = "Create"
    UPDATE = "Update"
    KEEP = "Keep"
    CONFLICT = "Conflict"


def controller_reference(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The controller reference a desired manifest carries; the operator never publishes a Secret without one."""
    return next(ref for ref in manifest["metadata"]["ownerReferences"] if ref.get("controller") is True)


def secret_conflict(existing: Mapping[str, Any], kind: str, owner_name: str) -> SecretConflict:
    meta = existing.get("metadata") or {}
    return SecretConflict(
        f"secret {meta.get('namespace')}/{meta.get('name')} exists and is not controlled by "
        f"{kind} {owner_name}; it is left as it is"
    )


def owned_secret(existing: dict[str, Any] | None, owner: Mapping[str, Any], kind: str) -> dict[str, Any] | None:
    """The Secret if `owner` controls it, None if there is none; SecretConflict if it is someone else's."""
    if existing is None or controlled_by(existing, owner["metadata"]["uid"], kind):
        return existing
    raise secret_conflict(existing, kind, owner["metadata"]["name"])


def secret_action(existing: dict[str, Any] | None, desired: Mapping[str, Any]) -> SecretAction:
    """What publishing `desired` does to the Secret of that name: only the desired controller's is touched,
    and only its managed keys (a merge patch adds or changes keys, it never drops one)."""
    if existing is None:
        return SecretAction.CREATE
    owner = controller_reference(desired)
    if not controlled_by(existing, owner["uid"], owner["kind"]):
        return SecretAction.CONFLICT
    current = existing.get("data") or {}
    return SecretAction.KEEP if all(current.get(k) == v for k, v in desired["data"].items()) else SecretAction.UPDATE


def agent_grants_key(access: str | None, database: dict[str, Any] | None) -> str:
    """What an agent's grants depend on in a tenant's status: its access and where its data lives."""
    return f"{access}/{(database or {}).get('database')}/{(database or {}).get('schema')}"
