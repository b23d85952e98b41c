"""Tenant provisioning decisions, free of I/O."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..api.meta import API_VERSION

TENANT_LABEL = "paybill.dev/tenant"
PLAN_LABEL = "paybill.dev/plan"
ISOLATION_LABEL = "paybill.dev/isolation"
MANAGED_BY = {"app.kubernetes.io/managed-by": "paybill"}


def tenant_namespace(name: str, spec: dict[str, Any]) -> str:
    return spec.get("namespace") or f"tenant-{name}"


def namespace_manifest(tenant: dict[str, Any], plan: dict[str, Any]) -> dict[str, Any]:
    """The tenant's namespace, labelled for selection and owned by the Tenant (deleted with it)."""
    meta = tenant["metadata"]
    return {
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {
            "name": tenant_namespace(meta["name"], tenant.get("spec", {})),
            "labels": {**MANAGED_BY, TENANT_LABEL: meta["name"], PLAN_LABEL: plan["metadata"]["name"],
                       ISOLATION_LABEL: plan["spec"]["isolation"]},
            "ownerReferences": [{"apiVersion": API_VERSION, "kind": "Tenant", "name": meta["name"],
                                 "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}],
        },
    }


@dataclass(frozen=True)
class NamespaceCheck:
    ok: bool
    reason: str
    message: str


def check_namespace(existing: dict[str, Any] | None, tenant_name: str) -> NamespaceCheck:
    """A namespace may be adopted only if it is ours: never take over another tenant's or a user's."""
    if existing is None:
        return NamespaceCheck(True, "Missing", "namespace will be created")
    labels = existing.get("metadata", {}).get("labels") or {}
    if labels.get(TENANT_LABEL) != tenant_name:
        owner = labels.get(TENANT_LABEL)
        who = f"tenant {owner!r}" if owner else "something other than Paybill"
        return NamespaceCheck(False, "NamespaceConflict",
                              f"namespace {existing['metadata']['name']!r} already exists and belongs to {who}")
    if existing.get("metadata", {}).get("deletionTimestamp"):
        return NamespaceCheck(False, "NamespaceTerminating", "namespace is being deleted; waiting")
    return NamespaceCheck(True, "Exists", "namespace exists")
