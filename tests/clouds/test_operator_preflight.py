"""A Plan's cloud preflight through the operator: real kopf, the emulated API server and the real PostgreSQL, the
real azure-mgmt-compute client pointed at the loopback Azure fake by PAYBILL_CLOUD_ENDPOINTS. The Plan gets a
CloudReady condition naming the cause, its tenants wait with that cause and start no Terraform run, and neither a
credential nor the token reaches status or Events."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .fakes import azure
from .fakes.azure import FakeAzure

API = "paybill.dev/v1alpha1"
OPERATOR_NAMESPACE = "paybill-system"
REGION = "westeurope"
CREDENTIALS = {
    "ARM_SUBSCRIPTION_ID": azure.SUBSCRIPTION,
    "ARM_TENANT_ID": "11111111-0000-4000-8000-000000000000",
    "ARM_CLIENT_ID": "22222222-0000-4000-8000-000000000000",
    "ARM_CLIENT_SECRET": "client-s3cret-never-shown",
    "ARM_ACCESS_TOKEN": azure.TOKEN,
}
BAD_TOKEN = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.stolen-looking"
pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cluster: Any) -> Iterator[FakeAzure]:
    """The Azure fake, an (empty) provider mirror and the operator's namespace, set before the operator starts."""
    served = FakeAzure()
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    monkeypatch.setenv("PAYBILL_CLOUD_ENDPOINTS", f"azure={served.url}")
    monkeypatch.setenv("PAYBILL_TERRAFORM_PROVIDER_MIRROR", str(mirror))
    monkeypatch.setenv("PAYBILL_OPERATOR_NAMESPACE", OPERATOR_NAMESPACE)
    cluster.kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OPERATOR_NAMESPACE}})
    try:
        yield served
    finally:
        served.close()


def provide(mirror: Path) -> None:
    """The azurerm provider's directory in the mirror (what preflight looks for; never installed here)."""
    where = mirror / "registry.terraform.io" / "hashicorp" / "azurerm" / "4.14.0" / "linux_amd64"
    where.mkdir(parents=True)
    (where / "terraform-provider-azurerm_v4.14.0_x5").write_bytes(b"")


def secret(cluster: Any, values: dict[str, str]) -> None:
    data = {key: base64.b64encode(value.encode()).decode() for key, value in values.items()}
    meta = {"name": "azure-credentials", "namespace": OPERATOR_NAMESPACE}
    cluster.kube.create({"apiVersion": "v1", "kind": "Secret", "metadata": meta, "data": data})


def plan_and_tenant(cluster: Any, region: str = REGION) -> None:
    provisioning = {"cloud": "azure", "region": region, "credentialsSecret": "azure-credentials"}
    spec = {"tier": "gold", "isolation": "silo", "provisioning": provisioning}
    cluster.kube.create({"apiVersion": API, "kind": "Plan", "metadata": {"name": "azure-gold"}, "spec": spec})
    tenant = {"planRef": "azure-gold", "deletionPolicy": "destroy"}
    cluster.kube.create({"apiVersion": API, "kind": "Tenant", "metadata": {"name": "contoso"}, "spec": tenant})


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    conditions = ((obj or {}).get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == type_), {})


def exhaust(fake: FakeAzure) -> None:
    fake.usages["cores"] = (100, 99)


def refuse(fake: FakeAzure) -> None:
    answer = azure.error(403, "AuthorizationFailed", "The client does not have authorization to perform action")
    fake.inject("GET", r".*/locations/westeurope/usages", answer, times=10_000)


CASES: list[tuple[str, Callable[[Path], None] | None, dict[str, str], str, str, str]] = [
    ("provider-missing", None, CREDENTIALS, REGION, "ProviderMissing", "provider hashicorp/azurerm is not in"),
    ("bad-credentials", provide, {**CREDENTIALS, "ARM_ACCESS_TOKEN": BAD_TOKEN}, REGION, "InvalidCredentials", ""),
    ("unknown-region", provide, CREDENTIALS, "marsnorth", "UnknownRegion", "marsnorth"),
    ("no-quota", provide, CREDENTIALS, REGION, "InsufficientQuota", "Total Regional vCPUs (cores) 1 available"),
    ("cloud-error", provide, CREDENTIALS, REGION, "CloudError", "AuthorizationFailed (HTTP 403)"),
]


@pytest.mark.parametrize(
    ("case", "mirror_setup", "credentials", "region", "reason", "text"), CASES, ids=[c[0] for c in CASES]
)
def test_a_plan_its_cloud_preflight_refuses_says_why_and_its_tenant_waits_with_nothing_built(
    fake: FakeAzure,
    operator: Any,
    tmp_path: Path,
    case: str,
    mirror_setup: Callable[[Path], None] | None,
    credentials: dict[str, str],
    region: str,
    reason: str,
    text: str,
) -> None:
    cluster = operator
    if mirror_setup is not None:
        mirror_setup(tmp_path / "mirror")
    {"no-quota": exhaust, "cloud-error": refuse}.get(case, lambda _: None)(fake)
    secret(cluster, credentials)
    plan_and_tenant(cluster, region)

    cloud_ready = cluster.eventually(
        lambda: condition(cluster.kube.get(API, "plans", "azure-gold"), "CloudReady") or None, timeout=60
    )
    assert cloud_ready["status"] == "False" and cloud_ready["reason"] == reason and text in cloud_ready["message"]
    ready = condition(cluster.kube.get(API, "plans", "azure-gold"), "Ready")
    assert ready["status"] == "False" and ready["reason"] == reason

    def waiting() -> dict[str, Any] | None:
        tenant = cluster.kube.get(API, "tenants", "contoso")
        provisioned = condition(tenant, "Provisioned")
        return tenant if "cloud preflight failed" in provisioned.get("message", "") else None

    tenant = cluster.eventually(waiting, timeout=60)
    provisioned = condition(tenant, "Provisioned")
    assert provisioned["status"] == "False" and f"({reason})" in provisioned["message"]
    assert text in provisioned["message"]
    assert tenant["status"]["phase"] in ("Pending", "Provisioning")
    assert not (tenant["status"].get("infrastructure") or {}).get("lastRun")  # no Terraform run started
    if case == "provider-missing":
        assert fake.seen == []  # the cloud was not even asked
    assert fake.wrong == []
    everything = (
        str(cluster.kube.get(API, "plans", "azure-gold")) + str(tenant) + str(cluster.kube.list("v1", "events"))
    )
    for value in (BAD_TOKEN, azure.TOKEN, CREDENTIALS["ARM_CLIENT_SECRET"]):
        assert value not in everything


def test_a_plan_its_cloud_accepts_is_cloud_ready(fake: FakeAzure, operator: Any, tmp_path: Path) -> None:
    cluster = operator
    provide(tmp_path / "mirror")
    secret(cluster, CREDENTIALS)
    provisioning = {"cloud": "azure", "region": REGION, "credentialsSecret": "azure-credentials"}
    spec = {"tier": "gold", "isolation": "bridge", "provisioning": provisioning}
    cluster.kube.create({"apiVersion": API, "kind": "Plan", "metadata": {"name": "azure-gold"}, "spec": spec})

    def checked() -> dict[str, Any] | None:
        plan = cluster.kube.get(API, "plans", "azure-gold")
        return plan if condition(plan, "CloudReady") else None

    plan = cluster.eventually(checked, timeout=60)
    cloud_ready, ready = condition(plan, "CloudReady"), condition(plan, "Ready")
    assert cloud_ready.get("status") == "True" and cloud_ready["reason"] == "Ok", plan
    assert f"location {REGION} has the quota" in cloud_ready["message"]
    assert ready["status"] == "True" and cloud_ready["observedGeneration"] == plan["metadata"]["generation"]
    assert (
        fake.count("GET", rf"/subscriptions/{azure.SUBSCRIPTION}/providers/Microsoft.Compute/locations/{REGION}/usages")
        >= 1
    )
    assert fake.wrong == []
