"""Offboarding a tenant whose Plan no longer has provisioning, through the operator (local module, real Terraform
and PostgreSQL): what the tenant's Terraform state holds is destroyed with the module and inputs it was applied
with, whatever status says."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from paybill.database.server import LocalPostgres

from .conftest import state_resources
from .test_operator_terraform import API, dsn, modules, onboard, plan, status, tf_operator  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
SILO = ["terraform_data.credentials", "terraform_data.database", "terraform_data.network", "terraform_data.subnets"]


def test_a_tenant_whose_plan_lost_its_provisioning_is_torn_down_from_its_state_not_its_status(
    tf_operator: Any,  # noqa: F811
    postgres: LocalPostgres,
    modules: Path,  # noqa: F811
) -> None:
    cluster = tf_operator
    provisioned = plan("tf-unprovisioned")
    cluster.kube.apply(provisioned)
    name = onboard(cluster, "tf-unprovisioned", deletionPolicy="destroy")
    cluster.eventually(lambda: status(cluster, name).get("phase") == "Active", timeout=120)
    assert state_resources(dsn(postgres), name, "silo") == SILO

    cluster.kube.merge_patch(API, "plans", "tf-unprovisioned", {"spec": {"provisioning": None}})
    assert "provisioning" not in cluster.kube.get(API, "plans", "tf-unprovisioned")["spec"]
    said_destroyed = {"destroyed": True, "appliedDigest": None}  # status is evidence, not an order
    cluster.kube.merge_patch(API, "tenants", name, {"status": {"infrastructure": said_destroyed}}, subresource="status")
    cluster.kube.delete(API, "tenants", name)
    cluster.eventually(lambda: cluster.kube.get(API, "tenants", name) is None, timeout=180)
    assert state_resources(dsn(postgres), name, "silo") == []
