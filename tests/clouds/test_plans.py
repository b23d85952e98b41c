"""A Plan names any of the five clouds: its region (a default per cloud, another cloud's name refused by the model
and by the API server), the credentials each cloud needs, and its modules."""

from __future__ import annotations

from typing import Any

import pytest

from paybill.api.plan import PlanSpec
from paybill.lifecycle.infrastructure import CredentialsCheck, ModuleCheck, provider_environment, provisioning_problems
from paybill.lifecycle.outcome import InvalidSpec
from paybill.lifecycle.plan import parse_plan
from paybill.terraform.modules import module_dir

DEFAULTS = {"aws": "us-east-1", "azure": "eastus", "gcp": "us-central1", "oci": "us-ashburn-1", "ibm": "us-south"}
NEEDED = {
    "aws": {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"},
    "azure": {"ARM_SUBSCRIPTION_ID", "ARM_TENANT_ID", "ARM_CLIENT_ID", "ARM_CLIENT_SECRET", "ARM_ACCESS_TOKEN"},
    "gcp": {"GOOGLE_PROJECT", "GOOGLE_CREDENTIALS"},
    "oci": {"OCI_TENANCY_OCID", "OCI_USER_OCID", "OCI_FINGERPRINT", "OCI_PRIVATE_KEY", "OCI_COMPARTMENT_OCID"},
    "ibm": {"IC_API_KEY"},
}
FOREIGN = {"aws": "eastus", "azure": "us-east-1", "gcp": "us-ashburn-1", "oci": "us-south", "ibm": "us-central1"}


def plan(cloud: str, **provisioning: Any) -> dict[str, Any]:
    return {"tier": "gold", "isolation": "silo", "provisioning": {"cloud": cloud, **provisioning}}


@pytest.mark.parametrize("cloud", DEFAULTS)
def test_a_plan_names_any_of_the_five_clouds_and_gets_its_default_region(cloud: str) -> None:
    parsed = parse_plan(plan(cloud))
    assert isinstance(parsed, PlanSpec) and parsed.provisioning is not None
    assert parsed.provisioning.target_region == DEFAULTS[cloud]
    assert module_dir(cloud, "silo").is_dir() and module_dir(cloud, "pooled").is_dir()


@pytest.mark.parametrize("cloud", DEFAULTS)
def test_another_clouds_region_name_is_refused_by_the_model(cloud: str) -> None:
    parsed = parse_plan(plan(cloud, region=FOREIGN[cloud]))
    assert isinstance(parsed, InvalidSpec)
    assert f"region {FOREIGN[cloud]!r} is not a {cloud} region name" in parsed.message


def test_an_unknown_cloud_is_refused_by_the_model() -> None:
    parsed = parse_plan(plan("digitalocean"))
    assert isinstance(parsed, InvalidSpec) and "spec.provisioning.cloud" in parsed.message


@pytest.mark.parametrize("cloud", DEFAULTS)
def test_the_api_server_refuses_another_clouds_region_and_an_unknown_cloud(cluster: Any, cloud: str) -> None:
    from paybill.kubeclient import KubeError

    def create(name: str, spec: dict[str, Any]) -> dict[str, Any]:
        manifest = {"apiVersion": "paybill.dev/v1alpha1", "kind": "Plan", "metadata": {"name": name}, "spec": spec}
        result: dict[str, Any] = cluster.kube.create(manifest)
        return result

    with pytest.raises(KubeError) as refused:
        create("foreign", plan(cloud, region=FOREIGN[cloud]))
    assert refused.value.status == 422 and f"region is not a {cloud} region name" in refused.value.message
    with pytest.raises(KubeError) as unknown:
        create("unknown", plan("digitalocean"))
    assert unknown.value.status == 422 and "spec.provisioning.cloud" in unknown.value.message
    created = create("native", plan(cloud, region=DEFAULTS[cloud]))
    assert created["spec"]["provisioning"]["region"] == DEFAULTS[cloud]


@pytest.mark.parametrize("cloud", NEEDED)
def test_each_cloud_needs_its_own_credentials_named(cloud: str) -> None:
    parsed = parse_plan(plan(cloud, credentialsSecret="creds"))
    assert isinstance(parsed, PlanSpec) and parsed.provisioning is not None
    module = ModuleCheck(f"{cloud}/silo", True)
    found = provisioning_problems(parsed.provisioning, module, CredentialsCheck("creds", "ops", frozenset()))
    assert len(found) == 1 and all(key in found[0] for key in NEEDED[cloud])
    complete = CredentialsCheck("creds", "ops", frozenset(NEEDED[cloud]))
    assert provisioning_problems(parsed.provisioning, module, complete) == ()
    none = provisioning_problems(parsed.provisioning, module, CredentialsCheck(None, "ops"))
    assert len(none) == 1 and "set credentialsSecret" in none[0]


def test_gcp_takes_a_service_account_key_or_an_access_token() -> None:
    parsed = parse_plan(plan("gcp", credentialsSecret="creds"))
    assert isinstance(parsed, PlanSpec) and parsed.provisioning is not None
    module = ModuleCheck("gcp/silo", True)
    token = CredentialsCheck("creds", "ops", frozenset({"GOOGLE_PROJECT", "GOOGLE_OAUTH_ACCESS_TOKEN"}))
    assert provisioning_problems(parsed.provisioning, module, token) == ()
    neither = provisioning_problems(parsed.provisioning, module, CredentialsCheck("creds", "ops", frozenset()))
    assert neither == (
        "credentials secret ops/creds lacks GOOGLE_PROJECT, GOOGLE_CREDENTIALS or GOOGLE_OAUTH_ACCESS_TOKEN",
    )


def test_the_oci_compartment_reaches_terraform_as_the_modules_input_and_nothing_else_passes() -> None:
    environment = provider_environment(
        {"OCI_COMPARTMENT_OCID": "ocid1.compartment.oc1..x", "OCI_USER_OCID": "u", "PATH": "/evil", "TF_VAR_x": "y"}
    )
    assert environment == {
        "OCI_COMPARTMENT_OCID": "ocid1.compartment.oc1..x",
        "OCI_USER_OCID": "u",
        "TF_VAR_compartment_ocid": "ocid1.compartment.oc1..x",
    }
