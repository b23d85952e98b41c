"""The Tenant's deletion policy reaches every run's module inputs, and a destroy of a workspace takes the policy
the Tenant has now, never the one recorded when the workspace was last applied."""

from __future__ import annotations

from typing import Any

import pytest

from paybill.api.plan import PlanSpec
from paybill.handlers.infrastructure import InfrastructureRuns, module_inputs
from paybill.lifecycle.reconcile import PlanObject
from paybill.terraform.workspaces import Workspace

RECORDED = {
    "tenant_id": "hooli",
    "plan": "gold",
    "region": "eu-west-1",
    "cost_center": "cc-7",
    "sizes": {"storage_gib": 1},
    "pool": "default",
    "deletion_policy": "destroy",  # what the last apply was made with
}


@pytest.fixture
def runs() -> Any:
    made = InfrastructureRuns(kube=None, audit_log=None, environ={})  # type: ignore[arg-type]
    yield made
    made.shutdown()


def test_a_destroy_takes_the_tenants_current_policy_not_the_recorded_one(runs: Any) -> None:
    found = Workspace("silo", 4, "local/silo", RECORDED, None, "digest")
    kept = runs._recorded_desired("hooli", found, "snapshot")
    destroyed = runs._recorded_desired("hooli", found, "destroy")
    assert runs._setups[kept.digest].inputs.deletion_policy == "snapshot"
    assert runs._setups[destroyed.digest].inputs.deletion_policy == "destroy"
    assert kept.digest != destroyed.digest  # a different destroy, not the recorded one under another name
    assert runs._setups[kept.digest].inputs.variables() == {**RECORDED, "deletion_policy": "snapshot"}


def test_a_workspace_recorded_before_the_policy_was_an_input_is_destroyed_under_the_tenants(runs: Any) -> None:
    older = {key: value for key, value in RECORDED.items() if key != "deletion_policy"}
    desired = runs._recorded_desired("hooli", Workspace("silo", 4, "local/silo", older), "retain")
    assert runs._setups[desired.digest].inputs.deletion_policy == "retain"


def test_every_run_of_the_plan_carries_the_tenants_policy() -> None:
    spec = {"tier": "gold", "isolation": "silo", "provisioning": {"cloud": "local", "region": "eu-west-1"}}
    plan = PlanObject("gold", PlanSpec.model_validate(spec))
    for policy in ("destroy", "snapshot", "retain"):
        assert module_inputs("hooli", plan, "silo", policy).variables()["deletion_policy"] == policy
    with pytest.raises(ValueError, match="deletion policy"):
        module_inputs("hooli", plan, "silo", "keep")
