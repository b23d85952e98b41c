"""The Tenant reconciler's decisions, table by table: no cluster, no database, no kopf.

What the slow end-to-end tests show through a running operator (the billing ladder, suspension causes, the
offboarding order, migration steps, failure and backoff) is decided here, so each rule is checked directly."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from paybill.api.meta import Condition
from paybill.api.plan import Isolation, PlanSpec
from paybill.api.subscription import SubscriptionSpec
from paybill.api.tenant import Access, BackupStatus, TenantSpec, TenantStatus
from paybill.api.tenant import TenantPhase as Phase
from paybill.billing.grace import Billed
from paybill.database import Placement, placement_at
from paybill.lifecycle.machine import Event
from paybill.lifecycle.outcome import Touch
from paybill.lifecycle.reconcile import (
    AbandonMove,
    ConvergeObject,
    DataHealth,
    DataPlacement,
    DeleteNamespace,
    EnterPhase,
    Failure,
    FailureKind,
    MigrateData,
    Observed,
    Outcome,
    PlanObject,
    ProvisionData,
    PublishCredentials,
    RemoveData,
    SetAccess,
    TakeBackup,
    TenantObject,
    TouchPolicies,
    data_problems,
    decide,
    failed,
    failed_offboarding,
    offboard,
)

NOW = datetime.datetime(2026, 11, 30, 12, 0, tzinfo=datetime.UTC)
UID = "0f0e0d0c-0000-4000-8000-000000000001"
ROLE = "t_0123456789abcdef"


def tenant(phase: Phase | None = None, conditions: tuple[tuple[str, str, str], ...] = (), **spec: Any) -> TenantObject:
    status = TenantStatus(
        phase=phase,
        conditions=[
            Condition(type=type_, status=value, reason=reason, message="") for type_, value, reason in conditions
        ],
    )
    return TenantObject("acme", UID, TenantSpec(planRef="pro", **spec), status, generation=1)


def with_status(base: TenantObject, **fields: Any) -> TenantObject:
    return TenantObject(base.name, base.uid, base.spec, base.status.model_copy(update=fields), base.generation)


def plan(isolation: Isolation = Isolation.POOLED, grace: int = 7) -> PlanObject:
    return PlanObject("pro", PlanSpec(tier="pro", isolation=isolation, gracePeriodDays=grace))


def at(isolation: Isolation) -> Placement:
    return placement_at("acme", isolation, ROLE)


def billed(status: str, past_due_since: str | None = None, plan_ref: str = "pro", name: str = "acme") -> Billed:
    spec = SubscriptionSpec(tenantRef="acme", planRef=plan_ref, billingStatus=status, pastDueSince=past_due_since)
    return Billed(name, spec)


def seen(isolation: Isolation = Isolation.POOLED, recorded: Isolation | None = None, **more: Any) -> Observed:
    data = DataPlacement(at(recorded) if recorded else None, (), at(isolation))
    return Observed(**{"plan": plan(isolation), "data": data, "now": NOW, **more})


def condition(outcome: Outcome, type_: str) -> Condition:
    assert outcome.status is not None
    return next(c for c in outcome.status.conditions if c.type == type_)


def kinds(outcome: Outcome) -> list[str]:
    return [type(action).__name__ for action in outcome.actions]


def steps(outcome: Outcome) -> list[tuple[str, str, str]]:
    return [(str(t.source), str(t.event), str(t.target)) for t in outcome.transitions]


# --- onboarding ---------------------------------------------------------------------------------------------------


def test_a_new_tenant_is_placed_then_made_active_along_the_table() -> None:
    outcome = decide(tenant(), seen())
    assert kinds(outcome) == [
        "ConvergeObject",  # the namespace, announced as created
        *["ConvergeObject"] * 9,  # 2 ServiceAccounts, 2 Roles, 2 RoleBindings, quota, limits, network policy
        "ProvisionData",
        "SetAccess",
        "PublishCredentials",
        "TouchPolicies",
    ]
    first = outcome.actions[0]
    assert isinstance(first, ConvergeObject) and first.manifest["kind"] == "Namespace"
    assert first.announce is not None and first.announce.reason == "NamespaceCreated"
    assert outcome.actions[10] == ProvisionData(Isolation.POOLED)
    assert outcome.actions[11] == SetAccess(at(Isolation.POOLED), Access.FULL)
    assert steps(outcome) == [("Pending", "provision", "Provisioning"), ("Provisioning", "provisioned", "Active")]
    assert outcome.status is not None and outcome.status.phase == Phase.ACTIVE
    assert outcome.status.database == at(Isolation.POOLED).to_model()
    assert outcome.status.credentialsSecret == "paybill-database"
    assert (condition(outcome, "Ready").status, condition(outcome, "Ready").reason) == ("True", "Provisioned")
    assert outcome.retry is None and outcome.events == ()


def test_an_existing_namespace_of_the_tenant_is_not_announced_again() -> None:
    namespace = {"metadata": {"name": "tenant-acme", "uid": "n1", "ownerReferences": [_owner()]}}
    outcome = decide(tenant(Phase.ACTIVE), seen(namespace=namespace))
    first = outcome.actions[0]
    assert isinstance(first, ConvergeObject) and first.announce is None


# --- billing and suspension -------------------------------------------------------------------------------------

PAST_DUE_RECENTLY = (NOW - datetime.timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
PAST_DUE_LONG_AGO = (NOW - datetime.timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize(
    ("subscriptions", "suspended", "phase", "access", "causes", "restriction", "ready"),
    [
        ((), False, Phase.ACTIVE, Access.FULL, [], "none", "Provisioned"),
        ((billed("active"),), False, Phase.ACTIVE, Access.FULL, [], "none", "Provisioned"),
        ((billed("trialing"),), False, Phase.ACTIVE, Access.FULL, [], "none", "Provisioned"),
        ((billed("past_due", PAST_DUE_RECENTLY),), False, Phase.ACTIVE, Access.FULL, [], "grace_period", "Provisioned"),
        (
            (billed("past_due", PAST_DUE_LONG_AGO),),
            False,
            Phase.ACTIVE,
            Access.READ_ONLY,
            [],
            "grace_period_over",
            "Provisioned",
        ),
        ((billed("unpaid"),), False, Phase.SUSPENDED, Access.NONE, ["billing"], "restricted", "Suspended"),
        ((billed("canceled"),), False, Phase.SUSPENDED, Access.NONE, ["billing"], "restricted", "Suspended"),
        ((billed("paused"),), False, Phase.SUSPENDED, Access.NONE, ["billing"], "restricted", "Suspended"),
        ((billed("active"),), True, Phase.SUSPENDED, Access.NONE, ["manual"], "none", "Suspended"),
        ((billed("canceled"),), True, Phase.SUSPENDED, Access.NONE, ["billing", "manual"], "restricted", "Suspended"),
        # the first subscription by name bills the tenant
        (
            (billed("canceled", name="b"), billed("active", name="a")),
            False,
            Phase.ACTIVE,
            Access.FULL,
            [],
            "none",
            "Provisioned",
        ),
    ],
)
def test_the_billing_ladder_and_the_suspension_causes(
    subscriptions: tuple[Billed, ...],
    suspended: bool,
    phase: Phase,
    access: Access,
    causes: list[str],
    restriction: str,
    ready: str,
) -> None:
    outcome = decide(tenant(Phase.ACTIVE, suspended=suspended), seen(subscriptions=subscriptions))
    assert outcome.status is not None
    assert (outcome.status.phase, outcome.status.access) == (phase, access)
    assert (outcome.status.suspendedFor, outcome.status.restriction) == (causes, restriction)
    assert condition(outcome, "Ready").reason == ready
    assert SetAccess(at(Isolation.POOLED), access) in outcome.actions
    assert condition(outcome, "Billing").status == ("True" if restriction == "none" else "False")
    expected = [] if phase == Phase.ACTIVE else [("Active", "suspend", "Suspended")]
    assert steps(outcome) == expected


def test_read_only_access_is_said_in_ready() -> None:
    outcome = decide(tenant(Phase.ACTIVE), seen(subscriptions=(billed("past_due", PAST_DUE_LONG_AGO),)))
    assert condition(outcome, "Ready").message.endswith("data is read-only")


def test_the_grace_period_is_the_plans() -> None:
    outcome = decide(tenant(Phase.ACTIVE), seen(subscriptions=(billed("past_due", PAST_DUE_RECENTLY),)))
    short = Observed(
        plan=plan(grace=1), data=seen().data, now=NOW, subscriptions=(billed("past_due", PAST_DUE_RECENTLY),)
    )
    assert outcome.status is not None and outcome.status.access == Access.FULL
    shortened = decide(tenant(Phase.ACTIVE), short)
    assert shortened.status is not None and shortened.status.access == Access.READ_ONLY


@pytest.mark.parametrize(
    ("suspended", "billing", "causes"),
    [(True, "active", ["manual"]), (True, "unpaid", ["billing", "manual"]), (False, "unpaid", ["billing"])],
)
def test_a_suspended_tenant_stays_suspended_while_any_cause_is_left(
    suspended: bool, billing: str, causes: list[str]
) -> None:
    """Lifting one cause (manual or billing) does not resume a tenant the other still holds."""
    outcome = decide(
        tenant(Phase.SUSPENDED, suspended=suspended),
        seen(Isolation.BRIDGE, recorded=Isolation.BRIDGE, subscriptions=(billed(billing),)),
    )
    assert outcome.status is not None and (outcome.status.phase, outcome.status.suspendedFor) == (
        Phase.SUSPENDED,
        causes,
    )
    assert outcome.transitions == () and SetAccess(at(Isolation.BRIDGE), Access.NONE) in outcome.actions


def test_a_suspended_tenant_resumes_when_no_cause_is_left() -> None:
    outcome = decide(tenant(Phase.SUSPENDED), seen(subscriptions=(billed("active"),)))
    assert steps(outcome) == [("Suspended", "resume", "Active")]
    assert outcome.status is not None and outcome.status.suspendedFor == []


# --- waiting ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phase", "waits_in"), [(None, Phase.PENDING), (Phase.FAILED, Phase.PENDING), (Phase.ACTIVE, Phase.ACTIVE)]
)
def test_a_missing_plan_is_waited_for_with_backoff(phase: Phase | None, waits_in: Phase) -> None:
    delays = [decide(tenant(phase), Observed(retry=retry)).retry for retry in range(7)]
    assert delays == [10, 20, 40, 80, 160, 300, 300]
    outcome = decide(tenant(phase), Observed())
    assert outcome.actions == () and outcome.status is not None and outcome.status.phase == waits_in
    assert condition(outcome, "Ready").reason == "PlanNotFound"
    assert [e.reason for e in outcome.events] == ["PlanNotFound"]


def test_a_wait_already_said_posts_no_second_event() -> None:
    waiting = tenant(Phase.PENDING, conditions=(("Ready", "False", "PlanNotFound"),))
    assert decide(waiting, Observed()).events == ()


@pytest.mark.parametrize(
    ("namespace", "reason", "phase"),
    [
        (
            {"metadata": {"name": "tenant-acme", "uid": "n", "labels": {"paybill.dev/tenant": "other"}}},
            "NamespaceConflict",
            Phase.FAILED,
        ),
        (
            {"metadata": {"name": "tenant-acme", "uid": "n", "ownerReferences": [], "deletionTimestamp": "x"}},
            "NamespaceConflict",
            Phase.FAILED,
        ),
        (
            {
                "metadata": {"name": "tenant-acme", "uid": "n", "ownerReferences": [], "deletionTimestamp": "x"},
                "ours": True,
            },
            "NamespaceTerminating",
            Phase.ACTIVE,
        ),
    ],
)
def test_a_namespace_that_is_not_the_tenants_is_never_used(
    namespace: dict[str, Any], reason: str, phase: Phase
) -> None:
    if namespace.pop("ours", False):
        namespace["metadata"]["ownerReferences"] = [_owner()]
    outcome = decide(tenant(Phase.ACTIVE), seen(namespace=namespace))
    assert outcome.actions == ()
    assert outcome.status is not None and outcome.status.phase == phase
    assert condition(outcome, "NamespaceReady").reason == reason
    assert outcome.retry == 10


def test_a_system_namespace_is_refused_whatever_exists() -> None:
    outcome = decide(tenant(namespace="kube-system"), seen())
    assert condition(outcome, "NamespaceReady").reason == "NamespaceProtected" and outcome.actions == ()
    operators = decide(tenant(namespace="paybill-system"), seen(operator_namespace="paybill-system"))
    assert condition(operators, "NamespaceReady").reason == "NamespaceProtected"


def test_without_a_database_the_namespace_is_still_made_and_the_wait_says_why() -> None:
    outcome = decide(tenant(), seen(database_configured=False, data=None))
    assert kinds(outcome) == ["ConvergeObject"] * 10
    assert outcome.status is not None and outcome.status.phase == Phase.PENDING
    assert condition(outcome, "DatabaseReady").reason == "NotConfigured"
    assert condition(outcome, "Ready").reason == "DatabaseNotConfigured"
    assert condition(outcome, "NamespaceReady").status == "True"
    assert outcome.transitions == ()


# --- failure and backoff --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phase", "transitions", "ends"),
    [
        (Phase.PENDING, [("Pending", "provision", "Provisioning"), ("Provisioning", "fail", "Failed")], Phase.FAILED),
        (Phase.PROVISIONING, [("Provisioning", "fail", "Failed")], Phase.FAILED),
        (Phase.MIGRATING, [("Migrating", "fail", "Failed")], Phase.FAILED),
        (Phase.FAILED, [], Phase.FAILED),
        (Phase.ACTIVE, [], Phase.ACTIVE),  # an Active tenant keeps its phase; Ready says what failed
        (Phase.SUSPENDED, [], Phase.SUSPENDED),
    ],
)
def test_a_failure_moves_only_a_tenant_being_set_up_to_failed(
    phase: Phase, transitions: list[tuple[str, str, str]], ends: Phase
) -> None:
    outcome = failed(tenant(phase), Failure(FailureKind.DATABASE_UNAVAILABLE, "connection refused"), retry=0)
    assert steps(outcome) == transitions
    assert outcome.status is not None and outcome.status.phase == ends
    assert condition(outcome, "Ready").reason == "DatabaseUnavailable"
    assert condition(outcome, "DatabaseReady").status == "False"
    assert outcome.why == "connection refused"


@pytest.mark.parametrize(
    ("kind", "reason", "also"),
    [
        (FailureKind.DATABASE_UNAVAILABLE, "DatabaseUnavailable", "DatabaseReady"),
        (FailureKind.MIGRATION_FAILED, "MigrationFailed", "DatabaseReady"),
        (FailureKind.NAME_CONFLICT, "NameConflict", "DatabaseReady"),
        (FailureKind.SECRET_CONFLICT, "SecretConflict", "DatabaseReady"),
        (FailureKind.DATABASE_ERROR, "ProvisioningFailed", "DatabaseReady"),
        (FailureKind.OBJECT_CONFLICT, "ObjectConflict", "NamespaceReady"),
        (FailureKind.API_ERROR, "ProvisioningFailed", None),
        (FailureKind.UNEXPECTED, "UnexpectedError", None),
    ],
)
def test_each_failure_has_its_reason_and_condition(kind: FailureKind, reason: str, also: str | None) -> None:
    outcome = failed(tenant(Phase.ACTIVE), Failure(kind, "it broke"), retry=0)
    assert condition(outcome, "Ready").reason == reason
    assert outcome.status is not None
    others = {c.type for c in outcome.status.conditions} - {"Ready"}
    assert others == ({also} if also else set())


def test_an_unreachable_database_is_retried_soon_whatever_the_attempt() -> None:
    failure = Failure(FailureKind.DATABASE_UNAVAILABLE, "down")
    assert [failed(tenant(Phase.FAILED), failure, retry).retry for retry in range(8)] == [5] * 8


def test_failures_back_off_and_warn_once() -> None:
    failure = Failure(FailureKind.NAME_CONFLICT, "taken")
    assert [failed(tenant(Phase.FAILED), failure, retry).retry for retry in range(8)] == [
        5,
        10,
        20,
        40,
        80,
        160,
        300,
        300,
    ]
    first = failed(tenant(Phase.FAILED), failure, 0)
    again = failed(tenant(Phase.FAILED, conditions=(("Ready", "False", "NameConflict"),)), failure, 1)
    assert [e.reason for e in first.events] == ["NameConflict"] and again.events == ()


def test_an_unreadable_database_fails_after_the_namespace_is_made() -> None:
    outcome = decide(
        tenant(), Observed(plan=plan(), now=NOW, data_error=Failure(FailureKind.DATABASE_UNAVAILABLE, "down"))
    )
    assert kinds(outcome) == ["ConvergeObject"] * 10
    assert steps(outcome)[-1] == ("Provisioning", "fail", "Failed")
    assert outcome.retry == 5


# --- migration ------------------------------------------------------------------------------------------------------


def test_a_plan_that_changes_isolation_migrates_an_active_tenant_through_migrating() -> None:
    outcome = decide(tenant(Phase.ACTIVE), seen(Isolation.SILO, recorded=Isolation.POOLED))
    assert kinds(outcome)[10:] == [
        "ProvisionData",
        "EnterPhase",
        "MigrateData",
        "SetAccess",
        "PublishCredentials",
        "FinishMove",  # the source goes only once the credentials point at the target
        "TouchPolicies",
    ]
    enter = outcome.actions[11]
    assert isinstance(enter, EnterPhase) and [(t.source, t.event, t.target) for t in enter.transitions] == [
        (Phase.ACTIVE, Event.MIGRATE, Phase.MIGRATING)
    ]
    assert outcome.actions[12] == MigrateData(at(Isolation.POOLED), at(Isolation.SILO))
    assert outcome.actions[13] == SetAccess(at(Isolation.SILO), Access.FULL)
    assert steps(outcome) == [("Migrating", "migrated", "Active")]
    assert condition(outcome, "Migrated").reason == "Verified"
    assert outcome.status is not None and outcome.status.isolation == "silo"


def moving(recorded: Isolation, to: Isolation | None, previous: Isolation | None = None) -> DataPlacement:
    return DataPlacement(at(recorded), (at(previous),) if previous else (), None, at(to) if to else None)


@pytest.mark.parametrize(
    ("plan_now", "data", "status_isolation", "expected", "transitions", "notices"),
    [
        # killed mid-copy to silo, the plan changed back to pooled: the partial copy goes, rolled back
        (
            Isolation.POOLED,
            moving(Isolation.POOLED, Isolation.SILO),
            "pooled",
            ["ProvisionData", "AbandonMove", "EnterPhase", "SetAccess", "PublishCredentials"],
            [("Migrating", "roll_back", "Active")],
            ["MigrationAbandoned"],
        ),
        # killed mid-copy to silo, the plan still says silo: the move resumes and completes
        (
            Isolation.SILO,
            moving(Isolation.POOLED, Isolation.SILO),
            "pooled",
            ["ProvisionData", "MigrateData", "SetAccess", "PublishCredentials", "FinishMove"],
            [("Migrating", "migrated", "Active")],
            [],
        ),
        # killed mid-copy to silo, the plan now says bridge: the silo copy goes, then the move to bridge
        (
            Isolation.BRIDGE,
            moving(Isolation.POOLED, Isolation.SILO),
            "pooled",
            ["ProvisionData", "AbandonMove", "MigrateData", "SetAccess", "PublishCredentials", "FinishMove"],
            [("Migrating", "migrated", "Active")],
            ["MigrationAbandoned"],
        ),
        # killed after the cut-over, before its status was written: it did move, its source still to remove
        (
            Isolation.SILO,
            moving(Isolation.SILO, None, previous=Isolation.POOLED),
            "pooled",
            ["ProvisionData", "SetAccess", "PublishCredentials", "FinishMove"],
            [("Migrating", "migrated", "Active")],
            [],
        ),
        # killed after entering Migrating, before the move was recorded, the plan changed back: nothing moved
        (
            Isolation.POOLED,
            moving(Isolation.POOLED, None),
            "pooled",
            ["ProvisionData", "EnterPhase", "SetAccess", "PublishCredentials"],
            [("Migrating", "roll_back", "Active")],
            [],
        ),
    ],
)
def test_an_interrupted_move_is_resumed_or_rolled_back_and_said_as_it_happened(
    plan_now: Isolation,
    data: DataPlacement,
    status_isolation: str,
    expected: list[str],
    transitions: list[tuple[str, str, str]],
    notices: list[str],
) -> None:
    interrupted = with_status(tenant(Phase.MIGRATING), isolation=status_isolation, access=Access.FULL, plan="pro")
    observed = Observed(
        plan=plan(plan_now), data=DataPlacement(data.recorded, data.previous, at(plan_now), data.moving_to), now=NOW
    )
    outcome = decide(interrupted, observed)
    assert kinds(outcome)[10:] == [*expected, "TouchPolicies"]  # its status named no database yet
    recorded = [
        (str(t.source), str(t.event), str(t.target))
        for a in outcome.actions
        if isinstance(a, EnterPhase)
        for t in a.transitions
    ]
    assert recorded + steps(outcome) == transitions
    assert [e.reason for e in outcome.events] == notices
    if "AbandonMove" in expected:
        assert AbandonMove(at(Isolation.SILO)) in outcome.actions


@pytest.mark.parametrize(
    ("phase", "entered"),
    [
        (Phase.FAILED, [("Failed", "migrate", "Migrating")]),  # tried again: never said Active mid-move
        (Phase.SUSPENDED, [("Suspended", "resume", "Active"), ("Active", "migrate", "Migrating")]),  # resumed, moved
    ],
)
def test_a_move_from_failed_or_suspended_is_recorded_through_migrating(
    phase: Phase, entered: list[tuple[str, str, str]]
) -> None:
    outcome = decide(tenant(phase), seen(Isolation.SILO, recorded=Isolation.POOLED))
    enter = next(a for a in outcome.actions if isinstance(a, EnterPhase))
    assert [(str(t.source), str(t.event), str(t.target)) for t in enter.transitions] == entered
    assert kinds(outcome).index("EnterPhase") < kinds(outcome).index("MigrateData")
    assert steps(outcome) == [("Migrating", "migrated", "Active")]


def test_a_move_interrupted_then_suspended_is_said_to_wait_not_to_be_rolled_back() -> None:
    interrupted = with_status(
        tenant(Phase.MIGRATING, suspended=True), isolation="pooled", access=Access.FULL, plan="pro"
    )
    data = moving(Isolation.POOLED, Isolation.SILO)
    observed = Observed(
        plan=plan(Isolation.SILO), data=DataPlacement(data.recorded, (), at(Isolation.SILO), data.moving_to), now=NOW
    )
    outcome = decide(interrupted, observed)
    assert "AbandonMove" not in kinds(outcome) and "MigrateData" not in kinds(outcome)  # the copy waits, kept
    enter = next(a for a in outcome.actions if isinstance(a, EnterPhase))
    assert [(str(t.source), str(t.event), str(t.target)) for t in enter.transitions] == [
        ("Migrating", "pause", "Active")
    ]
    assert "waits until the tenant resumes" in enter.why and "abandoned" not in enter.why
    assert steps(outcome) == [("Active", "suspend", "Suspended")]


def test_a_suspended_tenant_is_not_migrated_until_it_resumes() -> None:
    outcome = decide(tenant(Phase.SUSPENDED, suspended=True), seen(Isolation.SILO, recorded=Isolation.POOLED))
    assert "MigrateData" not in kinds(outcome)
    assert SetAccess(at(Isolation.POOLED), Access.NONE) in outcome.actions
    assert condition(outcome, "Migrated").reason == "WaitingForResume"
    assert outcome.status is not None and outcome.status.isolation == "pooled"


# --- what else reconciles -----------------------------------------------------------------------------------------


def test_subscriptions_are_touched_when_the_tenants_plan_changes() -> None:
    subscriptions = (billed("active"),)
    moved = decide(with_status(tenant(Phase.ACTIVE), plan="starter"), seen(subscriptions=subscriptions))
    assert Touch("subscriptions", "acme", "tenant-plan", "pro") in moved.actions
    same = decide(with_status(tenant(Phase.ACTIVE), plan="pro"), seen(subscriptions=subscriptions))
    assert not any(isinstance(a, Touch) for a in same.actions)


def test_agent_policies_are_touched_only_when_access_or_placement_changes() -> None:
    database = at(Isolation.POOLED).to_model()
    settled = with_status(tenant(Phase.ACTIVE), access=Access.FULL, database=database, plan="pro")
    assert not any(isinstance(a, TouchPolicies) for a in decide(settled, seen()).actions)
    suspended = decide(settled, seen(subscriptions=(billed("canceled"),)))
    touch = next(a for a in suspended.actions if isinstance(a, TouchPolicies))
    assert touch.namespace == "tenant-acme" and touch.key.startswith("none/")


def test_a_plan_mismatch_is_a_condition_and_one_warning() -> None:
    other = (billed("active", plan_ref="enterprise"),)
    outcome = decide(tenant(Phase.ACTIVE), seen(subscriptions=other))
    assert condition(outcome, "PlanMismatch").status == "True"
    assert [e.reason for e in outcome.events] == ["PlanMismatch"]
    assert outcome.status is not None
    again = decide(with_status(tenant(Phase.ACTIVE), conditions=outcome.status.conditions), seen(subscriptions=other))
    assert again.events == ()
    agreed = decide(with_status(tenant(Phase.ACTIVE), conditions=outcome.status.conditions), seen())
    assert condition(agreed, "PlanMismatch").status == "False"


# --- offboarding ----------------------------------------------------------------------------------------------------


def ours() -> dict[str, Any]:
    return {"metadata": {"name": "tenant-acme", "uid": "ns-uid", "ownerReferences": [_owner()]}}


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("snapshot", ["EnterPhase", "SetAccess", "TakeBackup", "RemoveData", "DeleteNamespace"]),
        ("retain", ["EnterPhase", "SetAccess", "TakeBackup", "RetainName", "DeleteNamespace"]),
        ("destroy", ["EnterPhase", "SetAccess", "TakeBackup", "RemoveData", "DeleteBackupFile", "DeleteNamespace"]),
    ],
)
def test_offboarding_takes_the_backup_before_the_deletion_policy_and_the_namespace_last(
    policy: str, expected: list[str]
) -> None:
    others = (at(Isolation.POOLED), at(Isolation.BRIDGE))
    data = DataPlacement(at(Isolation.SILO), (at(Isolation.POOLED),), None, others=others)
    outcome = decide(tenant(Phase.ACTIVE, offboard=True, deletionPolicy=policy), Observed(data=data, namespace=ours()))
    assert kinds(outcome) == expected
    assert outcome.actions[1] == SetAccess(at(Isolation.SILO), Access.NONE)
    assert outcome.actions[2] == TakeBackup(at(Isolation.SILO), f"acme-{UID}")
    if "RemoveData" in expected:
        # every placement a move may have left data in, so that the role can be dropped after them
        assert RemoveData((at(Isolation.SILO), *others)) in outcome.actions
    assert outcome.actions[-1] == DeleteNamespace("tenant-acme", "ns-uid")
    assert steps(outcome) == [("Offboarding", "offboarded", "Offboarded")]
    enter = outcome.actions[0]
    assert isinstance(enter, EnterPhase) and [str(t.event) for t in enter.transitions] == ["offboard"]
    assert outcome.status is not None and outcome.status.phase == Phase.OFFBOARDED
    assert outcome.status.access == Access.NONE and outcome.offboarding


def test_an_intact_backup_is_not_taken_again_and_a_repeated_offboarding_skips_what_is_done() -> None:
    backup = BackupStatus(location="/b/acme.sql", sha256="00", bytes=1)
    offboarding = with_status(tenant(Phase.OFFBOARDING, offboard=True), backup=backup)
    data = DataPlacement(at(Isolation.POOLED))
    intact = decide(offboarding, Observed(data=data, backup_intact=True))
    assert kinds(intact) == ["SetAccess", "RemoveData"]
    assert "TakeBackup" in kinds(decide(offboarding, Observed(data=data, backup_intact=False)))
    assert kinds(decide(offboarding, Observed(data=DataPlacement(None)))) == ["ReleaseName"]  # nothing left: the name


def test_a_namespace_that_is_not_the_tenants_is_kept_on_offboarding() -> None:
    theirs = {"metadata": {"name": "tenant-acme", "uid": "n", "ownerReferences": []}}
    outcome = decide(tenant(Phase.ACTIVE, offboard=True), Observed(namespace=theirs))
    assert "DeleteNamespace" not in kinds(outcome)
    assert [e.reason for e in outcome.events] == ["NamespaceKept"]


@pytest.mark.parametrize("forged", [Phase.OFFBOARDING, Phase.OFFBOARDED])
def test_an_offboarding_phase_status_alone_never_removes_data(forged: Phase) -> None:
    """Offboarding is asked for by spec.offboard (or by deleting the Tenant), never by status: a Tenant whose status
    says Offboarding or Offboarded while its data is in place is reconciled from the data, nothing removed, its
    suspension still enforced (outsider's review of issue 13, finding 1)."""
    forged_tenant = with_status(tenant(forged, suspended=True), isolation="pooled", access=Access.FULL, plan="pro")
    outcome = decide(forged_tenant, seen(Isolation.POOLED, recorded=Isolation.POOLED))
    assert not {"TakeBackup", "RemoveData", "DeleteNamespace", "DeleteBackupFile"} & set(kinds(outcome))
    assert SetAccess(at(Isolation.POOLED), Access.NONE) in outcome.actions
    assert outcome.status is not None and outcome.status.phase == Phase.SUSPENDED
    assert [e.reason for e in outcome.events][:1] == ["StatusDisowned"]


def test_an_offboarding_whose_data_is_gone_or_kept_by_the_tenant_stays_offboarded() -> None:
    gone = decide(with_status(tenant(Phase.OFFBOARDED), plan="pro"), seen(Isolation.POOLED))  # nothing recorded
    kept = decide(
        with_status(tenant(Phase.OFFBOARDED), plan="pro"),
        seen(Isolation.POOLED, recorded=Isolation.POOLED, kept_by_this_tenant=True),
    )
    for outcome in (gone, kept):
        assert outcome.actions == () and [e.reason for e in outcome.events] == ["TransitionRefused"]


def test_an_offboarded_tenant_is_never_provisioned_again() -> None:
    outcome = decide(tenant(Phase.OFFBOARDED), seen())
    assert outcome.actions == () and outcome.status is None
    assert [e.reason for e in outcome.events] == ["TransitionRefused"]
    assert "create a new Tenant" in outcome.events[0].message
    assert decide(tenant(Phase.OFFBOARDED, offboard=True), seen()) == Outcome()


def test_deleting_a_tenant_offboards_it_without_writing_status() -> None:
    data = DataPlacement(at(Isolation.POOLED))
    outcome = offboard(tenant(Phase.ACTIVE), Observed(data=data, namespace=ours()), deleting=True)
    assert outcome.status is None and kinds(outcome)[-1] == "DeleteNamespace"


def test_an_unreadable_database_stops_offboarding_after_it_is_recorded() -> None:
    down = Failure(FailureKind.DATABASE_UNAVAILABLE, "down")
    outcome = decide(tenant(Phase.ACTIVE, offboard=True), Observed(data_error=down))
    assert kinds(outcome) == ["EnterPhase"]
    assert [e.reason for e in outcome.events] == ["OffboardingFailed"] and outcome.retry == 10
    assert outcome.status is not None and outcome.status.phase == Phase.OFFBOARDING
    assert (condition(outcome, "Ready").status, condition(outcome, "Ready").message) == ("False", "down")


def test_a_failed_offboarding_step_is_said_in_ready_and_warned_once() -> None:
    failure = Failure(FailureKind.UNEXPECTED, "TakeBackup failed: PermissionError: [Errno 1] Operation not permitted")
    first = failed_offboarding(tenant(Phase.OFFBOARDING, offboard=True), failure)
    assert first.status is not None and first.status.phase == Phase.OFFBOARDING and first.offboarding
    assert condition(first, "Ready").reason == "OffboardingFailed" and "TakeBackup" in condition(first, "Ready").message
    assert [e.reason for e in first.events] == ["OffboardingFailed"] and first.retry == 10
    said = tenant(Phase.OFFBOARDING, conditions=(("Ready", "False", "OffboardingFailed"),), offboard=True)
    assert failed_offboarding(said, failure).events == ()


def _owner() -> dict[str, Any]:
    return {"apiVersion": "paybill.dev/v1alpha1", "kind": "Tenant", "name": "acme", "uid": UID, "controller": True}


def test_an_unforeseen_error_names_the_step_and_its_type() -> None:
    from paybill.database import DatabaseUnavailable
    from paybill.handlers.tenant_actions import failure_of

    unforeseen = failure_of(PermissionError(1, "Operation not permitted"), "TakeBackup")
    assert unforeseen.kind == FailureKind.UNEXPECTED
    assert unforeseen.message == "TakeBackup failed: PermissionError: [Errno 1] Operation not permitted"
    known = failure_of(DatabaseUnavailable("connection refused\nDETAIL: more"), "ProvisionData")
    assert (known.kind, known.message) == (FailureKind.DATABASE_UNAVAILABLE, "connection refused")


# --- the data of a provisioned tenant, checked on every reconcile and by the periodic resync --------------------


def provisioned(
    phase: Phase = Phase.ACTIVE, access: Access = Access.FULL, healthy: bool | None = None, **spec: Any
) -> TenantObject:
    conditions = () if healthy is None else (("DataHealthy", "True" if healthy else "False", "x"),)
    database = at(Isolation.POOLED).to_model()
    return with_status(tenant(phase, conditions=conditions, **spec), access=access, database=database, plan="pro")


@pytest.mark.parametrize(
    ("recorded", "health", "reason"),
    [
        (None, DataHealth(Access.FULL, True), "PlacementMissing"),
        (Isolation.POOLED, DataHealth(Access.NONE, False), "AccessChanged"),
        (Isolation.POOLED, DataHealth(Access.READ_ONLY, True), "AccessChanged"),
        (Isolation.POOLED, DataHealth(Access.FULL, False), "CredentialsRejected"),
    ],
)
def test_broken_data_is_said_repaired_and_verified(recorded: Isolation | None, health: DataHealth, reason: str) -> None:
    outcome = decide(provisioned(), seen(recorded=recorded, health=health))
    assert (
        ProvisionData(Isolation.POOLED) in outcome.actions
        and SetAccess(at(Isolation.POOLED), Access.FULL) in outcome.actions
    )
    assert PublishCredentials(at(Isolation.POOLED)) in outcome.actions
    assert (condition(outcome, "DataHealthy").status, condition(outcome, "DataHealthy").reason) == ("False", reason)
    assert (condition(outcome, "Ready").status, condition(outcome, "Ready").reason) == ("False", "Repairing")
    assert [(e.reason, e.warning) for e in outcome.events] == [(reason, True)]
    assert outcome.retry == 1.0  # looked at again at once, to verify the repair
    assert outcome.status is not None and outcome.status.phase == Phase.ACTIVE and outcome.transitions == ()


def test_verified_data_says_so_and_a_repair_is_announced_once() -> None:
    healthy = DataHealth(Access.FULL, True)
    after_repair = decide(provisioned(healthy=False), seen(recorded=Isolation.POOLED, health=healthy))
    assert (
        condition(after_repair, "DataHealthy").reason == "Verified"
        and condition(after_repair, "Ready").status == "True"
    )
    assert [e.reason for e in after_repair.events] == ["DataRepaired"] and after_repair.retry is None
    steady = decide(provisioned(healthy=True), seen(recorded=Isolation.POOLED, health=healthy))
    assert steady.events == () and condition(steady, "DataHealthy").status == "True"


@pytest.mark.parametrize(
    ("tenant_now", "subscriptions", "health"),
    [
        # the operator is suspending it: the role still logs in, as it did until now
        (provisioned(), (billed("canceled"),), DataHealth(Access.FULL, True)),
        # the operator is resuming it: the role cannot log in yet
        (provisioned(Phase.SUSPENDED, Access.NONE), (billed("active"),), DataHealth(Access.NONE, False)),
        # suspended: a refused login is what suspension means
        (provisioned(Phase.SUSPENDED, Access.NONE), (billed("canceled"),), DataHealth(Access.NONE, False)),
    ],
)
def test_a_change_the_operator_is_making_is_not_taken_for_damage(
    tenant_now: TenantObject, subscriptions: tuple[Billed, ...], health: DataHealth
) -> None:
    outcome = decide(tenant_now, seen(recorded=Isolation.POOLED, health=health, subscriptions=subscriptions))
    assert (
        data_problems(
            tenant_now,
            seen(recorded=Isolation.POOLED, health=health, subscriptions=subscriptions),
            outcome.status.access,
        )
        == []
    )  # type: ignore[union-attr]
    assert condition(outcome, "DataHealthy").status == "True" and outcome.retry is None


def test_a_tenant_not_yet_provisioned_is_not_checked() -> None:
    outcome = decide(tenant(), seen(health=DataHealth(Access.NONE, False)))
    assert outcome.status is not None and "DataHealthy" not in {c.type for c in outcome.status.conditions}
    assert data_problems(tenant(), seen(), Access.FULL) == []


def test_a_lost_placement_record_is_made_again_where_the_data_is_never_at_the_plans_new_place() -> None:
    """The record gone and the plan changed to silo: the data is still pooled, so it is placed there again and
    then moved with its rows; a new empty silo would lose them."""
    lost = DataPlacement(None, (), at(Isolation.SILO), last_known=at(Isolation.POOLED))
    outcome = decide(provisioned(), Observed(plan=plan(Isolation.SILO), data=lost, now=NOW))
    assert outcome.actions[10] == ProvisionData(Isolation.POOLED)
    assert MigrateData(at(Isolation.POOLED), at(Isolation.SILO)) in outcome.actions
    assert condition(outcome, "DataHealthy").reason == "PlacementMissing"


def test_offboarding_a_tenant_whose_record_was_lost_still_backs_up_and_removes_its_data() -> None:
    lost = DataPlacement(
        None, (), None, others=(at(Isolation.SILO), at(Isolation.BRIDGE)), last_known=at(Isolation.POOLED)
    )
    outcome = decide(provisioned(offboard=True), Observed(data=lost))
    assert kinds(outcome) == ["EnterPhase", "SetAccess", "TakeBackup", "RemoveData"]
    assert outcome.actions[1] == SetAccess(at(Isolation.POOLED), Access.NONE)
    assert RemoveData((at(Isolation.POOLED), at(Isolation.SILO), at(Isolation.BRIDGE))) in outcome.actions


@pytest.mark.parametrize(("policy", "database_reason"), [("snapshot", "Removed"), ("retain", "Retained")])
def test_an_offboarded_tenants_status_no_longer_says_its_data_and_namespace_are_ready(
    policy: str, database_reason: str
) -> None:
    outcome = decide(
        provisioned(healthy=True, offboard=True, deletionPolicy=policy), Observed(data=DataPlacement(None))
    )
    said = {c.type: (c.status, c.reason) for c in outcome.status.conditions}  # type: ignore[union-attr]
    assert said["DatabaseReady"] == ("False", database_reason) and said["NamespaceReady"] == ("False", "Deleted")
    assert said["DataHealthy"] == ("Unknown", "Offboarded") and said["Ready"] == ("False", "Offboarded")
    dumped = outcome.status.model_dump(mode="json", by_alias=True, exclude_unset=True)  # type: ignore[union-attr]
    assert ("database" in dumped and dumped["database"] is None) == (policy != "retain")  # removed: cleared


def test_while_data_moves_ready_says_so() -> None:
    outcome = decide(tenant(Phase.ACTIVE), seen(Isolation.SILO, recorded=Isolation.POOLED))
    enter = next(a for a in outcome.actions if isinstance(a, EnterPhase))
    ready = next(c for c in enter.conditions if c.type == "Ready")
    assert (ready.status, ready.reason) == ("False", "Migrating") and "pooled to silo" in ready.message


def test_an_earlier_tenants_retained_data_is_never_given_to_a_new_tenant_of_the_same_name() -> None:
    retained = "the data of an earlier Tenant named acme (uid old) is retained"
    outcome = decide(tenant(), Observed(plan=plan(), now=NOW, retained=retained))
    assert kinds(outcome) == ["ConvergeObject"] * 10  # its namespace, never the data
    assert (condition(outcome, "DatabaseReady").reason, condition(outcome, "Ready").reason) == ("NameConflict",) * 2
    offboarding = decide(tenant(Phase.FAILED, offboard=True), Observed(retained=retained, namespace=ours()))
    assert kinds(offboarding) == ["EnterPhase", "DeleteNamespace"]  # the earlier Tenant's data is left alone


def test_a_tenant_deleted_before_anything_was_placed_frees_its_name() -> None:
    """It claimed the name, then provisioning failed: its deletion must not lock the name for good."""
    outcome = decide(tenant(Phase.FAILED, offboard=True, deletionPolicy="destroy"), Observed(data=DataPlacement(None)))
    assert kinds(outcome) == ["EnterPhase", "ReleaseName"]
    retained = Observed(retained="an earlier Tenant's data")  # another Tenant's claim is never released
    assert "ReleaseName" not in kinds(decide(tenant(Phase.FAILED, offboard=True), retained))


def test_a_repair_that_does_not_take_is_warned_once_and_looked_at_less_and_less_often() -> None:
    broken = DataHealth(Access.FULL, False)
    first = decide(provisioned(), seen(recorded=Isolation.POOLED, health=broken))
    assert [e.reason for e in first.events] == ["CredentialsRejected"] and first.retry == 1.0
    assert first.status is not None
    again = with_status(provisioned(), conditions=first.status.conditions)
    later = [decide(again, seen(recorded=Isolation.POOLED, health=broken, retry=r)) for r in (1, 2, 3)]
    assert all(o.events == () for o in later)
    assert [o.retry for o in later] == [2.0, 4.0, 8.0]
