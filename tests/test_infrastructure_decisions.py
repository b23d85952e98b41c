"""A tenant's infrastructure, decided without a cluster, a database or Terraform: what a Plan's provisioning lacks,
which run comes next (apply, plan, an approved plan, a drift check, a destroy), what Provisioned and Drifted say,
and how the Tenant's reconcile waits for it (Active only once applied; offboarding destroys before it ends)."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from paybill.api.meta import Condition, ConditionStatus
from paybill.api.plan import Approval, Cloud, Isolation, PlanSpec, Provisioning
from paybill.api.tenant import InfrastructureStatus, TenantSpec, TenantStatus
from paybill.api.tenant import TenantPhase as Phase
from paybill.database import placement_at
from paybill.lifecycle import infrastructure as infra
from paybill.lifecycle.plan import decide_plan
from paybill.lifecycle.reconcile import (
    DataPlacement,
    DeleteNamespace,
    Observed,
    PlanObject,
    ProvisionData,
    RemoveData,
    TenantObject,
    decide,
    offboard,
)

NOW = datetime.datetime(2026, 11, 30, 12, 0, tzinfo=datetime.UTC)
DIGEST = "d" * 64
PLAN_HASH = "a" * 64
UID = "0f0e0d0c-0000-4000-8000-000000000001"


def stamp(seconds_ago: float) -> str:
    return (NOW - datetime.timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def desired(**fields: Any) -> infra.Desired:
    return infra.Desired(**{"module": "local/silo", "digest": DIGEST, **fields})


def seen(**fields: Any) -> infra.InfraSeen:
    return infra.InfraSeen(**{"desired": desired(), "applied_digest": DIGEST, **fields})


def applied(**fields: Any) -> InfrastructureStatus:
    base = {
        "module": "local/silo",
        "runId": "r1",
        "lastRun": "apply",
        "lastResult": infra.SUCCEEDED,
        "lastRunAt": stamp(60),
        "configDigest": DIGEST,
        "appliedDigest": DIGEST,
        "planHash": PLAN_HASH,
        "appliedHash": PLAN_HASH,
        "adds": 4,
        "driftCheckedAt": stamp(60),
    }
    return InfrastructureStatus(**{**base, **fields})


def decided(
    view: infra.InfraSeen, record: InfrastructureStatus | None = None, said: Condition | None = None
) -> infra.InfraDecision:
    return infra.decide_infrastructure(view, record, said, NOW, "acme")


# --- the Plan ---------------------------------------------------------------------------------------------------------


def test_local_needs_no_credentials_and_a_shipped_module_meets_the_contract() -> None:
    provisioning = Provisioning(cloud=Cloud.LOCAL)
    assert (
        infra.provisioning_problems(
            provisioning, infra.ModuleCheck("local/silo", True), infra.CredentialsCheck(None, None)
        )
        == ()
    )


@pytest.mark.parametrize(
    ("module", "credentials", "expected"),
    [
        (infra.ModuleCheck("x", False), infra.CredentialsCheck(None, None), "module x does not exist"),
        (
            infra.ModuleCheck("broken", True, ("output network_id is missing",)),
            infra.CredentialsCheck(None, None),
            "module broken: output network_id is missing",
        ),
        (
            infra.ModuleCheck("aws/silo", True),
            infra.CredentialsCheck(None, "paybill"),
            "cloud aws needs provider credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)",
        ),
        (
            infra.ModuleCheck("aws/silo", True),
            infra.CredentialsCheck("aws", None),
            "the operator has no namespace to read it from",
        ),
        (
            infra.ModuleCheck("aws/silo", True),
            infra.CredentialsCheck("aws", "paybill"),
            "credentials secret paybill/aws does not exist",
        ),
        (
            infra.ModuleCheck("aws/silo", True),
            infra.CredentialsCheck("aws", "paybill", frozenset({"AWS_ACCESS_KEY_ID"})),
            "credentials secret paybill/aws lacks AWS_SECRET_ACCESS_KEY",
        ),
    ],
)
def test_what_a_plans_provisioning_lacks_is_named(
    module: infra.ModuleCheck, credentials: infra.CredentialsCheck, expected: str
) -> None:
    cloud = "aws" if module.name.startswith("aws") else "local"
    problems = infra.provisioning_problems(Provisioning(cloud=Cloud(cloud)), module, credentials)
    assert any(expected in problem for problem in problems), problems


def test_a_plan_whose_provisioning_lacks_something_is_invalid_with_a_warning() -> None:
    spec = PlanSpec(tier="pro", isolation=Isolation.SILO, provisioning=Provisioning(cloud=Cloud.LOCAL))
    outcome = decide_plan(spec, True, "uid", 1, ("module broken: output network_id is missing",))
    assert outcome.phase == "Invalid" and outcome.ready.reason == "ProvisioningInvalid"
    assert "output network_id is missing" in outcome.ready.message
    assert outcome.events[0].warning and outcome.touch_users == "uid/1"  # its tenants say why too
    assert outcome.retry_after == 30  # a credentials Secret made later is seen
    again = decide_plan(
        spec,
        False,
        "uid",
        1,
        ("module broken: output network_id is missing",),
        said_ready=(outcome.ready.reason, outcome.ready.message),
    )
    assert again.events == () and again.phase == "Invalid"  # warned once
    assert decide_plan(spec, False, "uid", 1).ready.ok


def test_only_the_providers_variables_reach_terraform() -> None:
    data = {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "PG_CONN_STR": "x", "PATH": "/tmp", "TF_LOG": "1"}
    assert infra.provider_environment(data) == {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}


# --- provisioning ----------------------------------------------------------------------------------------------------


def test_a_new_tenant_on_auto_approval_applies_and_is_not_ready_until_then() -> None:
    decision = decided(seen())
    assert decision.actions == (infra.ApplyInfrastructure(desired()),)
    assert not decision.ready and decision.provisioned[:2] == (False, "Applying") and decision.retry is None


@pytest.mark.parametrize("view", [seen(running="apply"), seen(settled=False)])
def test_a_run_in_flight_or_a_result_being_written_starts_nothing(view: infra.InfraSeen) -> None:
    decision = decided(view)
    assert decision.actions == () and not decision.ready
    assert decision.retry == (None if view.running else infra.SETTLE_GRACE)


def test_applied_for_the_current_configuration_is_ready_and_said_once() -> None:
    decision = decided(seen(), applied())
    assert decision.ready and decision.actions == () and decision.provisioned[:2] == (True, "Applied")
    assert [e.reason for e in decision.events] == ["InfrastructureApplied"]
    said = Condition(type="Provisioned", status=ConditionStatus.TRUE, reason="Applied", message=decision.provisioned[2])
    assert decided(seen(), applied(), said).events == ()


def test_a_changed_configuration_applies_again() -> None:
    decision = decided(seen(), applied(appliedDigest="e" * 64))
    assert not decision.ready and decision.actions == (infra.ApplyInfrastructure(desired()),)


def test_a_failed_apply_says_terraforms_message_and_waits_its_backoff_then_retries() -> None:
    failed = applied(appliedDigest=None, lastResult=infra.FAILED, failures=2, lastRunAt=stamp(3), message="Error: boom")
    decision = decided(seen(), failed)
    assert decision.failed and decision.actions == () and decision.retry == pytest.approx(7)  # 10 s after 2 failures
    assert decision.provisioned == (False, "ApplyFailed", "Error: boom")
    assert [(e.reason, e.warning) for e in decision.events] == [("ApplyFailed", True)]
    said = Condition(type="Provisioned", status=ConditionStatus.FALSE, reason="ApplyFailed", message="Error: boom")
    assert decided(seen(), failed, said).events == ()  # warned once, not on every retry
    later = failed.model_copy(update={"lastRunAt": stamp(11)})
    assert decided(seen(), later).actions == (infra.ApplyInfrastructure(desired()),)


def test_a_failure_of_another_configuration_does_not_hold_up_the_new_one() -> None:
    failed = applied(appliedDigest=None, lastResult=infra.FAILED, failures=5, lastRunAt=stamp(1), configDigest="e" * 64)
    assert decided(seen(), failed).actions == (infra.ApplyInfrastructure(desired()),)


def test_invalid_provisioning_starts_no_run_and_says_what_is_missing() -> None:
    decision = decided(seen(desired=desired(problems=("module x does not exist",))))
    assert decision.actions == () and decision.provisioned[1] == "ProvisioningInvalid"
    assert "module x does not exist" in decision.provisioned[2] and decision.events[0].warning


# --- manual approval -------------------------------------------------------------------------------------------------


def manual(**fields: Any) -> infra.InfraSeen:
    return seen(desired=desired(approval=Approval.MANUAL), **fields)


def awaiting(**fields: Any) -> InfrastructureStatus:
    base = {
        "runId": "r1",
        "lastRun": "plan",
        "lastResult": infra.AWAITING,
        "configDigest": DIGEST,
        "planHash": PLAN_HASH,
        "adds": 4,
    }
    return InfrastructureStatus(**{**base, **fields})


def test_manual_approval_plans_first_and_stops_with_the_summary_and_hash() -> None:
    assert decided(manual()).actions == (infra.PlanInfrastructure(desired(approval=Approval.MANUAL)),)
    decision = decided(manual(), awaiting())
    assert decision.actions == () and not decision.ready
    ok, reason, message = decision.provisioned
    assert (ok, reason) == (False, "AwaitingApproval") and PLAN_HASH in message and "4 to add" in message
    assert f"kubectl annotate tenant/acme paybill.dev/approve-plan={PLAN_HASH}" in message


def test_the_approved_hash_applies_exactly_that_plan() -> None:
    decision = decided(manual(approved=PLAN_HASH), awaiting())
    assert decision.actions == (infra.ApplyInfrastructure(desired(approval=Approval.MANUAL), PLAN_HASH),)


@pytest.mark.parametrize("wrong", ["b" * 64, PLAN_HASH[:12], "not-a-hash"])
def test_a_wrong_hash_applies_nothing_and_says_why(wrong: str) -> None:
    decision = decided(manual(approved=wrong), awaiting())
    assert decision.actions == () and decision.provisioned[1] == "ApprovalMismatch"
    assert f"does not name the pending plan {PLAN_HASH}: nothing applied" in decision.provisioned[2]
    assert decision.events[0].warning


def test_a_spec_changed_since_the_plan_plans_again_and_its_old_approval_applies_nothing() -> None:
    decision = decided(manual(approved=PLAN_HASH), awaiting(configDigest="e" * 64))
    assert decision.actions == (infra.PlanInfrastructure(desired(approval=Approval.MANUAL)),)
    assert "the spec changed since plan" in decision.provisioned[2]


def test_a_stale_plan_is_planned_again() -> None:
    stale = awaiting(lastResult=infra.STALE, message="the plan could not be applied (Saved plan is stale)")
    decision = decided(manual(approved=PLAN_HASH), stale)
    assert decision.actions == (infra.PlanInfrastructure(desired(approval=Approval.MANUAL)),)
    assert "stale" in decision.provisioned[2]


def test_an_auto_apply_held_before_deleting_data_waits_for_approval_of_that_plan() -> None:
    """The runner applied nothing of a plan that replaces the tenant's database (DataAtRisk): approval auto or not,
    only the annotation naming that plan applies it, and a changed spec plans and applies as usual."""
    why = f"plan {PLAN_HASH[:12]} deletes or replaces aws_db_instance.tenant, which hold the tenant's data"
    held = awaiting(lastRun="apply", message=why)
    decision = decided(seen(applied_digest=None), held)
    assert decision.actions == () and not decision.ready
    ok, reason, message = decision.provisioned
    assert (ok, reason) == (False, "AwaitingApproval") and message.startswith(why)
    assert message.endswith(f"kubectl annotate tenant/acme paybill.dev/approve-plan={PLAN_HASH}")
    assert [event.warning for event in decision.events] == [True]
    approved = decided(seen(applied_digest=None, approved=PLAN_HASH), held)
    assert approved.actions == (infra.ApplyInfrastructure(desired(), PLAN_HASH),)
    changed = decided(seen(applied_digest=None), awaiting(lastRun="apply", message=why, configDigest="e" * 64))
    assert changed.actions == (infra.ApplyInfrastructure(desired()),)
    assert decided(seen(applied_digest=None), awaiting()).actions == (infra.ApplyInfrastructure(desired()),)


def test_a_manual_plan_deleting_data_is_awaited_with_a_warning_naming_what_it_deletes() -> None:
    why = f"plan {PLAN_HASH[:12]} awaits approval; it deletes or replaces aws_db_instance.tenant, {infra.HOLDS_DATA}"
    decision = decided(manual(), awaiting(message=why))
    assert decision.provisioned[:2] == (False, "AwaitingApproval") and decision.provisioned[2].startswith(why)
    assert [event.warning for event in decision.events] == [True]
    plain = decided(manual(), awaiting(message=f"plan {PLAN_HASH[:12]} awaits approval"))
    assert [(event.reason, event.warning) for event in plain.events] == [("PlanAwaitingApproval", False)]


# --- drift -----------------------------------------------------------------------------------------------------------


def test_drift_is_checked_when_due_and_said_with_the_addresses() -> None:
    every = seen(desired=desired(drift_every=30))
    assert decided(every, applied(driftCheckedAt=stamp(10))).actions == ()
    assert decided(every, applied(driftCheckedAt=stamp(31))).actions == (infra.CheckDrift(every.desired),)
    found = decided(every, applied(drifted=["terraform_data.network"]))
    assert found.ready and found.drifted == (True, "DriftFound", "changed outside Terraform: terraform_data.network")
    assert decided(every, applied()).drifted is not None and decided(every, applied()).drifted[0] is False  # type: ignore[index]


def test_drift_is_re_applied_only_when_the_plan_says_auto_remediate() -> None:
    record = applied(drifted=["terraform_data.network"])
    assert decided(seen(desired=desired(auto_remediate=False)), record).actions == ()
    remediating = decided(seen(desired=desired(auto_remediate=True)), record)
    assert remediating.actions == (infra.ApplyInfrastructure(desired(auto_remediate=True)),)
    assert remediating.ready  # the tenant keeps serving while its infrastructure is put back


# --- offboarding -----------------------------------------------------------------------------------------------------


def test_teardown_destroys_unless_the_data_is_kept_or_nothing_was_built() -> None:
    built = seen(built=(desired(),))
    assert infra.decide_teardown(built, applied(), True, None, NOW).done
    assert infra.decide_teardown(seen(), applied(), False, None, NOW).done  # the state holds nothing
    tearing = infra.decide_teardown(built, applied(), False, None, NOW)
    assert not tearing.done and tearing.actions == (infra.DestroyInfrastructure(desired()),) and tearing.retry
    running = infra.decide_teardown(seen(running="destroy", built=(desired(),)), applied(), False, None, NOW)
    assert running.actions == () and running.reason == "DestroyingInfrastructure"


@pytest.mark.parametrize(
    "forged",
    [applied(destroyed=True), applied(destroyed=True, appliedDigest=None, runId=None), None],
    ids=["destroyed", "destroyed-and-never-run", "no-infrastructure-status"],
)
def test_a_status_saying_nothing_is_left_never_skips_what_the_state_holds(forged: InfrastructureStatus | None) -> None:
    """Offboarding rests on the Terraform state in PostgreSQL (a workspace holding resources), not on status: a
    forged status.infrastructure (destroyed, or none at all) tears down no less."""
    tearing = infra.decide_teardown(seen(built=(desired(),)), forged, False, None, NOW)
    assert not tearing.done and tearing.actions == (infra.DestroyInfrastructure(desired()),)


def test_an_unreadable_state_or_a_workspace_nothing_speaks_for_holds_offboarding_and_says_why() -> None:
    unreadable = infra.decide_teardown(seen(built=None, state_error="connection refused"), None, False, None, NOW)
    assert (unreadable.done, unreadable.actions, unreadable.reason) == (False, (), "OffboardFailed")
    assert "connection refused" in unreadable.message and unreadable.events[0].warning and unreadable.retry
    unknown = desired(module="unknown", digest="-", workspace="bridge", problems=("no record says which module",))
    held = infra.decide_teardown(seen(built=(unknown,)), applied(), False, None, NOW)
    assert held.actions == () and held.reason == "OffboardFailed" and "workspace bridge" in held.message


def test_each_workspace_is_destroyed_with_what_it_was_applied_with_a_model_left_first() -> None:
    """The Desired of a built workspace carries its recorded module and inputs (by digest), not today's plan's."""
    left = desired(module="local/pooled", digest="p" * 64, workspace="pooled")
    current = desired(workspace="silo", digest="r" * 64)
    view = seen(desired=desired(workspace="silo"), built=(current, left))
    assert infra.decide_teardown(view, applied(), False, None, NOW).actions == (infra.DestroyInfrastructure(left),)
    view = seen(desired=desired(workspace="silo"), built=(current,))
    assert infra.decide_teardown(view, applied(), False, None, NOW).actions == (infra.DestroyInfrastructure(current),)


def test_a_failed_destroy_is_visible_warned_once_and_retried_after_its_backoff() -> None:
    built = seen(built=(desired(),))
    failed = applied(lastRun="destroy", lastResult=infra.FAILED, failures=1, lastRunAt=stamp(2), message="Error: no")
    waiting = infra.decide_teardown(built, failed, False, None, NOW)
    assert (waiting.done, waiting.actions, waiting.reason) == (False, (), "OffboardFailed")
    assert "Error: no" in waiting.message and waiting.events[0].warning and waiting.retry == pytest.approx(3)
    said = Condition(type="Ready", status=ConditionStatus.FALSE, reason="OffboardFailed", message=waiting.message)
    assert infra.decide_teardown(built, failed, False, said, NOW).events == ()
    later = failed.model_copy(update={"lastRunAt": stamp(6)})
    assert infra.decide_teardown(built, later, False, said, NOW).actions == (infra.DestroyInfrastructure(desired()),)


# --- a tenant's name --------------------------------------------------------------------------------------------------


def test_a_name_too_long_to_provision_is_said_on_the_tenant_and_starts_no_run() -> None:
    name = "a" * 41
    decision = infra.decide_infrastructure(seen(), None, None, NOW, name)
    assert decision.actions == () and not decision.ready and decision.provisioned[:2] == (False, "TenantNameTooLong")
    assert (
        f"tenant name {name} has 41 characters" in decision.provisioned[2] and "at most 40" in decision.provisioned[2]
    )
    assert [(e.reason, e.warning) for e in decision.events] == [("TenantNameTooLong", True)]
    said = Condition(
        type="Provisioned", status=ConditionStatus.FALSE, reason="TenantNameTooLong", message=decision.provisioned[2]
    )
    assert infra.decide_infrastructure(seen(), None, said, NOW, name).events == ()  # warned once
    assert infra.decide_infrastructure(seen(), None, None, NOW, "a" * 40).actions == (
        infra.ApplyInfrastructure(desired()),
    )


def test_the_decisions_name_limit_is_the_runners() -> None:
    from paybill.terraform.models import checked_tenant_id

    assert checked_tenant_id("a" * infra.MAX_TENANT_NAME)
    with pytest.raises(ValueError, match="at most 40"):
        checked_tenant_id("a" * (infra.MAX_TENANT_NAME + 1))


def test_a_name_a_pools_resources_would_have_is_refused_and_starts_no_run() -> None:
    """Re-attack: tenant pool-default's bucket paybill-pool-default is the pool's own (S3 answers a create of a bucket
    the account owns with 200), so its offboarding under destroy emptied every pooled tenant's objects."""
    decision = infra.decide_infrastructure(seen(), None, None, NOW, "pool-default")
    assert decision.actions == () and decision.provisioned[:2] == (False, "TenantNameReserved")
    assert "would be named like a pool's" in decision.provisioned[2] and decision.events[0].warning
    assert infra.decide_infrastructure(seen(), None, None, NOW, "poolside").actions == (
        infra.ApplyInfrastructure(desired()),
    )


# --- through the Tenant's decide -------------------------------------------------------------------------------------


def tenant(phase: Phase | None = None, record: InfrastructureStatus | None = None, **spec: Any) -> TenantObject:
    status = TenantStatus(phase=phase, infrastructure=record)
    if phase == Phase.ACTIVE:
        status = status.model_copy(update={"database": placement_at("acme", Isolation.SILO, "t_0").to_model()})
    return TenantObject("acme", UID, TenantSpec(planRef="pro", **spec), status, generation=1)


def world(view: infra.InfraSeen | None, **fields: Any) -> Observed:
    plan = PlanObject(
        "pro", PlanSpec(tier="pro", isolation=Isolation.SILO, provisioning=Provisioning(cloud=Cloud.LOCAL))
    )
    target = placement_at("acme", Isolation.SILO, "t_0")
    data = DataPlacement(recorded=fields.pop("recorded", None), target=target)
    return Observed(plan=plan, data=data, infrastructure=view, now=NOW, **fields)


def test_a_tenant_is_provisioning_until_its_module_is_applied_then_active() -> None:
    waiting = decide(tenant(), world(seen()))
    assert waiting.status is not None and waiting.status.phase == Phase.PROVISIONING
    assert [t.target for t in waiting.transitions] == [Phase.PROVISIONING]
    assert infra.ApplyInfrastructure(desired()) in waiting.actions
    assert not any(isinstance(a, ProvisionData) for a in waiting.actions)  # the data waits for the infrastructure
    ready = {c.type: (c.status, c.reason) for c in waiting.status.conditions}
    assert ready["Ready"] == ("False", "Applying") and ready["Provisioned"] == ("False", "Applying")
    done = decide(tenant(Phase.PROVISIONING, applied()), world(seen()))
    assert done.status is not None and done.status.phase == Phase.ACTIVE
    assert any(isinstance(a, ProvisionData) for a in done.actions)
    said = {c.type: c.status for c in done.status.conditions}
    assert said["Provisioned"] == "True" and said["Ready"] == "True"


def test_a_failed_run_makes_a_new_tenant_failed_until_its_retry() -> None:
    failed = applied(appliedDigest=None, lastResult=infra.FAILED, failures=1, lastRunAt=stamp(1), message="Error: x")
    outcome = decide(tenant(Phase.PROVISIONING, failed), world(seen()))
    assert outcome.status is not None and outcome.status.phase == Phase.FAILED and outcome.retry == pytest.approx(4)
    assert [e.reason for e in outcome.events] == ["ApplyFailed"]


def test_a_plan_without_provisioning_decides_as_before() -> None:
    outcome = decide(tenant(), world(None))
    assert outcome.status is not None and outcome.status.phase == Phase.ACTIVE
    assert not any(isinstance(a, infra.InfraAction.__args__) for a in outcome.actions)  # type: ignore[attr-defined]
    assert "Provisioned" not in {c.type for c in outcome.status.conditions}


def test_suspension_keeps_the_infrastructure_and_resuming_builds_nothing_again() -> None:
    """Suspended (by hand, or by billing) keeps what Terraform built: no run at all, Provisioned stays True."""
    built = seen(built=(desired(),))
    for suspended in (
        decide(tenant(Phase.ACTIVE, applied(), suspended=True), world(built)),
        decide(tenant(Phase.SUSPENDED, applied(), suspended=True), world(built)),
        decide(tenant(Phase.SUSPENDED, applied()), world(built)),  # resuming
    ):
        assert not any(isinstance(a, infra.InfraAction.__args__) for a in suspended.actions)  # type: ignore[attr-defined]
        assert suspended.status is not None
        assert {c.type: c.status for c in suspended.status.conditions}["Provisioned"] == "True"
    assert decide(tenant(Phase.ACTIVE, applied(), suspended=True), world(built)).status.phase == Phase.SUSPENDED  # type: ignore[union-attr]


def test_offboarding_destroys_before_the_namespace_goes_and_then_finishes() -> None:
    namespace = {
        "metadata": {"name": "tenant-acme", "uid": "ns", "ownerReferences": [{"uid": UID, "controller": True}]}
    }
    spec = {"offboard": True, "deletionPolicy": "destroy"}
    built = seen(built=(desired(),))
    tearing = offboard(tenant(Phase.OFFBOARDING, applied(), **spec), world(built, namespace=namespace))
    assert infra.DestroyInfrastructure(desired()) in tearing.actions
    assert not any(isinstance(a, DeleteNamespace) for a in tearing.actions) and tearing.retry is not None
    done = offboard(tenant(Phase.OFFBOARDING, applied(destroyed=True), **spec), world(seen(), namespace=namespace))
    assert done.status is not None and done.status.phase == Phase.OFFBOARDED  # the state holds nothing any more
    assert not any(isinstance(a, infra.DestroyInfrastructure) for a in done.actions)
    assert done.status is not None and done.status.phase == Phase.OFFBOARDED
    retained = offboard(tenant(Phase.OFFBOARDING, applied(), offboard=True, deletionPolicy="retain"), world(built))
    assert not any(isinstance(a, (infra.DestroyInfrastructure, RemoveData)) for a in retained.actions)


# --- a change of isolation model -------------------------------------------------------------------------------------


def test_the_model_left_is_destroyed_only_once_the_data_is_on_the_new_one() -> None:
    retired = desired(module="local/pooled", digest="p" * 64, workspace="pooled")
    view = seen(desired=desired(workspace="silo"), retired=retired)
    record = applied(workspace="silo", retiring="pooled", retiringModule="local/pooled")
    tenant_on_silo = tenant(Phase.ACTIVE, record)
    moved = decide(tenant_on_silo, world(view, recorded=placement_at("acme", Isolation.SILO, "t_0")))
    assert infra.DestroyInfrastructure(retired) in moved.actions
    still_pooled = decide(tenant_on_silo, world(view, recorded=placement_at("acme", Isolation.POOLED, "t_0")))
    migrate = [type(a).__name__ for a in still_pooled.actions]
    assert migrate.index("MigrateData") < migrate.index("DestroyInfrastructure")  # data first, then the old model
    waiting = decide(tenant_on_silo, world(seen(desired=view.desired, retired=retired, running="apply")))
    assert not any(isinstance(a, infra.DestroyInfrastructure) for a in waiting.actions)


def test_the_new_models_infrastructure_comes_before_the_data_moves() -> None:
    record = applied(workspace="pooled", appliedDigest="p" * 64)  # applied for the old model only
    outcome = decide(
        tenant(Phase.ACTIVE, record),
        world(seen(desired=desired(workspace="silo")), recorded=placement_at("acme", Isolation.POOLED, "t_0")),
    )
    names = [type(a).__name__ for a in outcome.actions]
    assert "ApplyInfrastructure" in names and "MigrateData" not in names
    assert outcome.status is not None and outcome.status.phase == Phase.ACTIVE  # serving meanwhile
    said = {c.type: c.reason for c in outcome.status.conditions}
    assert said["Migrated"] == "WaitingForInfrastructure"


def test_a_failed_destroy_of_the_model_left_waits_its_backoff() -> None:
    retired = desired(module="local/pooled", digest="p" * 64, workspace="pooled")
    failed = applied(retiring="pooled", lastRun="destroy", lastResult=infra.FAILED, failures=2, lastRunAt=stamp(3))
    assert infra.decide_retirement(seen(retired=retired), failed, "silo", NOW) == ()
    later = failed.model_copy(update={"lastRunAt": stamp(11)})
    assert infra.decide_retirement(seen(retired=retired), later, "silo", NOW) == (infra.DestroyInfrastructure(retired),)
    assert infra.decide_retirement(seen(retired=retired), later, "pooled", NOW) == ()  # the data is still there


@pytest.mark.parametrize("forged", ["silo", "default", "SILO", "pooled "])
def test_a_retiring_workspace_status_names_is_destroyed_only_if_it_is_another_model(forged: str) -> None:
    """status.infrastructure is evidence (third outsider, issue 13, finding 3): a forged `retiring` naming the current
    workspace, or no model at all, destroys nothing."""
    record = applied(workspace="silo", retiring=forged, retiringModule="local/silo")
    retired = desired(module="local/silo", digest="s" * 64, workspace=forged)
    assert infra.decide_retirement(seen(retired=retired), record, "bridge", NOW) == ()


def test_a_second_change_of_model_waits_until_the_first_model_left_is_destroyed() -> None:
    """pooled -> silo -> bridge before pooled's infrastructure went: bridge is applied only once pooled is gone (so
    that silo, left next, is recorded and destroyed in its turn, never leaked); pooled goes meanwhile, the data
    being on silo."""
    record = applied(workspace="silo", retiring="pooled", retiringModule="local/pooled")
    view = seen(desired=desired(module="local/bridge", digest="b" * 64, workspace="bridge"))
    decision = decided(view, record)
    assert decision.actions == () and decision.provisioned[1] == "RetiringPrevious" and not decision.ready
    retired = desired(module="local/pooled", digest="p" * 64, workspace="pooled")
    assert infra.decide_retirement(seen(retired=retired), record, "silo", NOW) == (
        infra.DestroyInfrastructure(retired),
    )
    gone = record.model_copy(update={"retiring": None, "retiringModule": None})
    assert decided(view, gone).actions == (infra.ApplyInfrastructure(view.desired),)


def test_offboarding_destroys_the_model_left_then_the_current_one() -> None:
    retired = desired(module="local/pooled", digest="p" * 64, workspace="pooled")
    record = applied(retiring="pooled", retiringModule="local/pooled")
    both = seen(retired=retired, built=(desired(), retired))
    assert infra.decide_teardown(both, record, False, None, NOW).actions == (infra.DestroyInfrastructure(retired),)
    current_gone = record.model_copy(update={"destroyed": True})
    assert infra.decide_teardown(seen(retired=retired, built=(retired,)), current_gone, False, None, NOW).actions == (
        infra.DestroyInfrastructure(retired),
    )
    left_gone = record.model_copy(update={"retiring": None})
    assert infra.decide_teardown(seen(built=(desired(),)), left_gone, False, None, NOW).actions == (
        infra.DestroyInfrastructure(desired()),
    )


# --- a plan that no longer builds anything ---------------------------------------------------------------------------


def unplanned_world(view: infra.InfraSeen | None, **fields: Any) -> Observed:
    """The tenant's plan has no spec.provisioning (any more): only its Terraform state is observed."""
    plan = PlanObject("pro", PlanSpec(tier="pro", isolation=Isolation.SILO))
    data = DataPlacement(recorded=None, target=placement_at("acme", Isolation.SILO, "t_0"))
    return Observed(plan=plan, data=data, infrastructure=view, now=NOW, **fields)


@pytest.mark.parametrize(
    "record", [None, InfrastructureStatus(), applied(destroyed=True)], ids=["none", "empty", "said"]
)
def test_a_plan_without_provisioning_still_destroys_what_the_state_holds_whatever_status_says(
    record: InfrastructureStatus | None,
) -> None:
    spec = {"offboard": True, "deletionPolicy": "destroy"}
    left = desired(module="local/silo", digest="s" * 64, workspace="silo")
    tearing = offboard(tenant(Phase.OFFBOARDING, record, **spec), unplanned_world(infra.state_only((left,))))
    assert infra.DestroyInfrastructure(left) in tearing.actions
    assert tearing.status is not None and tearing.status.phase == Phase.OFFBOARDING


def test_a_plan_without_provisioning_whose_state_holds_nothing_offboards_though_status_says_built() -> None:
    spec = {"offboard": True, "deletionPolicy": "destroy"}
    done = offboard(tenant(Phase.OFFBOARDING, applied(), **spec), unplanned_world(infra.state_only(())))
    assert done.status is not None and done.status.phase == Phase.OFFBOARDED
    unreadable = infra.decide_teardown(infra.state_only(None, "connection refused"), None, False, None, NOW)
    assert not unreadable.done and unreadable.reason == "OffboardFailed" and "connection refused" in unreadable.message


def test_a_plan_without_provisioning_decides_nothing_about_infrastructure_while_the_tenant_lives() -> None:
    outcome = decide(tenant(), unplanned_world(infra.state_only((desired(),))))
    assert outcome.status is not None and outcome.status.phase == Phase.ACTIVE
    assert not any(isinstance(a, infra.InfraAction.__args__) for a in outcome.actions)  # type: ignore[attr-defined]
    assert "Provisioned" not in {c.type for c in outcome.status.conditions}


# --- a Tenant's own runs, and the name's data it does not own --------------------------------------------------------


def test_a_run_id_this_process_never_started_for_this_tenant_never_holds_it() -> None:
    """A new Tenant of a deleted one's name (no status yet), or a forged status.infrastructure.runId: settled."""
    started = ("r1", "r2")
    assert infra.run_settled(None, None, started, 0.0)  # this Tenant never had a run here
    assert infra.run_settled(None, "r2", started, 0.0)  # status has no run yet (a new object of a reused name)
    assert infra.run_settled("forged", "r2", started, 0.0)  # no run of ours has that id
    assert infra.run_settled("r2", "r2", started, 0.0)  # the result is written
    assert not infra.run_settled("r1", "r2", started, 0.0)  # an earlier run of ours: the result is on its way
    assert infra.run_settled("r1", "r2", started, infra.SETTLE_GRACE + 1)  # ... but never for long


def test_a_result_being_written_is_looked_at_again_soon() -> None:
    decision = decided(seen(settled=False))
    assert decision.actions == () and decision.retry == infra.SETTLE_GRACE


def test_a_tenant_refused_the_names_retained_data_destroys_nothing_of_that_name() -> None:
    """Its deletion must not destroy the infrastructure that holds the earlier Tenant's retained data."""
    built = seen(built=(desired(),))
    assert infra.decide_teardown(built, None, False, None, NOW, owns_name=False) == infra.Teardown(True)
    spec = {"offboard": True, "deletionPolicy": "destroy"}
    refused = offboard(tenant(Phase.FAILED, None, **spec), world(built, retained="0ld-uid"))
    assert not any(isinstance(a, infra.InfraAction.__args__) for a in refused.actions)  # type: ignore[attr-defined]
    owner = offboard(tenant(Phase.OFFBOARDING, applied(), **spec), world(built))
    assert infra.DestroyInfrastructure(desired()) in owner.actions


def test_a_forged_applied_digest_is_not_applied_without_the_record_of_the_apply_in_postgresql() -> None:
    """status.infrastructure.appliedDigest alone never skips a manual approval: PostgreSQL's record of the last
    apply in the workspace must name the same configuration."""
    manual = desired(approval=Approval.MANUAL)
    for unrecorded in (None, "e" * 64):
        forged = decided(seen(desired=manual, applied_digest=unrecorded), applied())
        assert not forged.ready and forged.actions == (infra.PlanInfrastructure(manual),)
    assert decided(seen(desired=manual), applied()).ready


def test_a_tenant_named_like_a_pool_destroys_nothing_when_it_goes() -> None:
    """pool-<pool> is the pool's own state (the runner applies the shared module as that tenant id): a Tenant of that
    name, never built, must not destroy the pool's infrastructure when it is offboarded, nor wait on it forever."""
    spec = {"offboard": True, "deletionPolicy": "destroy"}
    pooled = TenantObject("pool-default", UID, TenantSpec(planRef="pro", **spec), TenantStatus(), generation=1)
    outcome = offboard(pooled, world(seen(built=(desired(),))))
    assert not any(isinstance(a, infra.DestroyInfrastructure) for a in outcome.actions)
    assert outcome.status is not None and outcome.status.phase == Phase.OFFBOARDED


def test_a_name_another_tenants_bridge_or_pooled_resources_would_have_is_refused() -> None:
    """An outsider's review: silo tenant x-bridge is named paybill-x-bridge, as bridge tenant x's resources are:
    whichever came second could never be built."""
    for name in ("shop-bridge", "shop-pooled"):
        decision = infra.decide_infrastructure(seen(), None, None, NOW, name)
        assert decision.actions == () and decision.provisioned[:2] == (False, "TenantNameReserved")
        assert f"like the {name.rsplit('-', 1)[1]} resources of a tenant shop" in decision.provisioned[2]
    assert infra.decide_infrastructure(seen(), None, None, NOW, "bridgeport").actions == (
        infra.ApplyInfrastructure(desired()),
    )


def test_a_pooled_tenant_on_a_cloud_keeps_its_name_held_whatever_its_policy() -> None:
    """An outsider's review: a pooled tenant's objects under tenants/<name>/ in the pool's bucket are not
    Terraform's (its destroy deletes the prefix's marker only), and a later Tenant of the same name got a role on
    exactly that prefix. The name stays held by this Tenant's uid (a new Tenant of it is refused unless it adopts
    them), with a Warning saying where the objects are; nothing of the placement is forgotten."""
    from paybill.lifecycle.reconcile import ReleaseName, RetainName

    pooled = applied(module="aws/pooled", workspace="pooled")
    recorded = placement_at("acme", Isolation.SILO, "t_0")
    for policy in ("destroy", "snapshot"):
        spec = {"offboard": True, "deletionPolicy": policy}
        outcome = offboard(tenant(Phase.OFFBOARDING, pooled, **spec), world(seen(), recorded=recorded))
        removed = [a for a in outcome.actions if isinstance(a, RemoveData)]
        assert removed and removed[0].keep_claim and RetainName() in outcome.actions, policy
        said = [e for e in outcome.events if e.reason == "PoolObjectsKept"]
        assert said and said[0].warning and "tenants/acme/" in said[0].message
    after = offboard(
        tenant(Phase.OFFBOARDING, pooled, offboard=True, deletionPolicy="destroy"),
        world(seen(), kept_by_this_tenant=True),
    )
    assert ReleaseName() not in after.actions  # the hold is not let go once the data is gone
    silo = offboard(
        tenant(Phase.OFFBOARDING, applied(), offboard=True, deletionPolicy="destroy"), world(seen(), recorded=recorded)
    )
    assert RetainName() not in silo.actions and not any(a.keep_claim for a in silo.actions if isinstance(a, RemoveData))


def test_a_pool_module_that_cannot_confine_a_tenant_to_its_prefix_is_refused_at_the_plan() -> None:
    """An outsider's review: ibm/pooled gives each pooled tenant's service ID Writer on the whole pool bucket."""
    ibm = Provisioning(cloud=Cloud.IBM, region="us-south", credentialsSecret="ibm")
    keys = frozenset({"IC_API_KEY"})
    problems = infra.provisioning_problems(
        ibm, infra.ModuleCheck("ibm/pooled", True), infra.CredentialsCheck("ibm", "paybill", keys)
    )
    assert len(problems) == 1 and "Writer on the whole pool bucket" in problems[0] and "bridge or silo" in problems[0]
    assert not infra.provisioning_problems(
        ibm, infra.ModuleCheck("ibm/bridge", True), infra.CredentialsCheck("ibm", "paybill", keys)
    )


def test_a_tenant_once_pooled_keeps_its_name_held_after_moving_to_another_model() -> None:
    """A re-attack: pooled, then silo (the pooled workspace destroyed, retiring cleared), then offboarded: the
    objects under its prefix were still in the pool's bucket, and the name was freed."""
    from paybill.lifecycle.reconcile import RetainName

    moved = applied(module="aws/silo", workspace="silo", poolObjects=True)
    spec = {"offboard": True, "deletionPolicy": "destroy"}
    recorded = placement_at("acme", Isolation.SILO, "t_0")
    outcome = offboard(tenant(Phase.OFFBOARDING, moved, **spec), world(seen(), recorded=recorded))
    assert RetainName() in outcome.actions and any(e.reason == "PoolObjectsKept" for e in outcome.events)
    assert infra.leaves_pool_objects("gcp/pooled", "pooled") and infra.leaves_pool_objects("mine", "pooled")
    assert not infra.leaves_pool_objects("azure/pooled", "pooled") and not infra.leaves_pool_objects(
        "local/pooled", "pooled"
    )
