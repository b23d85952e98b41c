"""The demo names the clouds it built on for real (AWS on moto, with counts) and how each other cloud is exercised."""

from __future__ import annotations

from paybill.demo.aws import AwsOutcome, summary
from paybill.demo.scenarios import cloud_lines


def test_the_demo_names_what_it_built_for_real_and_how_each_other_cloud_is_exercised() -> None:
    applied = {"status": {"infrastructure": {"module": "local/silo", "appliedHash": "ab" * 32}}}
    tenants = {"globex": applied, "acme": {"status": {}}, "initech": {"status": {"infrastructure": {"module": "x"}}}}
    found = {"aws_vpc": 1, "aws_subnet": 2, "aws_security_group": 1, "aws_db_instance": 1, "aws_s3_bucket": 1}
    lines = cloud_lines(tenants, summary(AwsOutcome("aws/silo", 10, found, 1, 1, 1, 1)))
    assert lines[0] == "  local: built for real by this demo: globex (local/silo)"
    assert lines[1] == (
        "  aws: built for real on moto (tenant hooli, aws/silo: 10 resources added by the real provider, 6 found by "
        "tag with boto3, 1 database in the inventory, 1 instances and databases stopped on suspension, "
        "1 started by hand while suspended stopped again, 1 started on resume)"
    )
    assert [line.split(":")[0].strip() for line in lines[2:]] == ["azure", "gcp", "oci", "ibm"]
    assert all(": by contract and adapter fakes (" in line and "loopback fake" in line for line in lines[2:])


def test_the_demo_says_why_it_did_not_build_on_aws() -> None:
    lines = cloud_lines({}, summary("moto did not start (exit code 1: Address in use)"))
    assert lines[0] == (
        "  aws: not built by this run (moto did not start (exit code 1: Address in use)); the suite builds it on "
        "moto (tests/terraform/test_operator_aws.py)"
    )
    assert len(lines) == 5 and not any("built for real" in line for line in lines)
