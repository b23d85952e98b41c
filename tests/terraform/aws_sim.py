"""AWS offline for the suite: moto's server, its virtualenv and the provider mirror are the demo's
(`paybill.demo.moto`, one install for both); here only boto3 scripts run in that virtualenv to look at what
Terraform made (every kind of the silo, by tag) and to change a tag behind Terraform's back."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from paybill.demo.moto import (  # the demo's moto environment, shared: one install, one set of pins
    CONSTRAINTS,
    CREDENTIALS,
    PACKAGES,
    PROVIDER_ZIP,
    REGION,
    SERVICES,
    VENV,
    ensure_venv,
    moto_server,
    provider_mirror,
    provider_override,
)

__all__ = [
    "CONSTRAINTS",
    "CREDENTIALS",
    "PACKAGES",
    "PROVIDER_ZIP",
    "REGION",
    "SERVICES",
    "VENV",
    "data_kept",
    "ensure_venv",
    "find_by_tag",
    "moto_server",
    "provider_mirror",
    "provider_override",
    "set_ec2_tag",
]


_FIND_BY_TAG = """
import json, sys
import boto3
url, tag, value = sys.argv[1:4]
kw = dict(endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="x")
ec2, rds, s3, iam = (boto3.client(s, **kw) for s in ("ec2", "rds", "s3", "iam"))
flt = [{"Name": f"tag:{tag}", "Values": [value]}]
found = {
    "vpc": [v["VpcId"] for v in ec2.describe_vpcs(Filters=flt)["Vpcs"]],
    "subnet": [s["SubnetId"] for s in ec2.describe_subnets(Filters=flt)["Subnets"]],
    "security_group": [g["GroupId"] for g in ec2.describe_security_groups(Filters=flt)["SecurityGroups"]],
    "db_instance": [], "db_subnet_group": [], "s3_bucket": [], "iam_role": [],
}
def tagged(tags):
    return any(t.get("Key") == tag and t.get("Value") == value for t in tags)
for db in rds.describe_db_instances()["DBInstances"]:
    if tagged(rds.list_tags_for_resource(ResourceName=db["DBInstanceArn"])["TagList"]):
        found["db_instance"].append(db["DBInstanceIdentifier"])
for group in rds.describe_db_subnet_groups()["DBSubnetGroups"]:
    if tagged(rds.list_tags_for_resource(ResourceName=group["DBSubnetGroupArn"])["TagList"]):
        found["db_subnet_group"].append(group["DBSubnetGroupName"])
for bucket in s3.list_buckets()["Buckets"]:
    try:
        tags = s3.get_bucket_tagging(Bucket=bucket["Name"])["TagSet"]
    except Exception:
        tags = []
    if tagged(tags):
        found["s3_bucket"].append(bucket["Name"])
for role in iam.list_roles()["Roles"]:
    if tagged(iam.list_role_tags(RoleName=role["RoleName"])["Tags"]):
        found["iam_role"].append(role["RoleName"])
print(json.dumps(found))
"""


def find_by_tag(python: Path, url: str, tag: str, value: str) -> dict[str, list[str]]:
    """Every resource of the silo's kinds that carries tag=value, as boto3 sees it in moto."""
    done = subprocess.run(
        [str(python), "-c", _FIND_BY_TAG, url, tag, value], capture_output=True, text=True, timeout=300
    )
    if done.returncode:
        raise RuntimeError(done.stderr[-2000:])
    return {kind: sorted(ids) for kind, ids in json.loads(done.stdout).items()}


_SET_TAG = """
import sys
import boto3
url, resource, key, value = sys.argv[1:5]
boto3.client("ec2", endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing",
             aws_secret_access_key="x").create_tags(Resources=[resource], Tags=[{"Key": key, "Value": value}])
"""


def set_ec2_tag(python: Path, url: str, resource: str, key: str, value: str) -> None:
    """Change an EC2 resource's tag behind Terraform's back."""
    subprocess.run(
        [str(python), "-c", _SET_TAG, url, resource, key, value], check=True, capture_output=True, timeout=120
    )


_KEPT = """
import json, sys
import boto3
url, bucket, key = sys.argv[1:4]
kw = dict(endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="x")
rds, s3 = boto3.client("rds", **kw), boto3.client("s3", **kw)
if key:
    s3.put_object(Bucket=bucket, Key=key, Body=b"the tenant's invoice")
buckets = [b["Name"] for b in s3.list_buckets()["Buckets"]]
objects = s3.list_objects_v2(Bucket=bucket).get("Contents", []) if bucket in buckets else []
print(json.dumps({
    "snapshots": sorted(s["DBSnapshotIdentifier"] for s in rds.describe_db_snapshots()["DBSnapshots"]),
    "db_instances": sorted(d["DBInstanceIdentifier"] for d in rds.describe_db_instances()["DBInstances"]),
    "buckets": sorted(buckets),
    "objects": sorted(o["Key"] for o in objects),
}))
"""


def data_kept(python: Path, url: str, bucket: str, put: str = "") -> dict[str, list[str]]:
    """What moto holds of a tenant's data: DB snapshots and instances, buckets, the objects in `bucket` (after
    putting an object under the key `put`, if given)."""
    done = subprocess.run([str(python), "-c", _KEPT, url, bucket, put], capture_output=True, text=True, timeout=120)
    if done.returncode:
        raise RuntimeError(done.stderr[-2000:])
    found: dict[str, list[str]] = json.loads(done.stdout)
    return found
