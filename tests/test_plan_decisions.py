"""A Plan's reconcile and release, decided without a cluster or a database: valid or not, what it makes reconcile
again, and a deletion held while Tenants run on it or Subscriptions bill it."""

from __future__ import annotations

from typing import Any

import pytest

from paybill.api.plan import PlanSpec
from paybill.lifecycle.outcome import InvalidSpec, Notice, Readiness, Touch
from paybill.lifecycle.plan import (
    RELEASE_DELAY,
    PlanOutcome,
    decide_plan,
    decide_plan_release,
    parse_plan,
    plan_user_touches,
)
from paybill.lifecycle.references import Problem

GONE = {"deletionTimestamp": "2026-11-30T00:00:00Z"}


def obj(name: str, phase: str | None = None, **spec: Any) -> dict[str, Any]:
    meta = {"name": name, **spec.pop("meta", {})}
    return {"metadata": meta, "spec": spec, **({"status": {"phase": phase}} if phase else {})}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"tier": "Pro!", "isolation": "pooled"}, "spec.tier: String should match pattern"),
        ({"tier": "pro"}, "spec.isolation: Field required"),
        ({"tier": "pro", "isolation": "pooled", "gracePeriodDays": 91}, "spec.gracePeriodDays: Input should be less"),
        ({"tier": "pro", "isolation": "shared"}, "spec.isolation: Input should be 'silo', 'pooled' or 'bridge'"),
        ({"tier": "pro", "isolation": "pooled", "bogus": 1}, "spec.bogus: Extra inputs are not permitted"),
    ],
)
def test_a_plan_its_model_refuses_is_invalid_and_warned_about_every_time(spec: dict[str, Any], message: str) -> None:
    parsed = parse_plan(spec)
    assert isinstance(parsed, InvalidSpec) and parsed.message.startswith(message)
    for changed in (True, False):
        outcome = decide_plan(parsed, changed, "uid-1", 2)
        assert outcome == PlanOutcome(
            "Invalid", Readiness(False, "InvalidSpec", parsed.message), (Notice("InvalidSpec", parsed.message, True),)
        )


def test_the_defaults_are_the_models() -> None:
    parsed = parse_plan({"tier": "pro", "isolation": "silo"})
    assert isinstance(parsed, PlanSpec) and parsed.gracePeriodDays == 7


@pytest.mark.parametrize(
    ("changed", "touch_users"),
    [(True, "uid-1/2"), (False, None)],  # created or updated: its users look again; resumed: nothing changed
)
def test_a_valid_plan_is_ready_and_a_change_makes_its_users_look_again(changed: bool, touch_users: str | None) -> None:
    spec = parse_plan({"tier": "pro", "isolation": "bridge"})
    assert isinstance(spec, PlanSpec)
    assert decide_plan(spec, changed, "uid-1", 2) == PlanOutcome(
        "Ready", Readiness(True, "Valid", "pro tier with bridge isolation"), (), touch_users
    )


def test_every_tenant_and_subscription_naming_the_plan_is_touched() -> None:
    tenants = [obj("acme", "Active", planRef="pro"), obj("gone", "Offboarded", planRef="pro"), obj("x", planRef="free")]
    subscriptions = [obj("acme", planRef="pro", billingStatus="canceled"), obj("y", planRef="free"), {"metadata": {}}]
    assert plan_user_touches("pro", "pro deleted", tenants, subscriptions) == (
        Touch("tenants", "acme", "plan", "pro deleted"),
        Touch("tenants", "gone", "plan", "pro deleted"),
        Touch("subscriptions", "acme", "plan", "pro deleted"),
    )
    assert plan_user_touches("enterprise", "v", tenants, subscriptions) == ()


IN_USE = Problem(
    "InUse", "plan 'pro' is in use by tenants acme; subscriptions unpaid; it is deleted once none of them uses it"
)


@pytest.mark.parametrize(
    ("tenants", "subscriptions", "blocked"),
    [
        ([], [], None),
        (
            [obj("acme", "Active", planRef="pro"), obj("x", "Active", planRef="free")],
            [obj("unpaid", planRef="pro", billingStatus="unpaid")],
            IN_USE,
        ),
        (
            [obj("old", "Offboarded", planRef="pro"), obj("leaving", "Active", planRef="pro", meta=GONE)],
            [obj("old", planRef="pro", billingStatus="canceled"), obj("y", planRef="pro", meta=GONE)],
            None,
        ),
        (
            [obj("globex", "Suspended", planRef="pro")],
            [],
            Problem("InUse", "plan 'pro' is in use by tenants globex; it is deleted once none of them uses it"),
        ),
    ],
)
def test_a_plan_in_use_is_held_with_its_users_named(
    tenants: list[dict[str, Any]], subscriptions: list[dict[str, Any]], blocked: Problem | None
) -> None:
    release = decide_plan_release("pro", tenants, subscriptions, (None, None))
    assert release.blocked == blocked
    if blocked is None:
        assert (release.events, release.retry_after) == ((), None)
    else:
        assert release.events == (Notice(blocked.reason, blocked.message, True),)
        assert release.retry_after == RELEASE_DELAY


def test_a_held_plan_warns_once_while_its_users_stay_the_same() -> None:
    tenants = [obj("acme", "Active", planRef="pro")]
    first = decide_plan_release("pro", tenants, [], (None, None))
    assert first.blocked is not None
    again = decide_plan_release("pro", tenants, [], (first.blocked.reason, first.blocked.message))
    assert again.blocked == first.blocked and again.events == ()
    more = decide_plan_release("pro", [*tenants, obj("globex", "Active", planRef="pro")], [], (IN_USE.reason, "x"))
    assert len(more.events) == 1
