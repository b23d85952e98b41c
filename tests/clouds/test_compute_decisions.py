"""The compute decision: a silo or bridge tenant on a cloud has its instances stopped while Suspended and started
when it resumes, asked once (status.compute says it was done), again after a failure, never for pooled or local."""

from __future__ import annotations

from typing import Any

import pytest

from paybill.api.plan import PlanSpec
from paybill.api.tenant import ComputeStatus
from paybill.clouds.compute import ComputeDecision, PowerCompute, decide_compute, strays
from paybill.clouds.model import Cloud, PowerState, Resource


def plan(cloud: str = "azure", isolation: str = "silo") -> PlanSpec:
    return PlanSpec.model_validate({"tier": "gold", "isolation": isolation, "provisioning": {"cloud": cloud}})


def done(wanted: str, **fields: Any) -> ComputeStatus:
    return ComputeStatus.model_validate({"wanted": wanted, "result": "Done", "changed": ["i-1"], **fields})


@pytest.mark.parametrize("isolation", ["silo", "bridge"])
def test_a_suspended_tenant_on_a_cloud_has_its_instances_stopped_once(isolation: str) -> None:
    asked = decide_compute(plan(isolation=isolation), True, True, None)
    assert asked == ComputeDecision((PowerCompute("stopped"),), (False, "Stopping", "stopping the tenant's instances"))
    assert decide_compute(plan(isolation=isolation), True, True, done("stopped")) == ComputeDecision(
        (), (True, "Stopped", "1 instance(s) stopped")
    )


def test_a_resumed_tenant_has_them_started_once_and_one_never_stopped_is_left_alone() -> None:
    assert decide_compute(plan(), False, True, done("stopped")).actions == (PowerCompute("running"),)
    assert decide_compute(plan(), False, True, done("running", unchanged=["i-2"])) == ComputeDecision(
        (), (True, "Running", "2 instance(s) running")
    )
    assert decide_compute(plan(), False, True, None) == ComputeDecision()  # as built: nothing to start


def test_a_failure_is_said_with_the_clouds_code_and_asked_again() -> None:
    failed = ComputeStatus(wanted="stopped", result="Failed", message="azure answered AuthorizationFailed (HTTP 403)")
    decision = decide_compute(plan(), True, True, failed)
    assert decision.actions == (PowerCompute("stopped"),)
    assert decision.condition is not None and decision.condition[:2] == (False, "PowerFailed")
    assert "AuthorizationFailed (HTTP 403)" in decision.condition[2]


@pytest.mark.parametrize(
    ("spec", "provisioned"),
    [(plan(isolation="pooled"), True), (plan(cloud="local"), True), (plan(), False)],
    ids=["pooled", "local", "not-yet-provisioned"],
)
def test_nothing_is_asked_of_a_pooled_a_local_or_an_unbuilt_tenant(spec: PlanSpec, provisioned: bool) -> None:
    assert decide_compute(spec, True, provisioned, None) == ComputeDecision()


def test_nothing_is_asked_without_provisioning() -> None:
    assert decide_compute(PlanSpec.model_validate({"tier": "t", "isolation": "silo"}), True, True, None) == (
        ComputeDecision()
    )


def found(*states: tuple[str, str, str]) -> list[Resource]:
    return [Resource(Cloud.AWS, kind, ident, ident, PowerState(state), "t") for kind, ident, state in states]


def test_instances_up_while_suspended_after_the_stop_are_strays_and_nothing_else_is() -> None:
    seen = found(
        ("instance", "i-2", "running"),
        ("instance", "i-1", "starting"),
        ("instance", "i-3", "stopped"),
        ("instance", "i-4", "terminated"),
        ("database", "db-1", "running"),  # AWS starts a stopped RDS instance again after seven days
        ("database", "db-2", "stopped"),
    )
    assert strays(True, done("stopped"), seen) == ("db-1", "i-1", "i-2")
    assert strays(False, done("stopped"), seen) == ()  # resuming: starting them is the reconcile's
    assert strays(True, done("running"), seen) == ()  # the suspension's own stop is not done yet
    assert strays(True, None, seen) == ()
    failed = ComputeStatus.model_validate({"wanted": "stopped", "result": "Failed", "message": "AccessDenied"})
    assert strays(True, failed, seen) == ()  # the reconcile retries a failed stop itself
    assert strays(True, done("stopped"), found(("instance", "i-3", "stopped"))) == ()
