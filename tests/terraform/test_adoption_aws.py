"""The AWS adapter's lookup of a tenant's objects (clouds/aws.py tenant_objects) against moto, and what recovery makes
of them (terraform/adoption.py): the tenant's own objects to their addresses; a role of the tenant's name tagged for
another tenant, and a VPC without the managed-by tag, never."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from paybill.clouds import Cloud, Unsupported
from paybill.clouds.adapters import adapter
from paybill.terraform.adoption import PlannedCreate, adopt

from . import aws_sim

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
KEYS = {key.lower(): aws_sim.CREDENTIALS[key] for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}


@pytest.fixture(scope="module")
def moto_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    try:
        python = aws_sim.ensure_venv()
    except Exception as error:  # no package index reachable: nothing to run against
        pytest.skip(f"moto not installable here: {error}")
    with aws_sim.moto_server(python, tmp_path_factory.mktemp("moto") / "moto.log") as url:
        yield url


def _client(url: str, service: str) -> Any:
    return boto3.client(service, endpoint_url=url, region_name=aws_sim.REGION, **KEYS)


def _tags(tenant: str, **extra: str) -> list[dict[str, str]]:
    found = {"paybill.dev/tenant": tenant, "paybill.dev/managed-by": "paybill", **extra}
    return [{"Key": key, "Value": value} for key, value in found.items()]


def _silo_leftovers(url: str, tenant: str) -> dict[str, str]:
    """What a killed silo apply may leave: each object as the module would have made it."""
    ec2, name = _client(url, "ec2"), f"paybill-{tenant}"
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    ec2.create_tags(Resources=[vpc], Tags=_tags(tenant, Name=name))
    subnets = []
    for index in (0, 1):
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{index + 1}.0/24")["Subnet"]["SubnetId"]
        ec2.create_tags(Resources=[subnet], Tags=_tags(tenant, Name=f"{name}-{index}"))
        subnets.append(subnet)
    group = ec2.create_security_group(GroupName=f"{name}-database", Description="db", VpcId=vpc)["GroupId"]
    ec2.create_tags(Resources=[group], Tags=_tags(tenant))
    rds = _client(url, "rds")
    rds.create_db_subnet_group(
        DBSubnetGroupName=name, DBSubnetGroupDescription="x", SubnetIds=subnets, Tags=_tags(tenant)
    )
    s3 = _client(url, "s3")
    s3.create_bucket(Bucket=name)
    s3.put_bucket_tagging(Bucket=name, Tagging={"TagSet": _tags(tenant)})
    iam = _client(url, "iam")
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole"}]}
    iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust), Tags=_tags(tenant))
    iam.put_role_policy(RoleName=name, PolicyName="bucket", PolicyDocument=POLICY)
    return {"vpc": vpc, "subnet0": subnets[0], "subnet1": subnets[1], "group": group}


POLICY = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]})
SILO = [
    PlannedCreate("aws_vpc.tenant", "aws_vpc", tag_name="paybill-{t}"),
    PlannedCreate("aws_subnet.tenant[0]", "aws_subnet", tag_name="paybill-{t}-0"),
    PlannedCreate("aws_subnet.tenant[1]", "aws_subnet", tag_name="paybill-{t}-1"),
    PlannedCreate("aws_security_group.database", "aws_security_group", frozenset({"paybill-{t}-database"})),
    PlannedCreate("aws_db_subnet_group.tenant", "aws_db_subnet_group", frozenset({"paybill-{t}"})),
    PlannedCreate("aws_db_instance.tenant", "aws_db_instance", frozenset({"paybill-{t}"})),
    PlannedCreate("aws_s3_bucket.tenant", "aws_s3_bucket", frozenset({"paybill-{t}"})),
    PlannedCreate("aws_iam_role.tenant", "aws_iam_role", frozenset({"paybill-{t}"})),
    PlannedCreate("aws_iam_role_policy.bucket", "aws_iam_role_policy", frozenset({"bucket"})),
]


def _planned(tenant: str) -> list[PlannedCreate]:
    return [
        PlannedCreate(c.address, c.type, frozenset(n.format(t=tenant) for n in c.names), c.tag_name.format(t=tenant))
        for c in SILO
    ]


def test_a_tenants_leftovers_are_found_in_moto_and_mapped_each_to_its_address(moto_url: str) -> None:
    tenant = f"left-{secrets.token_hex(3)}"
    made = _silo_leftovers(moto_url, tenant)
    aws = adapter(Cloud.AWS, aws_sim.CREDENTIALS, aws_sim.REGION, endpoint=moto_url)
    found = aws.tenant_objects(tenant)
    result = adopt(tenant, found, set(), _planned(tenant))
    name = f"paybill-{tenant}"
    assert result.problems == () and result.refused == ()
    assert {i.address: i.id for i in result.imports} == {
        "aws_vpc.tenant": made["vpc"],
        "aws_subnet.tenant[0]": made["subnet0"],
        "aws_subnet.tenant[1]": made["subnet1"],
        "aws_security_group.database": made["group"],
        "aws_db_subnet_group.tenant": name,
        "aws_s3_bucket.tenant": name,
        "aws_iam_role.tenant": name,
        "aws_iam_role_policy.bucket": f"{name}:bucket",
    }
    tracked = adopt(tenant, found, {("aws_vpc", made["vpc"])}, _planned(tenant))  # the VPC is in the state already
    assert "aws_vpc.tenant" not in {i.address for i in tracked.imports} and len(tracked.imports) == 7


def test_objects_of_the_tenants_names_but_not_its_tags_are_never_adopted(moto_url: str) -> None:
    tenant = f"spoof-{secrets.token_hex(3)}"
    name = f"paybill-{tenant}"
    iam = _client(moto_url, "iam")
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole"}]}
    iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust), Tags=_tags("someone-else"))
    iam.put_role_policy(RoleName=name, PolicyName="bucket", PolicyDocument=POLICY)
    _client(moto_url, "s3").create_bucket(Bucket=name)  # no tags at all
    ec2 = _client(moto_url, "ec2")
    vpc = ec2.create_vpc(CidrBlock="10.1.0.0/16")["Vpc"]["VpcId"]
    ec2.create_tags(Resources=[vpc], Tags=[{"Key": "paybill.dev/tenant", "Value": tenant}])  # not managed-by
    found = adapter(Cloud.AWS, aws_sim.CREDENTIALS, aws_sim.REGION, endpoint=moto_url).tenant_objects(tenant)
    result = adopt(tenant, found, set(), _planned(tenant))
    assert result.imports == () and result.problems == ()
    assert sorted(result.refused) == [
        f"aws_iam_role {name}: tagged for tenant 'someone-else'",
        f"aws_iam_role_policy {name}:bucket (bucket): belongs to aws_iam_role {name}, which is not the tenant's "
        "to adopt",
        f"aws_s3_bucket {name}: lacks the paybill.dev/tenant tag",
        f"aws_vpc {vpc}: lacks the paybill.dev/managed-by=paybill tag",
    ]


def test_a_tenant_with_nothing_in_the_cloud_has_nothing_to_adopt(moto_url: str) -> None:
    found = adapter(Cloud.AWS, aws_sim.CREDENTIALS, aws_sim.REGION, endpoint=moto_url).tenant_objects("nobody-here")
    assert found == []


def test_a_cloud_without_the_lookup_says_it_is_not_supported() -> None:
    ibm = adapter(Cloud.IBM, {"IC_API_KEY": "k" * 20}, "us-south", endpoint="http://127.0.0.1:9")
    with pytest.raises(Unsupported, match="not supported for ibm"):
        ibm.tenant_objects("acme")
