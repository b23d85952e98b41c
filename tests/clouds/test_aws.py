"""The AWS adapter through boto3 against moto's server (signatures checked), a throttling pass-through for 429/5xx."""

from __future__ import annotations

import boto3
import pytest

from paybill.clouds import tags
from paybill.clouds.aws import AwsAdapter
from paybill.clouds.model import Cloud, CloudError, CloudPlan, PowerState, Verdict
from paybill.clouds.retry import RetryPolicy

from .fakes.aws import MotoProxy, error

# moto's venv is made on first use (minutes on a new machine), as tests/terraform/test_aws.py's
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]
AMI = "ami-12c6146b"


def _credentials(moto: dict[str, str]) -> dict[str, str]:
    return {k: moto[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}


def _ec2(moto: dict[str, str], region: str):  # type: ignore[no-untyped-def]
    return boto3.client(
        "ec2", endpoint_url=moto["url"], region_name=region, **{k.lower(): v for k, v in _credentials(moto).items()}
    )


def _launch(moto: dict[str, str], region: str, tenant: str, count: int) -> list[str]:
    tagged = [{"Key": k, "Value": v} for k, v in tags.tags(Cloud.AWS, tenant, "gold", "cc-7").items()]
    reservation = _ec2(moto, region).run_instances(
        ImageId=AMI,
        InstanceType="t3.micro",
        MinCount=count,
        MaxCount=count,
        TagSpecifications=[{"ResourceType": "instance", "Tags": tagged}],
    )
    return sorted(i["InstanceId"] for i in reservation["Instances"])


def _database(moto: dict[str, str], region: str, identifier: str, tenant: str):  # type: ignore[no-untyped-def]
    """An RDS instance tagged for `tenant`, as the modules tag theirs; the RDS client."""
    tagged = [{"Key": k, "Value": v} for k, v in tags.tags(Cloud.AWS, tenant, "gold", "cc-7").items()]
    keys = {k.lower(): v for k, v in _credentials(moto).items()}
    rds = boto3.client("rds", endpoint_url=moto["url"], region_name=region, **keys)
    rds.create_db_instance(
        DBInstanceIdentifier=identifier,
        DBInstanceClass="db.t3.micro",
        Engine="postgres",
        MasterUsername="paybill",
        MasterUserPassword="not-a-real-password",
        AllocatedStorage=20,
        Tags=tagged,
    )
    return rds


def _adapter(moto: dict[str, str], region: str, endpoint: str | None = None, **kw: object) -> AwsAdapter:
    return AwsAdapter(_credentials(moto), region, endpoint=endpoint or moto["url"], poll_seconds=0.05, **kw)  # type: ignore[arg-type]


def test_preflight_accepts_valid_credentials_a_known_region_and_enough_vpcs(moto: dict[str, str]) -> None:
    result = _adapter(moto, "eu-west-1").preflight(CloudPlan.per_model("gold", "eu-west-1", "silo"))
    assert result.verdict is Verdict.OK, result.message
    assert result.quota["vpcs"][1] == 1 and result.quota["vpcs"][0] >= 1


def test_preflight_names_refused_credentials_and_never_the_secret(moto: dict[str, str]) -> None:
    secret = "wrong-secret-key-0123456789"
    adapter = AwsAdapter(
        {"AWS_ACCESS_KEY_ID": moto["AWS_ACCESS_KEY_ID"], "AWS_SECRET_ACCESS_KEY": secret}, "eu-west-1", moto["url"]
    )
    result = adapter.preflight(CloudPlan.per_model("gold", "eu-west-1", "silo"))
    assert result.verdict is Verdict.INVALID_CREDENTIALS
    assert "SignatureDoesNotMatch" in result.message and secret not in result.message
    with pytest.raises(CloudError) as raised:
        adapter.inventory("acme")
    assert raised.value.code == "AuthFailure" and secret not in str(raised.value)


def test_preflight_refuses_an_unknown_region(moto: dict[str, str]) -> None:
    result = _adapter(moto, "mars-north-1").preflight(CloudPlan.per_model("gold", "mars-north-1", "silo"))
    assert result.verdict is Verdict.UNKNOWN_REGION and "mars-north-1" in result.message


def test_preflight_refuses_a_silo_plan_when_no_vpc_is_left_in_the_region(moto: dict[str, str]) -> None:
    region = "ap-south-1"
    adapter = _adapter(moto, region)
    plan = CloudPlan.per_model("gold", region, "silo")
    ec2 = _ec2(moto, region)
    while adapter.preflight(plan).ok:
        ec2.create_vpc(CidrBlock="10.9.0.0/16")
    result = adapter.preflight(plan)
    assert result.verdict is Verdict.INSUFFICIENT_QUOTA
    assert "L-F678F1CE" in result.message and result.quota["vpcs"] == (0, 1)
    assert adapter.preflight(CloudPlan.per_model("free", region, "pooled")).ok  # a pooled tenant needs no VPC


def test_inventory_finds_a_tenants_instances_by_tag_across_pages(moto: dict[str, str]) -> None:
    region = "eu-central-1"
    mine = sorted(i for _ in range(12) for i in _launch(moto, region, "inv-acme", 2))  # 12 reservations
    _launch(moto, region, "inv-other", 4)
    adapter = _adapter(moto, region, page_size=5)
    found = adapter.inventory("inv-acme")
    assert sorted(r.id for r in found) == mine
    assert {(r.kind, r.tenant, r.plan, r.cost_center, r.state) for r in found} == {
        ("instance", "inv-acme", "gold", "cc-7", PowerState.RUNNING)
    }
    assert adapter.calls == 4  # three pages of 5 reservations, one of databases


def test_suspend_and_resume_are_idempotent(moto: dict[str, str]) -> None:
    region = "eu-west-2"
    ids = _launch(moto, region, "pow-acme", 3)
    adapter = _adapter(moto, region)
    assert sorted(adapter.suspend("pow-acme").changed) == ids
    assert {r.state for r in adapter.inventory("pow-acme")} == {PowerState.STOPPED}
    again = adapter.suspend("pow-acme")
    assert again.changed == () and sorted(again.unchanged) == ids
    assert sorted(adapter.resume("pow-acme").changed) == ids
    assert {r.state for r in adapter.inventory("pow-acme")} == {PowerState.RUNNING}
    assert adapter.resume("pow-acme").changed == ()


def test_orphans_are_tagged_resources_of_tenants_that_no_longer_exist(moto: dict[str, str]) -> None:
    region = "ca-central-1"
    _launch(moto, region, "orph-kept", 2)
    gone = _launch(moto, region, "orph-gone", 2)
    _ec2(moto, region).run_instances(ImageId=AMI, InstanceType="t3.micro", MinCount=1, MaxCount=1)  # not Paybill's
    orphans = _adapter(moto, region).orphans({"orph-kept"})
    assert sorted(r.id for r in orphans) == gone and {r.tenant for r in orphans} == {"orph-gone"}


def test_not_found_is_an_empty_result(moto: dict[str, str]) -> None:
    adapter = _adapter(moto, "sa-east-1")
    assert adapter.inventory("nobody") == []
    change = adapter.suspend("nobody")
    assert change.changed == () and change.unchanged == ()


def test_throttling_waits_retry_after_and_transient_5xx_back_off(moto: dict[str, str]) -> None:
    region = "us-west-2"
    ids = _launch(moto, region, "thr-acme", 2)
    proxy = MotoProxy(moto["url"])
    waits: list[float] = []
    try:
        adapter = _adapter(moto, region, endpoint=proxy.url, retry=RetryPolicy(sleep=waits.append))
        proxy.inject("POST", "/", error(429, "Throttling", "Rate exceeded", retry_after="3"))
        proxy.inject("POST", "/", error(503, "ServiceUnavailable", "try later"), times=2)
        assert sorted(r.id for r in adapter.inventory("thr-acme")) == ids
        assert waits == [3.0, 0.5, 1.0]  # Retry-After as told, then 0.25 s doubled (attempts 2 and 3)
        proxy.inject("POST", "/", error(503, "ServiceUnavailable", "down"), times=5)
        with pytest.raises(CloudError) as raised:
            adapter.inventory("thr-acme")
        assert raised.value.code == "ServiceUnavailable" and raised.value.status == 503
        assert moto["AWS_SECRET_ACCESS_KEY"] not in str(raised.value)
        assert proxy.wrong == []
    finally:
        proxy.close()


def test_suspending_stops_the_tenants_rds_instance_too_and_resuming_starts_it(moto: dict[str, str]) -> None:
    """Outsider's finding: suspension stopped EC2 instances only; a suspended tenant's RDS database kept running
    (and the tenant kept using it with the credentials in its infrastructure Secret)."""
    region = "eu-north-1"
    rds = _database(moto, region, "paybill-rds-acme", "rds-acme")
    instance = _launch(moto, region, "rds-acme", 1)
    adapter = _adapter(moto, region)
    assert sorted(adapter.suspend("rds-acme").changed) == sorted([*instance, "paybill-rds-acme"])
    status = rds.describe_db_instances(DBInstanceIdentifier="paybill-rds-acme")["DBInstances"][0]["DBInstanceStatus"]
    assert status == "stopped"
    assert adapter.suspend("rds-acme").changed == ()
    assert sorted(adapter.resume("rds-acme").changed) == sorted([*instance, "paybill-rds-acme"])
    status = rds.describe_db_instances(DBInstanceIdentifier="paybill-rds-acme")["DBInstances"][0]["DBInstanceStatus"]
    assert status == "available"


def test_what_an_interrupted_apply_left_is_found_under_every_models_names(moto: dict[str, str]) -> None:
    """Recovery after a killed apply looks objects up by the names the modules give them: a bridge tenant's RDS
    instance and role are paybill-<tenant>-bridge, a pooled tenant's role paybill-<tenant>-pooled (an outsider's
    review: only paybill-<tenant> was looked up, so a retried bridge apply failed on "already exists" forever)."""
    region = "eu-west-3"
    keys = {k.lower(): v for k, v in _credentials(moto).items()}
    tagged = [{"Key": k, "Value": v} for k, v in tags.tags(Cloud.AWS, "mixed", "gold", "cc-7").items()]
    _database(moto, region, "paybill-mixed-bridge", "mixed")
    iam = boto3.client("iam", endpoint_url=moto["url"], region_name=region, **keys)
    trust = '{"Version": "2012-10-17", "Statement": []}'
    for role in ("paybill-mixed-bridge", "paybill-mixed-pooled"):
        iam.create_role(RoleName=role, AssumeRolePolicyDocument=trust, Tags=tagged)
    found = {(o.type, o.id) for o in _adapter(moto, region).tenant_objects("mixed")}
    assert {
        ("aws_db_instance", "paybill-mixed-bridge"),
        ("aws_iam_role", "paybill-mixed-bridge"),
        ("aws_iam_role", "paybill-mixed-pooled"),
    } <= found
