"""References between Plans, Tenants and Subscriptions: which are broken or disagree, free of I/O.

A Plan in use is not deleted (its finalizer waits, the users named in a condition); a Subscription whose Tenant
or Plan is gone, or whose Tenant is on another plan, is not Ready; a Tenant billed for another plan than the one
it runs on says so. Each problem is a reason and a message for a condition and a Warning Event.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..api.subscription import BillingStatus
from ..api.tenant import TenantPhase


@dataclass(frozen=True)
class Problem:
    reason: str
    message: str


def deleting(obj: Mapping[str, Any] | None) -> bool:
    return bool(((obj or {}).get("metadata") or {}).get("deletionTimestamp"))


def _spec(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("spec") or {}


@dataclass(frozen=True)
class TenantSeen:
    """What a Subscription reads of its Tenant: the plan it is on, and whether it is being deleted."""

    plan_ref: str | None
    deleting: bool = False

    @classmethod
    def of(cls, tenant: Mapping[str, Any]) -> TenantSeen:
        return cls(_spec(tenant).get("planRef"), deleting(tenant))


def reference_problem(tenant_ref: str, plan_ref: str, tenant: TenantSeen | None, plan_found: bool) -> Problem | None:
    """Why a Subscription is not Ready: a missing or departing Tenant or Plan, or a Tenant on another plan."""
    if tenant is None or not plan_found:
        missing = [
            f"{kind} {name!r}"
            for kind, name, found in (("plan", plan_ref, plan_found), ("tenant", tenant_ref, tenant is not None))
            if not found
        ]
        return Problem("ReferenceNotFound", f"{' and '.join(missing)} not found")
    if tenant.deleting:
        return Problem("TenantDeleting", f"tenant {tenant_ref!r} is being deleted")
    tenant_plan = tenant.plan_ref
    if tenant_plan != plan_ref:
        return Problem(
            "PlanMismatch",
            f"tenant {tenant_ref!r} is on plan {tenant_plan!r}, this subscription bills plan {plan_ref!r}",
        )
    return None


def tenant_plan_mismatch(tenant_plan: str, subscriptions: Iterable[Mapping[str, Any]]) -> Problem | None:
    """A Tenant billed (by any of its Subscriptions, given as name and planRef) for another plan than its own."""
    others = sorted((s["name"], s["planRef"]) for s in subscriptions if s.get("planRef") != tenant_plan)
    if not others:
        return None
    billed = ", ".join(f"subscription {name} bills plan {plan!r}" for name, plan in others)
    return Problem("PlanMismatch", f"the tenant is on plan {tenant_plan!r}; {billed}")


@dataclass(frozen=True)
class PlanUsers:
    tenants: tuple[str, ...] = ()
    subscriptions: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.tenants or self.subscriptions)

    def __str__(self) -> str:
        parts = [
            f"{kind} {', '.join(names)}"
            for kind, names in (("tenants", self.tenants), ("subscriptions", self.subscriptions))
            if names
        ]
        return "; ".join(parts) or "nothing"


def plan_users(
    plan: str, tenants: Iterable[Mapping[str, Any]], subscriptions: Iterable[Mapping[str, Any]]
) -> PlanUsers:
    """What still needs the plan: Tenants on it (not offboarded nor being deleted) and Subscriptions billing it
    (not canceled nor being deleted)."""
    return PlanUsers(
        tenants=tuple(
            sorted(
                t["metadata"]["name"]
                for t in tenants
                if _spec(t).get("planRef") == plan
                and not deleting(t)
                and (t.get("status") or {}).get("phase") != TenantPhase.OFFBOARDED
            )
        ),
        subscriptions=tuple(
            sorted(
                s["metadata"]["name"]
                for s in subscriptions
                if _spec(s).get("planRef") == plan
                and not deleting(s)
                and _spec(s).get("billingStatus") != BillingStatus.CANCELED
            )
        ),
    )


def plan_deletion_problem(plan: str, users: PlanUsers) -> Problem | None:
    """A Plan is deleted only once nothing uses it."""
    if not users:
        return None
    return Problem("InUse", f"plan {plan!r} is in use by {users}; it is deleted once none of them uses it")
