"""The demo names the clouds it built on for real and how each other cloud is exercised."""

from __future__ import annotations

from paybill.demo.scenarios import cloud_lines


def test_the_demo_names_what_it_built_for_real_and_how_each_other_cloud_is_exercised() -> None:
    applied = {"status": {"infrastructure": {"module": "local/silo", "appliedHash": "ab" * 32}}}
    tenants = {"globex": applied, "acme": {"status": {}}, "initech": {"status": {"infrastructure": {"module": "x"}}}}
    lines = cloud_lines(tenants)
    assert lines[0] == "  local: built for real by this demo: globex (local/silo)"
    assert lines[1].startswith("  aws: for real on moto by the suite") and lines[1].endswith("not by this demo")
    assert [line.split(":")[0].strip() for line in lines[2:]] == ["azure", "gcp", "oci", "ibm"]
    assert all("by contract" in line and "loopback fake" in line for line in lines[2:])
    on_aws = {"t": {"status": {"infrastructure": {"module": "aws/silo", "appliedHash": "cd" * 32}}}}
    assert cloud_lines(on_aws)[0] == "  aws: built for real by this demo: t (aws/silo)"
    assert not any(line.startswith("  aws: for real on moto") for line in cloud_lines(on_aws))
