"""The cloud preflight's pure parts: loopback-only endpoints, the provider mirror, the CloudReady condition (the
cloud's code, never a credential) and the gate a tenant's run waits at."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from paybill.clouds.model import Cloud, CloudError, Preflight, Verdict
from paybill.clouds.preflight import endpoints, gate, provider_missing, readiness


def test_endpoints_name_a_loopback_address_per_cloud() -> None:
    assert endpoints("aws=http://127.0.0.1:5000, azure=http://localhost:6000/,ibm=http://[::1]:7000") == {
        Cloud.AWS: "http://127.0.0.1:5000",
        Cloud.AZURE: "http://localhost:6000",
        Cloud.IBM: "http://[::1]:7000",
    }
    assert endpoints(None) == {} and endpoints("") == {}


@pytest.mark.parametrize(
    "value",
    [
        "aws=https://ec2.attacker.example",
        "aws=http://10.0.0.1:80",
        "aws=http://127.0.0.1.nip.io:80",
        "aws=http://user@127.0.0.1:80",
        "aws=http://127.0.0.1:80/steal",
        "aws=file:///etc/passwd",
        "digitalocean=http://127.0.0.1:80",
    ],
)
def test_an_endpoint_that_is_not_loopback_or_names_no_cloud_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="PAYBILL_CLOUD_ENDPOINTS"):
        endpoints(value)


def test_a_provider_is_found_only_in_the_mirror(tmp_path: Path) -> None:
    assert "no provider mirror" in (provider_missing(Cloud.GCP, None) or "")
    assert "hashicorp/google is not in the provider mirror" in (provider_missing(Cloud.GCP, tmp_path) or "")
    (tmp_path / "registry.terraform.io" / "hashicorp" / "google").mkdir(parents=True)
    assert provider_missing(Cloud.GCP, tmp_path) is not None  # an empty directory holds no provider
    (
        tmp_path / "registry.terraform.io" / "hashicorp" / "google" / "terraform-provider-google_6.0.0_linux_amd64.zip"
    ).touch()
    assert provider_missing(Cloud.GCP, tmp_path) is None
    assert "oracle/oci" in (provider_missing(Cloud.OCI, tmp_path) or "")
    assert "ibm-cloud/ibm" in (provider_missing(Cloud.IBM, tmp_path) or "")


def test_the_condition_names_the_cause_and_the_clouds_code_never_a_credential() -> None:
    refused = Preflight(Cloud.OCI, Verdict.INSUFFICIENT_QUOTA, "standard-e4-core-count: 0 available, 1 needed")
    assert readiness(refused) == (False, "InsufficientQuota", "oci: standard-e4-core-count: 0 available, 1 needed")
    error = CloudError(Cloud.GCP, "forbidden", "token ya29.s3cr3t-token refused", 403)
    assert readiness(error, ["ya29.s3cr3t-token"]) == (
        False,
        "CloudError",
        "gcp answered forbidden (HTTP 403): token *** refused",
    )
    assert readiness(Preflight(Cloud.AWS, Verdict.OK, "credentials valid"))[:2] == (True, "Ok")


def _plan(cloud: str, generation: int, condition: dict[str, Any] | None) -> dict[str, Any]:
    status = {"conditions": [condition]} if condition else {}
    spec = {"provisioning": {"cloud": cloud}}
    return {"metadata": {"name": "gold", "generation": generation}, "spec": spec, "status": status}


def test_a_tenant_runs_only_once_its_plans_cloud_preflight_passed_for_its_current_spec() -> None:
    passed = {"type": "CloudReady", "status": "True", "reason": "Ok", "observedGeneration": 3}
    failed = {**passed, "status": "False", "reason": "InvalidCredentials", "message": "aws: refused (AuthFailure)"}
    assert gate(_plan("aws", 3, passed)) is None
    assert gate(_plan("local", 3, None)) is None and gate(None) is None
    assert "has not passed yet" in (gate(_plan("aws", 3, None)) or "")
    assert "has not passed yet" in (gate(_plan("aws", 4, passed)) or "")  # said of an earlier spec
    assert gate(_plan("aws", 3, failed)) == "cloud preflight failed (InvalidCredentials): aws: refused (AuthFailure)"
