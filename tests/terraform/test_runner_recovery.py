"""Recovery after an apply that never finished (runner.py with recovery.py and adoption.py), against the real
Terraform and PostgreSQL: the mark an apply leaves until it ends, the cloud lookup asked only then, a run stopped
(naming the objects) when they cannot be mapped or the cloud has no lookup, and a saved plan older than the
interruption planned again. The AWS side (imports applied against moto) is test_operator_restart_aws.py."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from pathlib import Path

import psycopg
import pytest

from paybill.clouds import Unsupported
from paybill.terraform import ModuleInputs, RunTimedOut, StalePlan, TerraformRunner
from paybill.terraform.adoption import Adoption, CloudObject
from paybill.terraform.errors import AdoptionBlocked
from paybill.terraform.recovery import interrupted_since, mark_applying

from .conftest import LOCAL_SILO, state_resources, write_module


class Finder:
    """A cloud lookup that answers `found` and counts its calls."""

    def __init__(self, found: Sequence[CloudObject] = (), error: Exception | None = None) -> None:
        self.found, self.error, self.calls = list(found), error, 0

    def __call__(self, tenant: str) -> Sequence[CloudObject]:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return self.found


def _marked(dsn: str, tenant: ModuleInputs) -> bool:
    with psycopg.connect(dsn, autocommit=True) as connection:
        return interrupted_since(connection, tenant.tenant_id, tenant.workspace) is not None


def _interrupt(dsn: str, tenant: ModuleInputs) -> None:
    """The mark an apply killed with its operator leaves (the kill itself: the timeout test below)."""
    with psycopg.connect(dsn, autocommit=True) as connection:
        mark_applying(connection, tenant.tenant_id, tenant.workspace, "killed")


def test_an_apply_killed_at_its_timeout_is_recovered_by_the_next_run_and_a_finished_one_is_not(
    make_runner: Callable[..., TerraformRunner], tenant: ModuleInputs, modules_dir: Path, backend_dsn: str
) -> None:
    sleep = f"{600 + secrets.randbelow(300)}.{secrets.randbelow(10**6)}"
    hanging = write_module(
        modules_dir / "hanging",
        f'resource "terraform_data" "slow" {{\n  input = var.tenant_id\n'
        f'  provisioner "local-exec" {{\n    command = "sleep {sleep}"\n  }}\n}}\n',
    )
    runner = make_runner(timeout=15, concurrency=1)
    with pytest.raises(RunTimedOut):
        runner.apply(tenant, hanging)
    assert _marked(backend_dsn, tenant)  # killed: the mark stays

    finder = Finder()
    result = runner.apply(tenant, LOCAL_SILO, finder=finder)
    assert finder.calls == 1 and result.adoption == Adoption()  # looked, found nothing of the tenant's
    assert not _marked(backend_dsn, tenant)
    again = runner.apply(tenant, LOCAL_SILO, finder=finder)
    assert finder.calls == 1 and again.adoption is None  # every apply finished: no lookup


def test_objects_that_cannot_be_mapped_stop_the_run_naming_them_and_nothing_is_applied(
    make_runner: Callable[..., TerraformRunner], tenant: ModuleInputs, backend_dsn: str
) -> None:
    runner = make_runner()
    _interrupt(backend_dsn, tenant)
    ours = {"paybill.dev/tenant": tenant.tenant_id, "paybill.dev/managed-by": "paybill"}
    twins = Finder([CloudObject("terraform_data", "a-1", tags=ours), CloudObject("terraform_data", "a-2", tags=ours)])
    with pytest.raises(AdoptionBlocked) as blocked:
        runner.apply(tenant, LOCAL_SILO, finder=twins)
    assert "terraform_data a-1 could be any of terraform_data.credentials, terraform_data.database" in str(
        blocked.value.message
    )
    assert "terraform_data a-2 could be any of" in blocked.value.message
    assert state_resources(backend_dsn, tenant.tenant_id) == [] and _marked(backend_dsn, tenant)

    unsupported = Finder(error=Unsupported("finding a tenant's resources to adopt is not supported for ibm"))
    with pytest.raises(AdoptionBlocked, match="not supported for ibm"):
        runner.apply(tenant, LOCAL_SILO, finder=unsupported)
    assert state_resources(backend_dsn, tenant.tenant_id) == []


def test_a_saved_plan_older_than_an_interrupted_apply_is_planned_again_with_the_recovery(
    make_runner: Callable[..., TerraformRunner], tenant: ModuleInputs, backend_dsn: str
) -> None:
    runner = make_runner()
    before = runner.plan(tenant, LOCAL_SILO)
    _interrupt(backend_dsn, tenant)
    with pytest.raises(StalePlan, match="never finished"):
        runner.apply_plan(tenant, LOCAL_SILO, before.plan_hash, before.plan_hash)
    finder = Finder()
    after = runner.plan(tenant, LOCAL_SILO, finder=finder)
    assert finder.calls == 1
    runner.apply_plan(tenant, LOCAL_SILO, after.plan_hash, after.plan_hash)
    assert not _marked(backend_dsn, tenant) and len(state_resources(backend_dsn, tenant.tenant_id)) == 4


def test_a_destroy_after_an_apply_that_never_finished_looks_for_what_it_made_first(
    make_runner: Callable[..., TerraformRunner], tenant: ModuleInputs, backend_dsn: str
) -> None:
    runner = make_runner()
    runner.apply(tenant, LOCAL_SILO)
    _interrupt(backend_dsn, tenant)
    finder = Finder()
    destroyed = runner.destroy(tenant, LOCAL_SILO, finder=finder)
    assert finder.calls == 0 and destroyed.destroyed == 4  # the state holds all the configuration makes: no lookup
    _interrupt(backend_dsn, tenant)
    runner.destroy(tenant, LOCAL_SILO, finder=finder)  # nothing in the state: everything would be created
    assert finder.calls == 1 and not _marked(backend_dsn, tenant)
