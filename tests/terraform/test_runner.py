"""The runner against the real Terraform binary and the real PostgreSQL (pg backend, a schema per tenant)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import secrets
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from paybill.terraform import (
    ModuleInputs,
    PlanHashMismatch,
    PlanNotFound,
    RunTimedOut,
    StalePlan,
    TerraformError,
    TerraformRunner,
)
from paybill.terraform.backend import schema_for
from paybill.terraform.process import group_alive

from .conftest import LOCAL_SILO, state_resources, wait_for, write_module

SILO_RESOURCES = [
    "terraform_data.credentials",
    "terraform_data.database",
    "terraform_data.network",
    "terraform_data.subnets",
]


def test_local_module_plan_apply_outputs_destroy_with_state_in_postgres(
    make_runner: Callable[..., TerraformRunner],
    tenant: ModuleInputs,
    backend_dsn: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    runner = make_runner()
    summary = runner.plan(tenant, LOCAL_SILO)
    assert (summary.adds, summary.changes, summary.destroys) == (4, 0, 0)
    assert len(summary.plan_hash) == 64 and summary.artifact.endswith(summary.plan_hash)
    assert state_resources(backend_dsn, tenant.tenant_id) == []  # planning changes nothing

    result = runner.apply_plan(tenant, LOCAL_SILO, summary.plan_hash, approved_hash=summary.plan_hash)
    assert state_resources(backend_dsn, tenant.tenant_id) == SILO_RESOURCES
    outputs = result.outputs.values
    assert outputs["database_name"].value == f"tenant_{tenant.tenant_id.replace('-', '_')}"
    assert outputs["database_password"].sensitive and len(outputs["database_password"].value) == 32
    assert "database_password" not in result.outputs.public()
    assert outputs["database_password"].value not in repr(result)
    assert set(result.outputs.secret_data()) == set(outputs)

    stored = runner.plans.plan_json(tenant.tenant_id, summary.plan_hash)
    assert stored is not None and stored["planned_values"]["outputs"]["database_password"]["value"] == "(sensitive)"
    assert runner.outputs(tenant, LOCAL_SILO) == result.outputs  # `terraform output -json` agrees with the state

    assert outputs["database_password"].value not in caplog.text  # python_terraform logs output: silenced
    destroyed = runner.destroy(tenant, LOCAL_SILO)
    assert destroyed.destroyed == 4
    assert state_resources(backend_dsn, tenant.tenant_id) == []


def test_failing_apply_gives_terraforms_message_without_secrets(
    make_runner: Callable[..., TerraformRunner], tenant: ModuleInputs, modules_dir: Path
) -> None:
    secret = "sk-" + secrets.token_hex(8)
    module = write_module(
        modules_dir / "failing",
        """
resource "terraform_data" "broken" {
  input = var.tenant_id
  provisioner "local-exec" {
    command = "echo \\"cannot reach the API with key $PROVIDER_KEY\\" >&2; exit 3"
  }
}
""",
    )
    runner = make_runner(env={"PROVIDER_KEY": secret})
    with pytest.raises(TerraformError) as failure:
        runner.apply(tenant, module)
    assert failure.value.command == "apply" and failure.value.exit_code == 1
    assert "local-exec provisioner error" in failure.value.message
    assert "Output: cannot reach the API with key" in failure.value.message  # Terraform wraps the line here
    assert failure.value.message.endswith("***")
    assert secret not in str(failure.value)


def test_hanging_run_is_killed_at_its_timeout_with_its_process_group(
    make_runner: Callable[..., TerraformRunner], tenant: ModuleInputs, modules_dir: Path
) -> None:
    marker = f"{600 + secrets.randbelow(300)}.{secrets.randbelow(10**6)}"
    module = write_module(
        modules_dir / "hanging",
        f"""
resource "terraform_data" "slow" {{
  input = var.tenant_id
  provisioner "local-exec" {{
    command = "sleep {marker}"
  }}
}}
""",
    )
    runner = make_runner(timeout=25, concurrency=1)
    started = time.monotonic()
    with pytest.raises(RunTimedOut) as timed_out:
        runner.apply(tenant, module)
    assert timed_out.value.command == "apply"
    assert time.monotonic() - started < 25 + 2 * 3 + 10  # the timeout, the kill's grace periods, slack
    wait_for(lambda: not group_alive(timed_out.value.process_group), 10, "process group gone")
    assert not [pid for pid in os.listdir("/proc") if pid.isdigit() and marker in _cmdline(pid)]

    # the slot is free again: another tenant's run goes through on this one-slot runner
    other = ModuleInputs(f"{tenant.tenant_id}-next", "gold", "eu-west-1", "cc-42")
    assert runner.apply(other, LOCAL_SILO).summary.adds == 4


def test_a_plan_applies_only_under_its_own_hash_and_only_while_fresh(
    make_runner: Callable[..., TerraformRunner], tenant: ModuleInputs, backend_dsn: str
) -> None:
    runner = make_runner()
    first = runner.plan(tenant, LOCAL_SILO)
    with pytest.raises(PlanHashMismatch):
        runner.apply_plan(tenant, LOCAL_SILO, first.plan_hash, approved_hash="0" * 64)
    with pytest.raises(PlanNotFound):
        runner.apply_plan(tenant, LOCAL_SILO, "0" * 64, approved_hash="0" * 64)
    assert state_resources(backend_dsn, tenant.tenant_id) == []

    second = runner.plan(tenant, LOCAL_SILO)
    runner.apply_plan(tenant, LOCAL_SILO, second.plan_hash, approved_hash=second.plan_hash)
    assert state_resources(backend_dsn, tenant.tenant_id) == SILO_RESOURCES
    with pytest.raises(StalePlan):  # planned against a state that has changed since
        runner.apply_plan(tenant, LOCAL_SILO, first.plan_hash, approved_hash=first.plan_hash)


def test_drift_in_the_recorded_state_is_detected_with_its_addresses(
    make_runner: Callable[..., TerraformRunner], tenant: ModuleInputs, backend_dsn: str
) -> None:
    runner = make_runner()
    runner.apply(tenant, LOCAL_SILO)
    assert not runner.drift(tenant, LOCAL_SILO).drifted

    schema = sql.Identifier(schema_for(tenant.tenant_id))
    with psycopg.connect(backend_dsn, autocommit=True) as connection:  # out of band: the network's CIDR moved
        changed = connection.execute(
            sql.SQL("UPDATE {}.states SET data = replace(data, %s, %s)").format(schema),
            ['"10.0.0.0/16"', '"10.9.0.0/16"'],
        ).rowcount
    assert changed == 1
    report = runner.drift(tenant, LOCAL_SILO)
    assert report.drifted and "terraform_data.network" in report.addresses
    assert report.summary is not None and report.summary.changes >= 1


def test_parallel_runs_never_exceed_the_concurrency_limit(
    make_runner: Callable[..., TerraformRunner], tenant: ModuleInputs, modules_dir: Path, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    (gate / "running").mkdir(parents=True)
    (gate / "seen").mkdir()
    module = write_module(
        modules_dir / "gated",
        f"""
resource "terraform_data" "work" {{
  input = var.tenant_id
  provisioner "local-exec" {{
    command = <<-EOT
      touch {gate}/running/${{var.tenant_id}}
      ls {gate}/running | wc -l > {gate}/seen/${{var.tenant_id}}
      while [ ! -e {gate}/release ]; do sleep 0.05; done
      rm {gate}/running/${{var.tenant_id}}
    EOT
  }}
}}
""",
    )
    limit, total = 2, 5
    runner = make_runner(concurrency=limit)
    tenants = [ModuleInputs(f"{tenant.tenant_id}-{i}", "gold", "eu-west-1", "cc-42") for i in range(total)]
    errors: list[BaseException] = []

    def apply(inputs: ModuleInputs) -> None:
        try:
            runner.apply(inputs, module)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=apply, args=(inputs,)) for inputs in tenants]
    for thread in threads:
        thread.start()
    wait_for(
        lambda: len(list((gate / "running").iterdir())) == limit and runner.waiting_runs == total - limit,
        90,
        lambda: (
            f"{limit} runs working, {total - limit} waiting (running: "
            f"{sorted(p.name for p in (gate / 'running').iterdir())}, waiting: {runner.waiting_runs}, {errors})"
        ),
    )
    (gate / "release").touch()
    for thread in threads:
        thread.join(120)
    assert not errors
    seen = [int(path.read_text()) for path in (gate / "seen").iterdir()]
    assert len(seen) == total and max(seen) <= limit


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def test_init_runs_once_per_configuration_and_again_when_it_changes(
    make_runner: Callable[..., TerraformRunner], tenant: ModuleInputs, modules_dir: Path, tmp_path: Path
) -> None:
    runner = make_runner()
    runner.apply(tenant, LOCAL_SILO)
    templates = tmp_path / "state" / "init"
    assert len(list(templates.iterdir())) == 1
    again = ModuleInputs(tenant.tenant_id, "platinum", tenant.region, tenant.cost_center, {"storage_gib": 40})
    assert runner.apply(again, LOCAL_SILO).summary.changes == 4  # from the kept data directory, no init
    assert len(list(templates.iterdir())) == 1
    changed = modules_dir / "changed"
    shutil.copytree(LOCAL_SILO, changed)
    (changed / "extra.tf").write_text('output "extra" {\n  value = var.plan\n}\n')
    assert runner.apply(again, changed).outputs.values["extra"].value == "platinum"
    assert len(list(templates.iterdir())) == 2


def test_each_workspace_of_a_tenant_is_a_state_of_its_own(
    make_runner: Callable[..., TerraformRunner], tenant: ModuleInputs, backend_dsn: str
) -> None:
    """One state per isolation model: a tenant moving to another model gets the new one built before the old one
    is destroyed."""
    runner = make_runner()
    pooled, silo = (dataclasses.replace(tenant, workspace=name) for name in ("pooled", "silo"))
    first = runner.apply(pooled, LOCAL_SILO)
    second = runner.apply(silo, LOCAL_SILO)
    assert (first.summary.adds, second.summary.adds) == (4, 4)  # nothing of the other workspace is seen
    assert first.outputs.values["network_id"].value != second.outputs.values["network_id"].value
    assert runner.state_outputs(tenant.tenant_id, "pooled").values["network_id"] == first.outputs.values["network_id"]
    assert runner.destroy(pooled, LOCAL_SILO).destroyed == 4
    assert runner.state_outputs(tenant.tenant_id, "pooled").values == {}
    assert runner.state_outputs(tenant.tenant_id, "silo").values["network_id"] == second.outputs.values["network_id"]
    assert state_resources(backend_dsn, tenant.tenant_id) == []  # the default workspace was never used
    with pytest.raises(ValueError, match="workspace"):
        dataclasses.replace(tenant, workspace="Silo; DROP")


def test_a_new_workspace_of_a_known_tenant_is_made_by_a_run_from_a_fresh_init(
    make_runner: Callable[..., TerraformRunner], tenant: ModuleInputs, modules_dir: Path
) -> None:
    """A tenant moving to another model: its state table exists, the new model's module has never been initialized
    here (no init template to copy), and its workspace is not in the table yet."""
    runner = make_runner()
    runner.apply(dataclasses.replace(tenant, workspace="pooled"), LOCAL_SILO)
    other = write_module(modules_dir / "other", 'resource "terraform_data" "x" {\n  input = var.tenant_id\n}\n')
    assert runner.apply(dataclasses.replace(tenant, workspace="silo"), other).summary.adds == 1


def test_each_workspace_says_what_its_state_holds_and_what_it_was_applied_with(
    make_runner: Callable[..., TerraformRunner], tenant: ModuleInputs
) -> None:
    """What offboarding and a model's retirement rest on: resources counted in the state in PostgreSQL, and the
    module and inputs recorded before the apply (a destroy uses them, whatever the plan says by then)."""
    runner = make_runner()
    assert runner.workspaces(tenant.tenant_id) == {}
    silo = dataclasses.replace(tenant, workspace="silo", region="eu-central-1")
    runner.record_applied(silo, "local/silo", "creds")
    runner.apply(silo, LOCAL_SILO)
    found = runner.workspaces(tenant.tenant_id)["silo"]
    assert (found.resources, found.module, found.credentials_secret) == (4, "local/silo", "creds")
    assert found.variables == silo.variables() and found.variables["region"] == "eu-central-1"
    runner.destroy(silo, LOCAL_SILO)
    assert runner.workspaces(tenant.tenant_id)["silo"].resources == 0


def test_the_configuration_applied_and_each_plans_configuration_are_recorded_in_postgresql(
    make_runner: Callable[..., TerraformRunner], tenant: ModuleInputs
) -> None:
    """What 'applied' and an approved plan rest on, never the Tenant's status: the config digest recorded once an
    apply succeeded (cleared when the next one starts), and the config digest each saved plan was made for."""
    runner = make_runner()
    silo = dataclasses.replace(tenant, workspace="silo")
    runner.record_applied(silo, "local/silo", None)
    assert runner.workspaces(tenant.tenant_id)["silo"].config_digest is None  # an apply under way is not applied
    runner.apply(silo, LOCAL_SILO)
    runner.record_applied(silo, "local/silo", None, config_digest="d1")
    assert runner.workspaces(tenant.tenant_id)["silo"].config_digest == "d1"
    runner.record_applied(silo, "local/silo", None)
    assert runner.workspaces(tenant.tenant_id)["silo"].config_digest is None
    runner.record_planned(tenant.tenant_id, "h1", "d1")
    assert runner.planned_digest(tenant.tenant_id, "h1") == "d1"
    assert runner.planned_digest(tenant.tenant_id, "h2") is None
    assert runner.planned_digest(tenant.tenant_id + "x", "h1") is None


def test_a_new_tenants_first_init_waits_for_the_backends_shared_creation_lock(
    make_runner: Callable[..., TerraformRunner], tenant: ModuleInputs, backend_dsn: str
) -> None:
    """The pg backend makes a new workspace under one advisory lock (-1) shared by every schema of the database:
    two new tenants' first inits at once collide on it (CI: a tenant failed with "Error acquiring the state lock",
    Operation: init). The init retries it for the lock timeout, as every other command does, instead of failing."""
    runner = make_runner(lock_timeout=20.0)
    with psycopg.connect(backend_dsn, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(-1)")
        release = threading.Timer(2.0, lambda: holder.execute("SELECT pg_advisory_unlock(-1)"))
        started = time.monotonic()
        release.start()
        try:
            applied = runner.apply(dataclasses.replace(tenant, workspace="silo"), LOCAL_SILO)
        finally:
            release.join()
    assert applied.summary.adds == 4
    assert time.monotonic() - started >= 2.0  # it waited for the lock rather than going round it


def test_a_generated_password_kept_in_terraform_data_never_reaches_the_kept_plan(
    make_runner: Callable[..., TerraformRunner], tenant: ModuleInputs, modules_dir: Path
) -> None:
    """The shipped modules make their database passwords in terraform_data, whose output carries no sensitive mark
    (an outsider's review found the RDS master password in every kept plan): a value Terraform marks anywhere is
    masked everywhere in the plan JSON kept in PostgreSQL."""
    module = write_module(
        modules_dir / "password",
        'resource "terraform_data" "password" {\n  input = sensitive(replace(uuid(), "-", ""))\n'
        "  lifecycle {\n    ignore_changes = [input]\n  }\n}\n"
        'resource "terraform_data" "database" {\n  input = { password = terraform_data.password.output }\n}\n'
        'output "database_password" {\n  value     = terraform_data.password.output\n  sensitive = true\n}\n',
    )
    runner = make_runner()
    password = runner.apply(tenant, module).outputs.values["database_password"].value
    (module / "more.tf").write_text('resource "terraform_data" "more" {\n  input = 1\n}\n')
    summary = runner.plan(tenant, module)
    assert summary.adds == 1
    kept = runner.plans.plan_json(tenant.tenant_id, summary.plan_hash)
    assert kept is not None and password not in json.dumps(kept)
    assert kept["resource_changes"][1]["change"]["after"]["input"] == 1  # what is no secret stays readable


def test_a_module_changed_since_its_last_recorded_apply_is_told_apart_from_drift(
    make_runner: Callable[..., TerraformRunner], tenant: ModuleInputs, modules_dir: Path
) -> None:
    """What the settle before a destroy may apply depends on it: drift and imports put right (the module as last
    applied) go along; a changed module's other changes wait for their own apply (a re-attack's expiry rule)."""
    from paybill.terraform import workspaces as records

    module = write_module(modules_dir / "kept", 'resource "terraform_data" "x" {\n  input = var.tenant_id\n}\n')
    runner = make_runner()
    assert runner._changed_since_applied(tenant, module) is False  # no recorded apply: nothing to compare
    runner.apply(tenant, module)
    digest = records.config_digest(module, tenant.variables(), None, tenant.workspace)
    runner.record_applied(tenant, "kept", None, digest)
    assert runner._changed_since_applied(tenant, module) is False
    retained = dataclasses.replace(tenant, deletion_policy="retain")  # the policy alone is no module change
    assert runner._changed_since_applied(retained, module) is False
    (module / "main.tf").write_text('resource "terraform_data" "x" {\n  input = "${var.tenant_id}-2"\n}\n')
    assert runner._changed_since_applied(tenant, module) is True
