"""Whether a tenant is suspended now, read from the API server: its spec and its subscriptions, as the tenant's
lifecycle decides it (workflows.reconcile.tenant_suspended), before its status says so."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

import pydantic

from ..api.meta import API_VERSION
from ..api.plan import PlanSpec
from ..api.subscription import SubscriptionSpec
from ..api.tenant import TenantSpec
from ..billing.grace import Billed
from ..kubeclient import Kube
from ..workflows.reconcile import tenant_suspended


def billed(obj: Mapping[str, Any], tenant: str) -> Billed | None:
    """A Subscription of `tenant` as the tenants' index keeps it (handlers/tenant.py); None for another's."""
    spec = obj.get("spec") or {}
    if spec.get("tenantRef") != tenant:
        return None
    try:
        return Billed(obj["metadata"]["name"], SubscriptionSpec.model_validate(dict(spec)))
    except pydantic.ValidationError:
        return None


def subscriptions_of(kube: Kube, tenant: str) -> list[Billed]:
    return [entry for item in kube.list(API_VERSION, "subscriptions") if (entry := billed(item, tenant))]


def suspended_now(kube: Kube, tenant: Mapping[str, Any] | None) -> bool:
    """The Tenant (as read) is suspended by its spec or its subscriptions now; a spec that does not parse is."""
    if tenant is None:
        return False
    try:
        spec = TenantSpec.model_validate(dict(tenant.get("spec") or {}))
    except pydantic.ValidationError:
        return True
    found = kube.get(API_VERSION, "plans", spec.planRef) if spec.planRef else None
    try:
        plan = PlanSpec.model_validate(dict(found.get("spec") or {})) if found is not None else None
    except pydantic.ValidationError:
        plan = None  # billing's grace needs the plan; a suspending status does not
    name = str(tenant["metadata"]["name"])
    return tenant_suspended(spec, plan, subscriptions_of(kube, name), datetime.datetime.now(datetime.UTC))
