"""The lifecycle state machine and the billing restriction ladder: pure, table-driven."""

from __future__ import annotations

import datetime

import pytest

from paybill.api.subscription import Restriction
from paybill.api.tenant import Access
from paybill.api.tenant import TenantPhase as Phase
from paybill.billing.grace import billing_state
from paybill.lifecycle.machine import TRANSITIONS, Event, TransitionRefused, path, retry_delay, transition

NOW = datetime.datetime(2026, 11, 25, 12, tzinfo=datetime.UTC)


def test_every_event_outside_the_table_is_refused_with_a_reason() -> None:
    for phase in Phase:
        for event in Event:
            if (phase, event) in TRANSITIONS:
                assert transition(phase, event).target == TRANSITIONS[(phase, event)]
            else:
                with pytest.raises(TransitionRefused) as refused:
                    transition(phase, event)
                assert refused.value.phase == phase and refused.value.reason


@pytest.mark.parametrize(
    ("source", "event", "target"),
    [
        ("Pending", "provision", "Provisioning"),
        ("Provisioning", "provisioned", "Active"),
        ("Active", "suspend", "Suspended"),
        ("Suspended", "resume", "Active"),
        ("Active", "migrate", "Migrating"),
        ("Migrating", "migrated", "Active"),
        ("Provisioning", "fail", "Failed"),
        ("Failed", "retry", "Provisioning"),
        ("Suspended", "offboard", "Offboarding"),
        ("Offboarding", "offboarded", "Offboarded"),
    ],
)
def test_the_documented_transitions(source: str, event: str, target: str) -> None:
    assert transition(source, event).target == target


def test_forbidden_transitions_name_why() -> None:
    with pytest.raises(TransitionRefused, match="waits for resume"):
        transition("Suspended", "migrate")
    with pytest.raises(TransitionRefused, match="create a new Tenant"):
        transition("Offboarded", "provision")
    with pytest.raises(TransitionRefused, match="allowed events are"):
        transition("Pending", "resume")


def test_paths_are_shortest_chains_of_allowed_transitions() -> None:
    assert [t.target for t in path("Pending", "Active")] == [Phase.PROVISIONING, Phase.ACTIVE]
    assert [t.event for t in path("Failed", "Suspended")] == [Event.RETRY, Event.PROVISIONED, Event.SUSPEND]
    assert path("Active", "Active") == []
    with pytest.raises(TransitionRefused):
        path("Offboarded", "Active")


def test_backoff_doubles_and_is_capped() -> None:
    assert [retry_delay(n) for n in range(4)] == [5, 10, 20, 40]
    assert retry_delay(30) == 300


@pytest.mark.parametrize(
    ("status", "since_days", "restriction", "access"),
    [
        ("active", None, Restriction.NONE, Access.FULL),
        ("trialing", None, Restriction.NONE, Access.FULL),
        ("past_due", 1, Restriction.GRACE_PERIOD, Access.FULL),
        ("past_due", None, Restriction.GRACE_PERIOD, Access.FULL),
        ("past_due", 8, Restriction.GRACE_PERIOD_OVER, Access.READ_ONLY),
        ("unpaid", 30, Restriction.RESTRICTED, Access.NONE),
        ("paused", None, Restriction.RESTRICTED, Access.NONE),
        ("canceled", None, Restriction.RESTRICTED, Access.NONE),
    ],
)
def test_billing_restriction_ladder(
    status: str, since_days: int | None, restriction: Restriction, access: Access
) -> None:
    since = None if since_days is None else (NOW - datetime.timedelta(days=since_days)).isoformat()
    state = billing_state(status, since, 7, NOW)
    assert state.restriction == restriction and state.access == access
    assert state.suspends == (restriction == Restriction.RESTRICTED)


def test_grace_period_says_when_to_look_again() -> None:
    state = billing_state("past_due", (NOW - datetime.timedelta(days=6)).strftime("%Y-%m-%dT%H:%M:%SZ"), 7, NOW)
    assert state.recheck_after == pytest.approx(86400)
    assert billing_state("past_due", NOW.isoformat(), 0, NOW).restriction == Restriction.GRACE_PERIOD_OVER
