"""Broken and disagreeing references show (issue 11, item 11): a Plan in use is held by its finalizer with its users
named; a Plan gone all the same makes its Tenants not Ready; a Subscription whose Tenant is deleted is not Ready; a
Tenant and its Subscription naming different plans raise a condition and a Warning Event on both."""

from __future__ import annotations

from typing import Any

import pytest

from paybill.lifecycle.references import (
    PlanUsers,
    Problem,
    TenantSeen,
    plan_deletion_problem,
    plan_users,
    reference_problem,
    tenant_plan_mismatch,
)
from test_tenant_lifecycle import onboard, plan, wait_phase

API = "paybill.dev/v1alpha1"
GONE = {"deletionTimestamp": "2026-11-30T00:00:00Z"}


def obj(name: str, phase: str | None = None, **spec: Any) -> dict[str, Any]:
    meta = {"name": name, **spec.pop("meta", {})}
    return {"metadata": meta, "spec": spec, **({"status": {"phase": phase}} if phase else {})}


SUB = {"tenantRef": "acme", "planRef": "pro"}


@pytest.mark.parametrize(
    ("tenant", "plan_found", "problem"),
    [
        (obj("acme", planRef="pro"), True, None),
        (None, True, Problem("ReferenceNotFound", "tenant 'acme' not found")),
        (obj("acme", planRef="pro"), False, Problem("ReferenceNotFound", "plan 'pro' not found")),
        (None, False, Problem("ReferenceNotFound", "plan 'pro' and tenant 'acme' not found")),
        (obj("acme", planRef="pro", meta=GONE), True, Problem("TenantDeleting", "tenant 'acme' is being deleted")),
        (
            obj("acme", planRef="free"),
            True,
            Problem("PlanMismatch", "tenant 'acme' is on plan 'free', this subscription bills plan 'pro'"),
        ),
    ],
)
def test_subscription_problems(tenant: dict[str, Any] | None, plan_found: bool, problem: Problem | None) -> None:
    seen = None if tenant is None else TenantSeen.of(tenant)
    assert reference_problem(SUB["tenantRef"], SUB["planRef"], seen, plan_found) == problem


def test_a_tenant_billed_for_another_plan_is_a_mismatch() -> None:
    assert tenant_plan_mismatch("pro", []) is None
    assert tenant_plan_mismatch("pro", [{"name": "acme", "planRef": "pro"}]) is None
    assert tenant_plan_mismatch(
        "pro", [{"name": "acme-2", "planRef": "free"}, {"name": "acme", "planRef": "pro"}]
    ) == Problem("PlanMismatch", "the tenant is on plan 'pro'; subscription acme-2 bills plan 'free'")


def test_plan_users_are_what_still_needs_the_plan() -> None:
    tenants = [
        obj("acme", "Active", planRef="pro"),
        obj("globex", "Suspended", planRef="pro"),
        obj("initech", "Active", planRef="free"),
        obj("gone", "Offboarded", planRef="pro"),
        obj("leaving", "Active", planRef="pro", meta=GONE),
    ]
    subscriptions = [
        obj("acme", tenantRef="acme", planRef="pro"),
        obj("old", planRef="pro", billingStatus="canceled"),
        obj("unpaid", planRef="pro", billingStatus="unpaid"),
        obj("free", planRef="free"),
    ]
    users = plan_users("pro", tenants, subscriptions)
    assert users == PlanUsers(("acme", "globex"), ("acme", "unpaid"))
    assert plan_deletion_problem("pro", users) == Problem(
        "InUse",
        "plan 'pro' is in use by tenants acme, globex; subscriptions acme, unpaid; it is deleted once none "
        "of them uses it",
    )
    assert plan_deletion_problem("pro", plan_users("pro", tenants[2:], subscriptions[1:2])) is None


# --- through the operator -------------------------------------------------------------------------------------


def _conditions(cluster: Any, plural: str, name: str) -> dict[str, dict[str, Any]]:
    found = cluster.kube.get(API, plural, name) or {}
    return {c["type"]: c for c in (found.get("status") or {}).get("conditions") or []}


def _condition(cluster: Any, plural: str, name: str, type_: str, status: str, reason: str) -> dict[str, Any] | None:
    condition = _conditions(cluster, plural, name).get(type_)
    return condition if condition and (condition["status"], condition["reason"]) == (status, reason) else None


def _warnings(cluster: Any, kind: str, name: str, reason: str) -> list[dict[str, Any]]:
    return [
        e
        for e in cluster.kube.list("v1", "events")
        if e["involvedObject"]["kind"] == kind
        and e["involvedObject"]["name"] == name
        and e["reason"] == reason
        and e["type"] == "Warning"
    ]


@pytest.mark.slow
def test_a_plan_in_use_is_held_until_its_users_move(operator: Any) -> None:
    kube = operator.kube
    name = onboard(operator, "pooled")
    wait_phase(operator, name, "Active")
    operator.eventually(
        lambda: "paybill.dev/finalizer" in kube.get(API, "plans", "plan-pooled")["metadata"].get("finalizers", [])
    )
    kube.delete(API, "plans", "plan-pooled")

    blocked = operator.eventually(
        lambda: _condition(operator, "plans", "plan-pooled", "DeletionBlocked", "True", "InUse")
    )
    assert blocked["message"] == (
        f"plan 'plan-pooled' is in use by tenants {name}; subscriptions {name}; it is deleted once none of them uses it"
    )
    assert operator.eventually(lambda: _warnings(operator, "Plan", "plan-pooled", "InUse"))
    assert kube.get(API, "plans", "plan-pooled")["metadata"]["deletionTimestamp"]
    assert _conditions(operator, "tenants", name)["Ready"]["status"] == "True"  # held: nothing broke

    kube.apply(plan("plan-moved", "pooled"))
    kube.merge_patch(API, "subscriptions", name, {"spec": {"planRef": "plan-moved"}})
    kube.merge_patch(API, "tenants", name, {"spec": {"planRef": "plan-moved"}})
    operator.eventually(lambda: kube.get(API, "plans", "plan-pooled") is None, timeout=40)
    wait_phase(operator, name, "Active", plan="plan-moved")


@pytest.mark.slow
def test_tenants_of_a_plan_gone_all_the_same_are_not_ready(operator: Any) -> None:
    """The finalizer removed by hand: the Plan goes, and its Tenant says why it is not Ready."""
    kube = operator.kube
    name = onboard(operator, "pooled")
    wait_phase(operator, name, "Active")
    kube.delete(API, "plans", "plan-pooled")
    operator.eventually(lambda: _condition(operator, "plans", "plan-pooled", "DeletionBlocked", "True", "InUse"))
    kube.merge_patch(API, "plans", "plan-pooled", {"metadata": {"finalizers": None}})
    operator.eventually(lambda: kube.get(API, "plans", "plan-pooled") is None)

    ready = operator.eventually(lambda: _condition(operator, "tenants", name, "Ready", "False", "PlanNotFound"))
    assert ready["message"] == "plan 'plan-pooled' does not exist"
    assert operator.eventually(lambda: _warnings(operator, "Tenant", name, "PlanNotFound"))
    subscription = operator.eventually(
        lambda: _condition(operator, "subscriptions", name, "Ready", "False", "ReferenceNotFound")
    )
    assert subscription["message"] == "plan 'plan-pooled' not found"

    kube.apply(plan("plan-pooled", "pooled"))  # back: both resolve again (the new Plan touches them)
    operator.eventually(lambda: _condition(operator, "tenants", name, "Ready", "True", "Provisioned"))
    operator.eventually(lambda: _condition(operator, "subscriptions", name, "Ready", "True", "Resolved"))


@pytest.mark.slow
def test_the_subscription_of_a_deleted_tenant_is_not_ready(operator: Any) -> None:
    kube = operator.kube
    name = onboard(operator, "pooled")
    wait_phase(operator, name, "Active")
    operator.eventually(lambda: _condition(operator, "subscriptions", name, "Ready", "True", "Resolved"))
    kube.delete(API, "tenants", name)
    operator.eventually(lambda: kube.get(API, "tenants", name) is None, timeout=40)

    ready = operator.eventually(
        lambda: _condition(operator, "subscriptions", name, "Ready", "False", "ReferenceNotFound")
    )
    assert ready["message"] == f"tenant {name!r} not found"
    assert len(operator.eventually(lambda: _warnings(operator, "Subscription", name, "ReferenceNotFound"))) == 1


@pytest.mark.slow
def test_a_tenant_and_its_subscription_on_different_plans_are_flagged_on_both(operator: Any) -> None:
    kube = operator.kube
    name = onboard(operator, "pooled")
    wait_phase(operator, name, "Active")
    kube.apply(plan("plan-other", "pooled"))
    kube.merge_patch(API, "subscriptions", name, {"spec": {"planRef": "plan-other"}})

    on_subscription = operator.eventually(
        lambda: _condition(operator, "subscriptions", name, "Ready", "False", "PlanMismatch")
    )
    assert on_subscription["message"] == (
        f"tenant {name!r} is on plan 'plan-pooled', this subscription bills plan 'plan-other'"
    )
    on_tenant = operator.eventually(
        lambda: _condition(operator, "tenants", name, "PlanMismatch", "True", "PlanMismatch")
    )
    assert on_tenant["message"] == f"the tenant is on plan 'plan-pooled'; subscription {name} bills plan 'plan-other'"
    assert operator.eventually(lambda: _warnings(operator, "Tenant", name, "PlanMismatch"))
    assert operator.eventually(lambda: _warnings(operator, "Subscription", name, "PlanMismatch"))
    assert _conditions(operator, "tenants", name)["Ready"]["status"] == "True"  # still served, by its own plan

    kube.merge_patch(API, "tenants", name, {"spec": {"planRef": "plan-other"}})  # they agree again
    operator.eventually(lambda: _condition(operator, "subscriptions", name, "Ready", "True", "Resolved"))
    operator.eventually(lambda: _condition(operator, "tenants", name, "PlanMismatch", "False", "PlanAgrees"))
