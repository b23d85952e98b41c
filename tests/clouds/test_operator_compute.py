"""Suspend and resume stop and start a silo tenant's instances through the operator on each of the five clouds: real
kopf, the emulated API server, the real PostgreSQL and Terraform, and the real SDK clients: boto3 against moto's
server (signatures checked), azure-mgmt-compute, google-cloud-compute, oci and ibm-vpc against the loopback fakes,
each pointed at by PAYBILL_CLOUD_ENDPOINTS.

The tenant's module is a stand-in (the local module's built-in resources under PAYBILL_TERRAFORM_MODULES_DIR: no
provider for Azure can be installed here, and a whole AWS silo takes minutes in moto); its instances are made in
the cloud with the tenant's tags, as the module's would be."""

from __future__ import annotations

import base64
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from paybill.clouds import tags
from paybill.clouds.model import Cloud
from paybill.terraform.contract import TAG_CONVENTIONS
from paybill.terraform.modules import module_dir

from .fakes import azure
from .fakes.base import Instance
from .harness import HARNESSES

API = "paybill.dev/v1alpha1"
OPERATOR_NAMESPACE = "paybill-system"
AMI = "ami-12c6146b"
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


@dataclass
class Target:
    cloud: str
    region: str
    endpoint: str
    credentials: dict[str, str]
    provider: str  # its Terraform provider's directory in the mirror
    launch: Callable[[str, int], list[str]]  # (tenant, count) -> instance ids
    states: Callable[[list[str]], set[str]]  # the instances' states, in the cloud's own words
    stopped: str
    running: str
    power_actions: Callable[[], int] | None  # stop/start requests the cloud received so far
    fake: Any = None  # the loopback fake (None: moto)


def azure_target() -> Iterator[Target]:
    fake = azure.FakeAzure()
    serial = iter(range(1, 1000))

    def launch(tenant: str, count: int) -> list[str]:
        made = []
        for _ in range(count):
            name = f"vm-{tenant}-{next(serial)}"
            instance = Instance(
                azure.machine_id(f"paybill-{tenant}", name),
                name,
                "westeurope",
                tags.tags(Cloud.AZURE, tenant, "gold", "cc"),
                "running",
            )
            fake.instances[instance.id] = instance
            made.append(instance.id)
        return made

    credentials = {
        "ARM_SUBSCRIPTION_ID": azure.SUBSCRIPTION,
        "ARM_TENANT_ID": "11111111-0000-4000-8000-000000000000",
        "ARM_CLIENT_ID": "22222222-0000-4000-8000-000000000000",
        "ARM_CLIENT_SECRET": "client-s3cret-never-shown",
        "ARM_ACCESS_TOKEN": azure.TOKEN,
    }
    try:
        yield Target(
            "azure",
            "westeurope",
            fake.url,
            credentials,
            "hashicorp/azurerm",
            launch,
            lambda ids: {fake.instances[i].state for i in ids},
            "stopped",
            "running",
            lambda: fake.count("POST", r".*/virtualMachines/[^/]+/(deallocate|start)"),
            fake,
        )
    finally:
        assert fake.wrong == []
        fake.close()


def aws_target(moto: dict[str, str]) -> Iterator[Target]:
    import boto3

    region = "ca-central-1"
    credentials = {k: moto[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    ec2 = boto3.client(
        "ec2", endpoint_url=moto["url"], region_name=region, **{k.lower(): v for k, v in credentials.items()}
    )

    def launch(tenant: str, count: int) -> list[str]:
        tagged = [{"Key": k, "Value": v} for k, v in tags.tags(Cloud.AWS, tenant, "gold", "cc").items()]
        reservation = ec2.run_instances(
            ImageId=AMI,
            InstanceType="t3.micro",
            MinCount=count,
            MaxCount=count,
            TagSpecifications=[{"ResourceType": "instance", "Tags": tagged}],
        )
        return sorted(i["InstanceId"] for i in reservation["Instances"])

    def states(ids: list[str]) -> set[str]:
        found = ec2.describe_instances(InstanceIds=ids)["Reservations"]
        return {i["State"]["Name"] for r in found for i in r["Instances"]}

    yield Target(
        "aws",
        region,
        moto["url"],
        credentials,
        "hashicorp/aws",
        launch,
        states,
        "stopped",
        "running",
        None,  # moto keeps no request log to count them by: the states say it
    )


def harness_target(cloud: str) -> Iterator[Target]:
    """GCP, OCI or IBM: the adapter tests' harness (its fake, a region it knows, its credentials)."""
    harness = HARNESSES[cloud]()
    by_adapter_id: dict[str, str] = {}

    def launch(tenant: str, count: int) -> list[str]:
        before = set(harness.fake.instances)
        made = harness.seed(tenant, count)
        for ident in set(harness.fake.instances) - before:
            by_adapter_id[harness.adapter_id(harness.fake.instances[ident])] = ident
        return made

    method, path = harness.action
    path = path or r".*/zones/[^/]+/instances/[^/]+/(stop|start)"  # GCP's (its harness names none)
    credentials = {
        **harness.credentials,
        **({"OCI_COMPARTMENT_OCID": "ocid1.compartment.oc1..paybill"} if cloud == "oci" else {}),
    }
    try:
        yield Target(
            cloud,
            harness.region,
            harness.fake.url,
            credentials,
            TAG_CONVENTIONS[cloud].source,
            launch,
            lambda ids: {harness.fake.instances[by_adapter_id[i]].state for i in ids},
            "stopped",
            "running",
            lambda: harness.fake.count(method, path),
            harness.fake,
        )
    finally:
        assert harness.fake.wrong == []
        harness.fake.close()


@pytest.fixture(params=["aws", "azure", "gcp", "oci", "ibm"])
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    if request.param == "azure":
        yield from azure_target()
    elif request.param == "aws":
        yield from aws_target(request.getfixturevalue("moto"))
    else:
        yield from harness_target(request.param)


@pytest.fixture
def setup(target: Target, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cluster: Any) -> Target:
    """The stand-in module, the provider's directory in the mirror, the endpoint and the credentials Secret."""
    modules, mirror = tmp_path / "modules", tmp_path / "mirror"
    shutil.copytree(module_dir("local", "silo"), modules / "stand-in")
    shutil.copytree(module_dir("local", "bridge"), modules / "stand-in-bridge")
    (mirror / "registry.terraform.io" / target.provider / "0.0.0" / "linux_amd64").mkdir(parents=True)
    (mirror / "registry.terraform.io" / target.provider / "0.0.0" / "linux_amd64" / "provider").touch()
    monkeypatch.setenv("PAYBILL_TERRAFORM_MODULES_DIR", str(modules))
    monkeypatch.setenv("PAYBILL_TERRAFORM_PROVIDER_MIRROR", str(mirror))
    monkeypatch.setenv("PAYBILL_CLOUD_ENDPOINTS", f"{target.cloud}={target.endpoint}")
    monkeypatch.setenv("PAYBILL_OPERATOR_NAMESPACE", OPERATOR_NAMESPACE)
    cluster.kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OPERATOR_NAMESPACE}})
    data = {key: base64.b64encode(value.encode()).decode() for key, value in target.credentials.items()}
    meta = {"name": "cloud-credentials", "namespace": OPERATOR_NAMESPACE}
    cluster.kube.create({"apiVersion": "v1", "kind": "Secret", "metadata": meta, "data": data})
    return target


def onboard(cluster: Any, target: Target, name: str = "", isolation: str = "silo") -> str:
    """A Plan on the target's cloud (the stand-in module) and a Tenant of `isolation` on it (`name`, else
    pw-<cloud>: moto is the session's, so a test that counts instances names its own tenant); the tenant's name."""
    provisioning = {
        "cloud": target.cloud,
        "region": target.region,
        "module": "stand-in" if isolation == "silo" else f"stand-in-{isolation}",
        "credentialsSecret": "cloud-credentials",
    }
    spec = {"tier": "gold", "isolation": isolation, "provisioning": provisioning}
    cluster.kube.create({"apiVersion": API, "kind": "Plan", "metadata": {"name": "gold"}, "spec": spec})
    name = name or f"pw-{target.cloud}"
    tenant_spec = {"planRef": "gold", "deletionPolicy": "destroy"}
    cluster.kube.create({"apiVersion": API, "kind": "Tenant", "metadata": {"name": name}, "spec": tenant_spec})
    return name


def test_suspending_a_silo_tenant_stops_its_instances_and_resuming_starts_them_once(
    setup: Target, operator: Any
) -> None:
    cluster, target = operator, setup
    name = onboard(cluster, target)

    def status() -> dict[str, Any]:
        return (cluster.kube.get(API, "tenants", name) or {}).get("status") or {}

    def compute_condition() -> dict[str, Any]:
        return next((c for c in status().get("conditions", []) if c["type"] == "Compute"), {})

    cluster.eventually(lambda: status().get("phase") == "Active", timeout=300, interval=0.5)
    assert "compute" not in status()  # as built: nothing stopped or started
    ids = target.launch(name, 3)

    cluster.kube.merge_patch(API, "tenants", name, {"spec": {"suspended": True}})
    cluster.eventually(lambda: (status().get("compute") or {}).get("wanted") == "stopped", timeout=300, interval=0.5)
    compute = status()["compute"]
    assert compute["result"] == "Done", compute
    assert sorted(compute["changed"]) == sorted(ids) and compute["unchanged"] == []
    assert target.states(ids) == {target.stopped}
    said = cluster.eventually(
        lambda: compute_condition().get("reason") == "Stopped" and compute_condition(), timeout=60
    )
    assert said["status"] == "True" and status()["phase"] == "Suspended"

    cluster.kube.merge_patch(API, "tenants", name, {"spec": {"suspended": False}})
    cluster.eventually(lambda: (status().get("compute") or {}).get("wanted") == "running", timeout=300, interval=0.5)
    compute = status()["compute"]
    assert compute["result"] == "Done" and sorted(compute["changed"]) == sorted(ids), compute
    assert target.states(ids) == {target.running}
    cluster.eventually(lambda: compute_condition().get("reason") == "Running", timeout=60)
    assert status()["phase"] == "Active"
    if target.power_actions is not None:  # each instance stopped once and started once, whatever reconciled since
        assert target.power_actions() == 2 * len(ids)
    everything = str(cluster.kube.get(API, "tenants", name)) + str(cluster.kube.list("v1", "events"))
    assert all(
        secret not in everything for key, secret in target.credentials.items() if "SECRET" in key or "TOKEN" in key
    )


@pytest.mark.parametrize("target", ["azure"], indirect=True)
def test_a_cloud_error_stopping_instances_reaches_the_tenant_with_the_clouds_code_and_is_tried_again(
    setup: Target, operator: Any
) -> None:
    cluster, target = operator, setup
    name = onboard(cluster, target)

    def status() -> dict[str, Any]:
        return (cluster.kube.get(API, "tenants", name) or {}).get("status") or {}

    cluster.eventually(lambda: status().get("phase") == "Active", timeout=300, interval=0.5)
    ids = target.launch(name, 1)
    refused = azure.error(403, "AuthorizationFailed", "The client has no authorization to perform deallocate")
    target.fake.inject("POST", r".*/virtualMachines/[^/]+/deallocate", refused, times=2)
    cluster.kube.merge_patch(API, "tenants", name, {"spec": {"suspended": True}})

    def warned() -> list[dict[str, Any]]:
        found = [e for e in cluster.kube.list("v1", "events") if e.get("involvedObject", {}).get("name") == name]
        return [e for e in found if e.get("type") == "Warning" and "AuthorizationFailed (HTTP 403)" in e["message"]]

    said = cluster.eventually(lambda: len({e["reason"] for e in warned()}) >= 2 and warned(), timeout=120)
    assert {"PowerFailed"} < {e["reason"] for e in said}  # and the reconcile's own failure, on the Ready condition
    cluster.eventually(lambda: (status().get("compute") or {}).get("result") == "Done", timeout=300, interval=0.5)
    assert status()["compute"]["changed"] == ids and target.states(ids) == {"stopped"}
    assert target.power_actions is not None and target.power_actions() == 3  # refused twice, then done
    cluster.eventually(lambda: status().get("phase") == "Suspended", timeout=60, interval=0.5)
    everything = str(cluster.kube.get(API, "tenants", name)) + str(cluster.kube.list("v1", "events"))
    assert azure.TOKEN not in everything and target.credentials["ARM_CLIENT_SECRET"] not in everything


@pytest.mark.parametrize("target", ["aws"], indirect=True)
def test_an_instance_started_by_hand_while_suspended_is_stopped_again_with_a_warning(
    setup: Target, operator: Any, moto: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3

    monkeypatch.setenv("PAYBILL_COMPUTE_CHECK_SECONDS", "1")  # read at each check: due at every 5 s tick
    cluster, target = operator, setup
    name = onboard(cluster, target, "by-hand-aws")

    def status() -> dict[str, Any]:
        return (cluster.kube.get(API, "tenants", name) or {}).get("status") or {}

    def warnings() -> list[str]:
        return [
            e["message"]
            for e in cluster.kube.list("v1", "events")
            if e.get("involvedObject", {}).get("name") == name and e.get("reason") == "RunningWhileSuspended"
        ]

    cluster.eventually(lambda: status().get("phase") == "Active", timeout=300, interval=0.5)
    by_hand, other = target.launch(name, 2)
    cluster.kube.merge_patch(API, "tenants", name, {"spec": {"suspended": True}})

    def suspended() -> bool:  # the instances stopped, and the phase written (not only the compute result: r18)
        compute, phase = status().get("compute") or {}, status().get("phase")
        return (compute.get("wanted"), compute.get("result"), phase) == ("stopped", "Done", "Suspended")

    cluster.eventually(suspended, timeout=300, interval=0.5)
    assert target.states([by_hand, other]) == {"stopped"}
    assert warnings() == []  # nothing ran while suspended yet

    keys = {key.lower(): value for key, value in target.credentials.items()}
    ec2 = boto3.client("ec2", endpoint_url=moto["url"], region_name=target.region, **keys)
    ec2.start_instances(InstanceIds=[by_hand])  # someone starts it again behind the operator's back
    assert target.states([by_hand]) == {"running"}
    said = cluster.eventually(lambda: warnings() or None, timeout=120, interval=0.5)
    assert said == [f"1 instance(s) running while the tenant is Suspended, stopping them again: {by_hand}"]
    cluster.eventually(lambda: target.states([by_hand]) == {"stopped"}, timeout=120, interval=0.5)
    compute = cluster.eventually(
        lambda: (status().get("compute") or {}).get("changed") == [by_hand] and status()["compute"], timeout=60
    )
    assert compute["wanted"] == "stopped" and compute["result"] == "Done" and compute["unchanged"] == [other]
    assert target.states([other]) == {"stopped"} and status()["phase"] == "Suspended"

    cluster.kube.merge_patch(API, "tenants", name, {"spec": {"suspended": False}})  # resuming starts both, once
    cluster.eventually(lambda: (status().get("compute") or {}).get("wanted") == "running", timeout=300, interval=0.5)
    assert target.states([by_hand, other]) == {"running"} and len(warnings()) == 1


def test_resources_tagged_with_a_tenant_that_no_longer_exists_are_reported_on_the_plan_with_a_warning(
    setup: Target, operator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Orphans: instances left in the Plan's cloud account by a tenant that is gone (offboarded by hand, a state
    lost) are found through the adapter, named in the Plan's status.orphans and said in a Warning Event; a live
    tenant's instances are not."""
    monkeypatch.setenv("PAYBILL_ORPHAN_CHECK_SECONDS", "1")  # read at each check: due at every 5 s tick
    cluster, target = operator, setup
    kept = onboard(cluster, target, f"kept-{target.cloud}")
    live = target.launch(kept, 1)
    gone = target.launch(f"gone-{target.cloud}", 2)

    def report() -> dict[str, Any] | None:
        found = ((cluster.kube.get(API, "plans", "gold") or {}).get("status") or {}).get("orphans") or {}
        listed = " ".join(found.get("resources") or [])
        return found if all(ident in listed for ident in gone) else None

    found = cluster.eventually(report, timeout=120, interval=0.5)
    assert f"gone-{target.cloud}" in found["tenants"] and kept not in found["tenants"]
    assert not any(ident in " ".join(found["resources"]) for ident in live) and found.get("error") is None
    warnings = [
        e["message"]
        for e in cluster.kube.list("v1", "events")
        if e.get("involvedObject", {}).get("kind") == "Plan" and e.get("reason") == "OrphanedResources"
    ]
    assert warnings and all(ident in warnings[-1] for ident in gone)
    everything = str(cluster.kube.get(API, "plans", "gold")) + str(cluster.kube.list("v1", "events"))
    assert all(
        secret not in everything for key, secret in target.credentials.items() if "SECRET" in key or "TOKEN" in key
    )


@pytest.mark.parametrize("target", ["azure"], indirect=True)
def test_a_look_for_orphans_the_cloud_refuses_is_said_on_the_plan_with_the_clouds_code(
    setup: Target, operator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAYBILL_ORPHAN_CHECK_SECONDS", "1")
    cluster, target = operator, setup
    refused = azure.error(403, "AuthorizationFailed", "The client has no authorization to list virtual machines")
    target.fake.inject("GET", r".*/providers/Microsoft.Compute/virtualMachines", refused, times=1000)
    onboard(cluster, target, "kept-refused")

    def report() -> dict[str, Any] | None:
        found = ((cluster.kube.get(API, "plans", "gold") or {}).get("status") or {}).get("orphans") or {}
        return found if found.get("error") else None

    found = cluster.eventually(report, timeout=120, interval=0.5)
    assert "AuthorizationFailed (HTTP 403)" in found["error"] and found["count"] == 0
    cluster.eventually(lambda: (report() or {}).get("checkedAt") != found["checkedAt"], timeout=60, interval=0.5)
    said = [
        e
        for e in cluster.kube.list("v1", "events")
        if e.get("involvedObject", {}).get("kind") == "Plan" and e.get("reason") == "OrphanCheckFailed"
    ]
    assert len(said) == 1 and said[0]["type"] == "Warning"  # said once, not at every look
    assert target.credentials["ARM_CLIENT_SECRET"] not in str(cluster.kube.get(API, "plans", "gold"))


@pytest.mark.parametrize("target", ["gcp"], indirect=True)
def test_a_bridge_tenants_instances_are_stopped_while_suspended_and_started_on_resume(
    setup: Target, operator: Any
) -> None:
    """A bridge tenant has compute of its own (in the pool's network): suspension stops it too."""
    cluster, target = operator, setup
    name = onboard(cluster, target, "bridged-gcp", isolation="bridge")

    def status() -> dict[str, Any]:
        return (cluster.kube.get(API, "tenants", name) or {}).get("status") or {}

    cluster.eventually(lambda: status().get("phase") == "Active", timeout=300, interval=0.5)
    ids = target.launch(name, 2)
    cluster.kube.merge_patch(API, "tenants", name, {"spec": {"suspended": True}})
    cluster.eventually(lambda: (status().get("compute") or {}).get("result") == "Done", timeout=300, interval=0.5)
    assert status()["compute"]["wanted"] == "stopped" and sorted(status()["compute"]["changed"]) == sorted(ids)
    assert target.states(ids) == {target.stopped}
    cluster.kube.merge_patch(API, "tenants", name, {"spec": {"suspended": False}})
    cluster.eventually(lambda: (status().get("compute") or {}).get("wanted") == "running", timeout=300, interval=0.5)
    cluster.eventually(lambda: target.states(ids) == {target.running}, timeout=120, interval=0.5)
    cluster.eventually(lambda: status().get("phase") == "Active", timeout=120, interval=0.5)
