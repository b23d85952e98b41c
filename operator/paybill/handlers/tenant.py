"""Tenant handlers: read the object, call the lifecycle domain, write status."""

from __future__ import annotations

from typing import Any

import kopf

from ..api.meta import API_VERSION, GROUP, VERSION
from ..database.tenants import DatabaseUnavailable, drop_tenant_role, ensure_tenant_role
from ..kube.client import Kube, KubeError
from ..lifecycle.conditions import set_condition
from ..lifecycle.tenant import check_namespace, namespace_manifest, tenant_namespace

RETRY_DELAY = 10


class _Status:
    """Accumulates the status patch of one reconcile."""

    def __init__(self, body: kopf.Body, patch: kopf.Patch) -> None:
        self.body, self.patch = body, patch
        self.generation = body.metadata.get("generation")
        self.conditions = list((body.get("status") or {}).get("conditions") or [])

    def condition(self, type_: str, ok: bool | None, reason: str, message: str) -> None:
        self.conditions = set_condition(self.conditions, type_, ok, reason, message, self.generation)

    def write(self, phase: str, **fields: Any) -> None:
        self.patch.status.update(phase=phase, observedGeneration=self.generation, conditions=self.conditions,
                                 **fields)

    def wait(self, phase: str, reason: str, message: str, permanent: bool = False) -> None:
        """Record why the tenant is not ready, post a Warning Event, and hand the retry to kopf."""
        self.condition("Ready", False, reason, message)
        self.write(phase)
        kopf.warn(self.body, reason=reason, message=message)
        if permanent:
            raise kopf.PermanentError(message)
        raise kopf.TemporaryError(message, delay=RETRY_DELAY)


@kopf.on.resume(GROUP, VERSION, "tenants")
@kopf.on.create(GROUP, VERSION, "tenants")
@kopf.on.update(GROUP, VERSION, "tenants")
def reconcile_tenant(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    kube: Kube = memo.kube
    name, spec = body.metadata.name, dict(body.spec)
    status = _Status(body, patch)

    plan = kube.get(API_VERSION, "plans", spec["planRef"])
    if plan is None:
        status.wait("Pending", "PlanNotFound", f"plan {spec['planRef']!r} does not exist")
        return
    isolation = plan["spec"]["isolation"]

    namespace = tenant_namespace(name, spec)
    check = check_namespace(kube.get("v1", "namespaces", namespace), name)
    if not check.ok:
        status.condition("NamespaceReady", False, check.reason, check.message)
        status.wait("Failed" if check.reason == "NamespaceConflict" else "Provisioning", check.reason,
                    check.message)
        return
    if check.reason == "Missing":
        try:
            kube.create(namespace_manifest(dict(body), plan))
        except KubeError as exc:
            if exc.status != 409:
                raise
        kopf.info(body, reason="NamespaceCreated", message=f"namespace {namespace} created")
    status.condition("NamespaceReady", True, "Provisioned", f"namespace {namespace} is ready")

    if memo.database_url:
        try:
            role = ensure_tenant_role(memo.database_url, name)
        except DatabaseUnavailable as exc:
            status.condition("DatabaseReady", False, "DatabaseUnavailable", str(exc))
            status.wait("Provisioning", "DatabaseUnavailable", str(exc))
            return
        status.condition("DatabaseReady", True, "Provisioned", f"database role {role} is ready")

    status.condition("Ready", True, "Provisioned", f"tenant is active on plan {plan['metadata']['name']}")
    status.write("Active", namespace=namespace, isolation=isolation, plan=plan["metadata"]["name"])
    if (body.get("status") or {}).get("phase") != "Active":
        kopf.info(body, reason="Active", message=f"tenant {name} is active ({isolation} isolation)")


@kopf.on.delete(GROUP, VERSION, "tenants")
def offboard_tenant(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    kube: Kube = memo.kube
    if memo.database_url:
        try:
            drop_tenant_role(memo.database_url, body.metadata.name)
        except DatabaseUnavailable as exc:
            raise kopf.TemporaryError(str(exc), delay=RETRY_DELAY) from None
    kube.delete("v1", "namespaces", tenant_namespace(body.metadata.name, dict(body.spec)))
