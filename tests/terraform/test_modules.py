"""Every shipped module parsed (python-hcl2) and held to the one contract; broken copies are caught."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from paybill.terraform.contract import OUTPUTS, violations
from paybill.terraform.models import ModuleInputs
from paybill.terraform.modules import module_dir, shipped


def test_every_cloud_ships_every_isolation_model() -> None:
    assert {(ref.cloud, ref.model) for ref in shipped()} == {
        (cloud, model)
        for cloud in ("local", "aws", "azure", "gcp", "oci", "ibm")
        for model in ("silo", "pooled", "bridge")
    }


@pytest.mark.parametrize("ref", shipped(), ids=lambda ref: f"{ref.cloud}/{ref.model}")
def test_every_shipped_module_meets_the_contract(ref) -> None:  # type: ignore[no-untyped-def]
    assert violations(module_dir(ref.cloud, ref.model), stands_for_cloud_objects=ref.cloud == "local") == []


def test_unknown_cloud_or_model_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="unknown cloud 'digitalocean'"):
        module_dir("digitalocean", "silo")
    with pytest.raises(ValueError, match=r"unknown isolation model '\.\./aws'"):
        module_dir("local", "../aws")


def _copy(tmp_path: Path, cloud: str, model: str) -> Path:
    target = tmp_path / f"{cloud}-{model}"
    shutil.copytree(module_dir(cloud, model), target)
    return target


def test_a_module_missing_an_output_is_named(tmp_path: Path) -> None:
    module = _copy(tmp_path, "aws", "silo")
    outputs = (module / "outputs.tf").read_text()
    (module / "outputs.tf").write_text(outputs.replace('output "network_id"', 'output "vpc"'))
    assert violations(module) == ["output network_id is missing"]
    assert "network_id" in OUTPUTS


def test_an_untagged_resource_a_plain_password_and_a_backend_are_named(tmp_path: Path) -> None:
    module = _copy(tmp_path, "aws", "silo")
    main = (module / "main.tf").read_text()
    untagged = '  force_destroy = var.deletion_policy == "destroy"\n'
    main = main.replace(untagged + "  tags          = local.tags\n", untagged)
    (module / "main.tf").write_text(main + '\nterraform {\n  backend "s3" {}\n}\n')
    outputs = (module / "outputs.tf").read_text()
    (module / "outputs.tf").write_text(outputs.replace("  sensitive = true\n", ""))
    assert violations(module) == [
        "output database_password must be sensitive",
        "resource aws_s3_bucket.tenant is not tagged with local.tags",
        "declares a backend: the runner supplies the pg backend",
    ]


def test_local_records_must_carry_the_tags_too(tmp_path: Path) -> None:
    module = _copy(tmp_path, "local", "silo")
    main = (module / "main.tf").read_text()
    (module / "main.tf").write_text(
        main.replace(
            ', tags = local.tags }\n}\n\nresource "terraform_data" "subnets"',
            ' }\n}\n\nresource "terraform_data" "subnets"',
        )
    )
    assert violations(module, stands_for_cloud_objects=True) == [
        "resource terraform_data.network is not tagged with local.tags"
    ]


def test_a_wrong_input_type_and_an_extra_input_are_named(tmp_path: Path) -> None:
    module = _copy(tmp_path, "local", "bridge")
    variables = (module / "variables.tf").read_text().replace("type        = map(number)", "type        = any")
    (module / "variables.tf").write_text(variables + '\nvariable "admin_password" {\n  type = string\n}\n')
    assert violations(module, stands_for_cloud_objects=True) == [
        "input sizes has type any, not map(number)",
        "input admin_password is not in the contract",
    ]


def test_modules_parsed_in_many_threads_at_once_are_each_read_right() -> None:
    """python-hcl2 shares one parser: the operator checks modules from kopf's threads (Plans and Tenants at once)."""
    from concurrent.futures import ThreadPoolExecutor

    modules = [module_dir(ref.cloud, ref.model) for ref in shipped()] * 6
    with ThreadPoolExecutor(max_workers=8) as pool:
        found = list(pool.map(lambda path: violations(path, stands_for_cloud_objects="local" in path.parts), modules))
    assert found == [[]] * len(modules)


@pytest.mark.parametrize(
    ("cloud", "model", "policy_line", "literal", "named"),
    [
        (
            "aws",
            "silo",
            'skip_final_snapshot       = var.deletion_policy == "destroy"',
            "true",
            "aws_db_instance.tenant",
        ),
        (
            "aws",
            "bridge",
            'skip_final_snapshot       = var.deletion_policy == "destroy"',
            "true",
            "aws_db_instance.tenant",
        ),
        ("aws", "silo", 'force_destroy = var.deletion_policy == "destroy"', "true", "aws_s3_bucket.tenant"),
        (
            "gcp",
            "silo",
            'force_destroy               = var.deletion_policy == "destroy"',
            "true",
            "google_storage_bucket.tenant",
        ),
        (
            "gcp",
            "bridge",
            'deletion_protection = var.deletion_policy == "retain"',
            "false",
            "google_sql_database_instance.tenant",
        ),
        ("ibm", "silo", 'force_delete = var.deletion_policy == "destroy"', "true", "ibm_cos_bucket.tenant"),
    ],
)
def test_a_data_bearing_resource_that_ignores_the_deletion_policy_is_named(
    cloud: str, model: str, policy_line: str, literal: str, named: str, tmp_path: Path
) -> None:
    """A database or bucket whose destroy deletes the data whatever the Tenant's deletionPolicy says (the finding:
    skip_final_snapshot = true, force_destroy = true) breaks the contract."""
    module = _copy(tmp_path, cloud, model)
    main = (module / "main.tf").read_text()
    assert policy_line in main
    attribute = policy_line.split()[0]
    (module / "main.tf").write_text(main.replace(policy_line, f"{attribute} = {literal}"))
    assert violations(module) == [f"resource {named}: {attribute} must follow var.deletion_policy"]


def test_every_tenant_module_takes_the_deletion_policy_and_refuses_an_unknown_one(tmp_path: Path) -> None:
    for ref in shipped():
        variables = (module_dir(ref.cloud, ref.model) / "variables.tf").read_text()
        assert 'variable "deletion_policy"' in variables and 'default     = "snapshot"' in variables, ref
    module = _copy(tmp_path, "local", "silo")
    (module / "variables.tf").write_text((module / "variables.tf").read_text().replace('default     = "snapshot"', ""))
    assert violations(module, stands_for_cloud_objects=True) == ["input deletion_policy needs a default"]
    with pytest.raises(ValueError, match="deletion policy 'keep'"):
        ModuleInputs("t1", "gold", "eu-west-1", "cc", deletion_policy="keep")
    assert ModuleInputs("t1", "gold", "eu-west-1", "cc").variables()["deletion_policy"] == "snapshot"
