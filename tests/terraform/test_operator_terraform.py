"""Terraform through the operator: real kopf, the emulated API server, the real PostgreSQL (state per tenant in the
pg backend) and the real Terraform on the `local` modules. A Plan's spec.provisioning makes each of its tenants
Active only once its module is applied; failures, approvals and destroys show in the Tenant's status."""

from __future__ import annotations

import base64
import itertools
import secrets
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import psycopg.sql
import pytest

from paybill.audit import AuditLog
from paybill.database.server import LocalPostgres
from paybill.terraform import workspaces as records
from paybill.terraform.backend import application_name, schema_for
from paybill.terraform.modules import module_dir

from .conftest import state_resources

API = "paybill.dev/v1alpha1"
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
_names = itertools.count()
CONCURRENCY = 4
SILO = ["terraform_data.credentials", "terraform_data.database", "terraform_data.network", "terraform_data.subnets"]


@pytest.fixture
def modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """PAYBILL_TERRAFORM_MODULES_DIR for module overrides (set before the operator starts)."""
    root = tmp_path / "modules"
    root.mkdir()
    monkeypatch.setenv("PAYBILL_TERRAFORM_MODULES_DIR", str(root))
    monkeypatch.setenv("PAYBILL_TERRAFORM_TIMEOUT", "120")
    monkeypatch.setenv("PAYBILL_TERRAFORM_CONCURRENCY", str(CONCURRENCY))
    return root


@pytest.fixture
def tf_operator(modules: Path, operator: Any) -> Iterator[Any]:
    yield operator


def silo_module(root: Path, name: str, extra: str = "") -> Path:
    """The shipped local/silo module under another name, with `extra` resources."""
    target = root / name
    shutil.copytree(module_dir("local", "silo"), target)
    (target / "extra.tf").write_text(extra)
    return target


def plan(
    name: str, approval: str = "auto", module: str | None = None, isolation: str = "silo", region: str = "us-east-1"
) -> dict[str, Any]:
    provisioning: dict[str, Any] = {"cloud": "local", "approval": approval, "costCenter": "cc-7", "region": region}
    if module is not None:
        provisioning["module"] = module
    return {
        "apiVersion": API,
        "kind": "Plan",
        "metadata": {"name": name},
        "spec": {"tier": name, "isolation": isolation, "provisioning": provisioning},
    }


def onboard(cluster: Any, plan_name: str, name: str | None = None, **spec: Any) -> str:
    name = name or f"tf{next(_names)}-{secrets.token_hex(3)}"
    cluster.kube.apply(
        {"apiVersion": API, "kind": "Tenant", "metadata": {"name": name}, "spec": {"planRef": plan_name, **spec}}
    )
    return name


def status(cluster: Any, name: str) -> dict[str, Any]:
    return (cluster.kube.get(API, "tenants", name) or {}).get("status") or {}


def condition(cluster: Any, name: str, type_: str) -> dict[str, Any]:
    return next((c for c in status(cluster, name).get("conditions", []) if c["type"] == type_), {})


def events(cluster: Any, name: str) -> list[dict[str, Any]]:
    return [e for e in cluster.kube.list("v1", "events") if e["involvedObject"].get("name") == name]


def dsn(postgres: LocalPostgres) -> str:
    return psycopg.conninfo.make_conninfo(postgres.dsn, sslmode="disable")


def test_a_silo_tenant_goes_active_only_once_its_module_is_applied_and_its_outputs_land_in_its_secret(
    tf_operator: Any, postgres: LocalPostgres
) -> None:
    cluster = tf_operator
    cluster.kube.apply(plan("tf-silo"))
    name = onboard(cluster, "tf-silo")
    seen_active_unapplied = []

    def active() -> dict[str, Any] | None:
        current = status(cluster, name)
        if current.get("phase") == "Active" and not (current.get("infrastructure") or {}).get("appliedDigest"):
            seen_active_unapplied.append(current)
        return (
            current
            if current.get("phase") == "Active" and condition(cluster, name, "Ready").get("status") == "True"
            else None
        )

    current = cluster.eventually(active, timeout=120)
    assert seen_active_unapplied == []
    infrastructure = current["infrastructure"]
    assert infrastructure["lastResult"] == "Succeeded" and infrastructure["module"] == "local/silo"
    assert (infrastructure["adds"], infrastructure["changes"], infrastructure["destroys"]) == (4, 0, 0)
    assert infrastructure["appliedHash"] == infrastructure["planHash"] and len(infrastructure["planHash"]) == 64
    assert infrastructure["artifact"].endswith(infrastructure["planHash"])
    assert condition(cluster, name, "Provisioned")["status"] == "True"
    assert state_resources(dsn(postgres), name, "silo") == SILO
    secret = cluster.kube.get("v1", "secrets", "paybill-infrastructure", f"tenant-{name}")
    outputs = {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}
    assert outputs["database_name"] == f"tenant_{name.replace('-', '_')}" and len(outputs["database_password"]) == 32
    assert secret["metadata"]["ownerReferences"][0]["kind"] == "Tenant"
    everywhere = str(cluster.kube.get(API, "tenants", name)) + str(events(cluster, name))
    assert outputs["database_password"] not in everywhere  # a sensitive output is in the Secret only
    reasons = [e["reason"] for e in events(cluster, name)]
    assert "Provisioning" in reasons and "InfrastructureApplied" in reasons and "Active" in reasons


def test_an_apply_that_fails_says_terraforms_message_then_succeeds_once_fixed(
    tf_operator: Any, modules: Path, postgres: LocalPostgres, tmp_path: Path
) -> None:
    cluster, marker = tf_operator, tmp_path / "gate-open"
    gate = f"""
resource "terraform_data" "gate" {{
  input = {{ tags = local.tags }}
  provisioner "local-exec" {{
    command = "test -f {marker} || (echo 'gate: the marker is missing' >&2; exit 1)"
  }}
}}
"""
    silo_module(modules, "gated", gate)
    cluster.kube.apply(plan("tf-gated", module="gated"))
    name = onboard(cluster, "tf-gated")

    def failed() -> dict[str, Any] | None:
        said = condition(cluster, name, "Provisioned")
        return said if said.get("reason") == "ApplyFailed" else None

    said = cluster.eventually(failed, timeout=120)
    assert "gate: the marker is missing" in said["message"] and said["status"] == "False"
    assert status(cluster, name)["phase"] == "Failed"
    assert any(e["type"] == "Warning" and e["reason"] == "ApplyFailed" for e in events(cluster, name))
    marker.touch()
    current = cluster.eventually(
        lambda: status(cluster, name).get("phase") == "Active" and status(cluster, name), timeout=120
    )
    assert current["infrastructure"]["lastResult"] == "Succeeded" and current["infrastructure"]["failures"] == 0
    assert "terraform_data.gate" in state_resources(dsn(postgres), name, "silo")


def test_manual_approval_applies_nothing_under_a_wrong_hash_and_exactly_the_approved_plan(
    tf_operator: Any, postgres: LocalPostgres
) -> None:
    cluster = tf_operator
    cluster.kube.apply(plan("tf-manual", approval="manual"))
    name = onboard(cluster, "tf-manual")

    def awaiting() -> dict[str, Any] | None:
        said = condition(cluster, name, "Provisioned")
        return said if said.get("reason") == "AwaitingApproval" else None

    said = cluster.eventually(awaiting, timeout=120)
    plan_hash = status(cluster, name)["infrastructure"]["planHash"]
    assert plan_hash in said["message"] and "4 to add" in said["message"]
    assert status(cluster, name)["phase"] == "Provisioning" and state_resources(dsn(postgres), name, "silo") == []

    wrong = "0" * 64
    cluster.kube.merge_patch(API, "tenants", name, {"metadata": {"annotations": {"paybill.dev/approve-plan": wrong}}})
    refused = cluster.eventually(
        lambda: (
            condition(cluster, name, "Provisioned").get("reason") == "ApprovalMismatch"
            and condition(cluster, name, "Provisioned")
        ),
        timeout=60,
    )
    assert f"does not name the pending plan {plan_hash}: nothing applied" in refused["message"]
    assert state_resources(dsn(postgres), name, "silo") == [] and status(cluster, name)["phase"] == "Provisioning"
    assert any(e["type"] == "Warning" and e["reason"] == "ApprovalMismatch" for e in events(cluster, name))

    cluster.kube.merge_patch(
        API, "tenants", name, {"metadata": {"annotations": {"paybill.dev/approve-plan": plan_hash}}}
    )
    current = cluster.eventually(
        lambda: status(cluster, name).get("phase") == "Active" and status(cluster, name), timeout=120
    )
    assert current["infrastructure"]["appliedHash"] == plan_hash
    assert state_resources(dsn(postgres), name, "silo") == SILO
    with psycopg.connect(postgres.dsn, autocommit=True) as connection:
        approved = [
            (r.details["planHash"], r.details["adds"], r.details["workspace"])
            for r in AuditLog(lambda: connection).records("Tenant", name)
            if r.event == "terraform-plan-applied-on-approval"
        ]
    assert approved == [(plan_hash, 4, "silo")]  # once, the approved plan only (the wrong hash applied nothing)


def test_a_plan_whose_module_breaks_the_contract_is_refused_and_its_tenant_starts_no_run(
    tf_operator: Any, modules: Path, postgres: LocalPostgres
) -> None:
    cluster = tf_operator
    broken = silo_module(modules, "broken")
    outputs = (broken / "outputs.tf").read_text()
    (broken / "outputs.tf").write_text(outputs.replace('output "network_id"', 'output "network"'))
    cluster.kube.apply(plan("tf-broken", module="broken"))
    ready = cluster.eventually(
        lambda: next(
            (
                c
                for c in ((cluster.kube.get(API, "plans", "tf-broken") or {}).get("status") or {}).get("conditions", [])
                if c["type"] == "Ready" and c["reason"] == "ProvisioningInvalid"
            ),
            None,
        ),
        timeout=30,
    )
    assert "module broken: output network_id is missing" in ready["message"]
    name = onboard(cluster, "tf-broken")
    said = cluster.eventually(
        lambda: (
            condition(cluster, name, "Provisioned").get("reason") == "ProvisioningInvalid"
            and condition(cluster, name, "Provisioned")
        ),
        timeout=60,
    )
    assert "output network_id is missing" in said["message"]
    assert status(cluster, name)["phase"] == "Provisioning" and "infrastructure" not in status(cluster, name)
    assert state_resources(dsn(postgres), name, "silo") == []


def test_offboarding_destroys_and_a_failing_destroy_is_visible_and_retried(
    tf_operator: Any, modules: Path, postgres: LocalPostgres, tmp_path: Path
) -> None:
    cluster, marker = tf_operator, tmp_path / "may-destroy"
    guard = f"""
resource "terraform_data" "guard" {{
  input = {{ tags = local.tags }}
  provisioner "local-exec" {{
    when    = destroy
    command = "test -f {marker} || (echo 'guard: destroying is not allowed yet' >&2; exit 1)"
  }}
}}
"""
    silo_module(modules, "guarded", guard)
    cluster.kube.apply(plan("tf-guarded", module="guarded"))
    name = onboard(cluster, "tf-guarded", deletionPolicy="destroy")
    cluster.eventually(lambda: status(cluster, name).get("phase") == "Active", timeout=120)
    assert "terraform_data.guard" in state_resources(dsn(postgres), name, "silo")

    cluster.kube.delete(API, "tenants", name)
    failed = cluster.eventually(
        lambda: (
            condition(cluster, name, "Ready").get("reason") == "OffboardFailed" and condition(cluster, name, "Ready")
        ),
        timeout=120,
    )
    assert "guard: destroying is not allowed yet" in failed["message"]
    assert cluster.kube.get(API, "tenants", name) is not None  # held by its finalizer, and says why
    assert any(e["type"] == "Warning" and e["reason"] == "OffboardFailed" for e in events(cluster, name))
    marker.touch()
    cluster.eventually(lambda: cluster.kube.get(API, "tenants", name) is None, timeout=120)
    assert state_resources(dsn(postgres), name, "silo") == []


def test_drift_is_found_on_the_plans_schedule_and_re_applied_when_it_says_auto_remediate(
    tf_operator: Any, postgres: LocalPostgres
) -> None:
    cluster = tf_operator
    drifting = plan("tf-drift")
    drifting["spec"]["provisioning"]["driftCheckSeconds"] = 1
    cluster.kube.apply(drifting)
    name = onboard(cluster, "tf-drift")
    cluster.eventually(lambda: status(cluster, name).get("phase") == "Active", timeout=120)
    cluster.eventually(lambda: condition(cluster, name, "Drifted").get("status") == "False", timeout=60)

    schema = psycopg.sql.Identifier(schema_for(name))
    with psycopg.connect(dsn(postgres), autocommit=True) as connection:  # out of band: the network's CIDR moved
        connection.execute(
            psycopg.sql.SQL("UPDATE {}.states SET data = replace(data, %s, %s) WHERE name = 'silo'").format(schema),
            ['"10.0.0.0/16"', '"10.9.0.0/16"'],
        )
    drifted = cluster.eventually(
        lambda: condition(cluster, name, "Drifted").get("status") == "True" and condition(cluster, name, "Drifted"),
        timeout=60,
    )
    assert "terraform_data.network" in drifted["message"] and status(cluster, name)["phase"] == "Active"
    assert "terraform_data.network" in status(cluster, name)["infrastructure"]["drifted"]
    applied_before = status(cluster, name)["infrastructure"]["appliedHash"]

    drifting["spec"]["provisioning"]["autoRemediate"] = True
    cluster.kube.apply(drifting)
    cluster.eventually(lambda: condition(cluster, name, "Drifted").get("status") == "False", timeout=120)
    assert status(cluster, name)["infrastructure"]["appliedHash"] != applied_before  # a new plan was applied
    with psycopg.connect(dsn(postgres), autocommit=True) as connection:
        data = connection.execute(
            psycopg.sql.SQL("SELECT data FROM {}.states WHERE name = 'silo'").format(schema)
        ).fetchone()
    assert data is not None and '"10.0.0.0/16"' in data[0] and '"10.9.0.0/16"' not in data[0]


def terraform_runs(root: Path) -> int:
    """Runs with a Terraform command going now under `root`: the distinct working directories (one per run; a
    run may have two commands at once, its apply and the `show -json` of its plan)."""
    workdirs = set()
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            if proc.name.isdigit() and Path(argv[0].decode(errors="replace")).name == "terraform":
                cwd = (proc / "cwd").resolve()
                if cwd.is_relative_to(root):
                    workdirs.add(cwd)
        except OSError:
            continue
    return len(workdirs)


def test_twenty_tenants_provisioning_at_once_all_end_active_with_at_most_four_runs_at_a_time(
    tf_operator: Any, postgres: LocalPostgres, tmp_path: Path
) -> None:
    cluster = tf_operator
    cluster.kube.apply(plan("tf-many"))
    started = time.monotonic()
    names = [onboard(cluster, "tf-many") for _ in range(20)]
    active_at: dict[str, float] = {}
    most = 0

    def all_active() -> bool:
        nonlocal most
        most = max(most, terraform_runs(tmp_path.resolve()))
        for tenant in cluster.kube.list(API, "tenants"):
            name = tenant["metadata"]["name"]
            if name in names and name not in active_at and (tenant.get("status") or {}).get("phase") == "Active":
                active_at[name] = time.monotonic() - started
        return len(active_at) == len(names)

    cluster.eventually(all_active, timeout=400, interval=0.05)
    assert 1 <= most <= CONCURRENCY
    for name in names:
        assert state_resources(dsn(postgres), name, "silo") == SILO
    times = sorted(active_at.values())
    p50, p95 = times[9], times[18]
    print(
        f"20 tenants, {CONCURRENCY} runs at once: to Active p50 {p50:.1f}s p95 {p95:.1f}s max {times[-1]:.1f}s",
        file=sys.__stdout__,  # past the capture, for `pytest -s` and the log of a run
    )


def test_a_change_of_isolation_model_builds_the_new_infrastructure_moves_the_data_then_destroys_the_old(
    tf_operator: Any, postgres: LocalPostgres
) -> None:
    cluster = tf_operator
    cluster.kube.apply(plan("tf-pool", isolation="pooled"))
    cluster.kube.apply(plan("tf-own", isolation="silo"))
    name = onboard(cluster, "tf-pool")
    cluster.eventually(lambda: status(cluster, name).get("phase") == "Active", timeout=120)
    assert state_resources(dsn(postgres), name, "pooled") == SILO  # the local modules share resource names
    assert status(cluster, name)["infrastructure"]["workspace"] == "pooled"

    cluster.kube.merge_patch(API, "tenants", name, {"spec": {"planRef": "tf-own"}})

    def moved_and_retired() -> dict[str, Any] | None:
        current = status(cluster, name)
        run = current.get("infrastructure") or {}
        done = current.get("isolation") == "silo" and run.get("workspace") == "silo" and not run.get("retiring")
        return current if done and current.get("phase") == "Active" and not run.get("running") else None

    current = cluster.eventually(moved_and_retired, timeout=180)
    assert current["infrastructure"]["module"] == "local/silo"
    assert state_resources(dsn(postgres), name, "silo") == SILO
    assert state_resources(dsn(postgres), name, "pooled") == []  # the old model's infrastructure is gone
    assert "Migrated" in [e["reason"] for e in events(cluster, name)]


@pytest.fixture
def quick_locks(modules: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Short lock waits, and a lock held 2 s by a runner that is gone counts as stale (before the operator starts)."""
    monkeypatch.setenv("PAYBILL_TERRAFORM_LOCK_TIMEOUT", "2")
    monkeypatch.setenv("PAYBILL_TERRAFORM_STALE_LOCK_SECONDS", "2")


def test_a_state_lock_left_by_a_runner_that_is_gone_is_released_audited_and_the_run_goes_on(
    quick_locks: None, operator: Any, postgres: LocalPostgres
) -> None:
    cluster = operator
    locked = plan("tf-locked")
    cluster.kube.apply(locked)
    name = onboard(cluster, "tf-locked")
    first = cluster.eventually(
        lambda: status(cluster, name).get("phase") == "Active" and status(cluster, name), timeout=120
    )
    gone = "fedcba987654"  # a runner instance (a process before a restart, a replica on a lost node) that is gone
    holder = psycopg.connect(
        dsn(postgres), autocommit=True, application_name=application_name("deadbeef0000", instance=gone)
    )
    try:
        key = holder.execute(
            psycopg.sql.SQL("SELECT id FROM {}.states WHERE name = 'silo'").format(
                psycopg.sql.Identifier(schema_for(name))
            )
        ).fetchone()[0]  # type: ignore[index]
        holder.execute("SELECT pg_advisory_lock(%s)", [key])  # as a runner killed mid-run on a partitioned network
        age = "SELECT extract(epoch FROM now() - state_change) FROM pg_stat_activity WHERE pid = %s"  # silent since
        with psycopg.connect(dsn(postgres), autocommit=True) as watcher:
            cluster.eventually(lambda: watcher.execute(age, [holder.info.backend_pid]).fetchone()[0] > 2.5, timeout=30)  # type: ignore[index]
        locked["spec"]["provisioning"]["costCenter"] = "cc-8"  # a change to apply: its plan needs the lock
        cluster.kube.apply(locked)
        cluster.eventually(
            lambda: (
                (status(cluster, name).get("infrastructure") or {}).get("appliedDigest")
                not in (None, first["infrastructure"]["appliedDigest"])
            ),
            timeout=120,
        )
        with pytest.raises(psycopg.OperationalError):
            holder.execute("SELECT 1")  # its session was ended: that released the lock
    finally:
        holder.close()
    with psycopg.connect(postgres.dsn, autocommit=True) as connection:
        released = [
            r.details
            for r in AuditLog(lambda: connection).records("Tenant", name)
            if r.event == "terraform-lock-released"
        ]
    assert len(released) == 1 and released[0]["lock_key"] == key
    assert released[0]["reason"].startswith(f"runner {gone} on ") and "no session active" in released[0]["reason"]
    assert released[0]["holder_application"].startswith(f"paybill-tf/{gone}/deadbeef0000/")


def guarded_destroy(root: Path, name: str, marker: Path, base: str = "silo") -> Path:
    """The shipped local module `base` with a resource whose destroy fails until `marker` exists."""
    target = root / name
    shutil.copytree(module_dir("local", base), target)
    (target / "guard.tf").write_text(
        f"""
resource "terraform_data" "guard" {{
  input = {{ tags = local.tags }}
  provisioner "local-exec" {{
    when    = destroy
    command = "test -f {marker} || (echo 'guard: destroying is not allowed yet' >&2; exit 1)"
  }}
}}
"""
    )
    return target


def test_a_forged_destroyed_status_never_skips_the_teardown_of_what_the_state_holds(
    tf_operator: Any, modules: Path, postgres: LocalPostgres, tmp_path: Path
) -> None:
    """Offboarding rests on the Terraform state in PostgreSQL, not on status: a status saying the infrastructure
    is destroyed (or saying nothing of it) while the tenant's workspace still holds resources tears nothing less
    down; the finalizer stays until the state is empty."""
    cluster, marker = tf_operator, tmp_path / "may-destroy"
    guarded_destroy(modules, "forged", marker)
    cluster.kube.apply(plan("tf-forged", module="forged"))
    name = onboard(cluster, "tf-forged", deletionPolicy="destroy")
    cluster.eventually(lambda: status(cluster, name).get("phase") == "Active", timeout=120)
    built = state_resources(dsn(postgres), name, "silo")
    assert "terraform_data.guard" in built

    cluster.kube.delete(API, "tenants", name)
    cluster.eventually(lambda: condition(cluster, name, "Ready").get("reason") == "OffboardFailed", timeout=120)
    forged = {"destroyed": True, "appliedDigest": None, "lastRun": "apply", "lastResult": "Succeeded"}
    cluster.kube.merge_patch(API, "tenants", name, {"status": {"infrastructure": forged}}, subresource="status")
    run_before = status(cluster, name)["infrastructure"]["runId"]

    def retried_or_gone() -> bool:
        current = cluster.kube.get(API, "tenants", name)
        if current is None:
            return True
        run = (current.get("status") or {}).get("infrastructure") or {}
        return run.get("runId") != run_before and run.get("lastRun") == "destroy" and run.get("lastResult") == "Failed"

    cluster.eventually(retried_or_gone, timeout=120)
    assert state_resources(dsn(postgres), name, "silo") == ["terraform_data.guard"]  # its destroy keeps failing
    assert cluster.kube.get(API, "tenants", name) is not None, "the Tenant went while its state still holds resources"
    marker.touch()
    cluster.eventually(lambda: cluster.kube.get(API, "tenants", name) is None, timeout=120)
    assert state_resources(dsn(postgres), name, "silo") == []


def regional_module(root: Path, name: str, base: str, region: str) -> Path:
    """The shipped local module `base`, refusing (in any plan, a destroy's too) a region other than `region`: the
    stand-in for a cloud provider, which finds a resource only in the region it was built in."""
    target = root / name
    shutil.copytree(module_dir("local", base), target)
    variables = (target / "variables.tf").read_text()
    start = variables.index('variable "region" {')
    end = variables.index("}", start)
    check = f"""  validation {{
    condition     = var.region == "{region}"
    error_message = "Built in {region} only."
  }}
"""
    (target / "variables.tf").write_text(variables[:end] + check + variables[end:])
    return target


def test_the_model_left_is_destroyed_with_the_inputs_it_was_applied_with(
    tf_operator: Any, modules: Path, postgres: LocalPostgres
) -> None:
    """A change of plan that changes the isolation model and the region: the old model's workspace is destroyed
    with the region it was built in (recorded when applied), not the new plan's, and under deletionPolicy snapshot
    whatever the Tenant's (the move copies the operator's tables, not what applications wrote into the module's
    databases and buckets: re-attack finding)."""
    cluster = tf_operator
    regional_module(modules, "pooled-eu", "pooled", "eu-west-1")
    cluster.kube.apply(plan("tf-eu-pool", isolation="pooled", module="pooled-eu", region="eu-west-1"))
    cluster.kube.apply(plan("tf-us-silo", isolation="silo", region="us-east-1"))
    name = onboard(cluster, "tf-eu-pool", deletionPolicy="destroy")
    cluster.eventually(lambda: status(cluster, name).get("phase") == "Active", timeout=120)
    assert state_resources(dsn(postgres), name, "pooled") == SILO

    cluster.kube.merge_patch(API, "tenants", name, {"spec": {"planRef": "tf-us-silo"}})

    def retired() -> dict[str, Any] | None:
        current = status(cluster, name)
        run = current.get("infrastructure") or {}
        done = current.get("isolation") == "silo" and run.get("workspace") == "silo" and not run.get("retiring")
        return current if done and not run.get("running") else None

    def why() -> str:
        return f"the pooled workspace destroyed; status: {status(cluster, name).get('infrastructure')}"

    cluster.eventually(retired, timeout=180)
    assert state_resources(dsn(postgres), name, "pooled") == [], why()
    assert state_resources(dsn(postgres), name, "silo") == SILO
    with psycopg.connect(dsn(postgres)) as connection:
        destroyed_with = records.workspaces(connection, name)["pooled"].variables
    assert (destroyed_with["region"], destroyed_with["deletion_policy"]) == ("eu-west-1", "snapshot")


def test_a_tenant_name_too_long_for_its_clouds_resource_names_is_refused_with_a_condition(tf_operator: Any) -> None:
    """A name of 41-56 characters is a valid Tenant, but too long to be provisioned (paybill-<name> is an RDS
    identifier and an S3 bucket, at most 63): said on the Tenant, naming the limit, with a Warning; no run."""
    cluster = tf_operator
    cluster.kube.apply(plan("tf-long"))
    name = onboard(cluster, "tf-long", name=f"tf-{secrets.token_hex(3)}-" + "x" * 34)  # 44 characters
    said = cluster.eventually(
        lambda: (
            condition(cluster, name, "Provisioned").get("reason") == "TenantNameTooLong"
            and condition(cluster, name, "Provisioned")
        ),
        timeout=60,
    )
    assert f"tenant name {name} has 44 characters" in said["message"] and "at most 40" in said["message"]
    assert "spec.provisioning of the plan" not in said["message"]  # the plan is fine; the name is not
    assert status(cluster, name)["phase"] == "Provisioning" and "infrastructure" not in status(cluster, name)
    assert any(e["type"] == "Warning" and e["reason"] == "TenantNameTooLong" for e in events(cluster, name))


def test_a_failing_tenant_and_a_hanging_one_hold_up_no_other_tenant(
    tf_operator: Any, modules: Path, tmp_path: Path
) -> None:
    """One tenant whose apply fails (and is retried with backoff) and one whose apply hangs (holding its run slot
    until the run's timeout) leave the other slots to everyone else: three other tenants turn Active meanwhile."""
    cluster, release = tf_operator, tmp_path / "release"
    silo_module(
        modules,
        "failing",
        """
resource "terraform_data" "broken" {
  input = { tags = local.tags }
  provisioner "local-exec" {
    command = "echo 'broken: this apply always fails' >&2; exit 1"
  }
}
""",
    )
    silo_module(
        modules,
        "hanging",
        f"""
resource "terraform_data" "stuck" {{
  input = {{ tags = local.tags }}
  provisioner "local-exec" {{
    command = "while [ ! -e {release} ]; do sleep 0.2; done"
  }}
}}
""",
    )
    for name, module in (("tf-failing", "failing"), ("tf-hanging", "hanging"), ("tf-fine", None)):
        cluster.kube.apply(plan(name, module=module))
    failing, hanging = onboard(cluster, "tf-failing"), onboard(cluster, "tf-hanging")
    cluster.eventually(lambda: (status(cluster, hanging).get("infrastructure") or {}).get("running"), timeout=60)
    try:
        others = [onboard(cluster, "tf-fine") for _ in range(3)]
        cluster.eventually(lambda: all(status(cluster, n).get("phase") == "Active" for n in others), timeout=180)
        assert condition(cluster, failing, "Provisioned").get("reason") in ("ApplyFailed", "Applying")
        assert (status(cluster, failing).get("infrastructure") or {}).get("failures", 0) >= 1
        assert status(cluster, failing)["phase"] in ("Failed", "Provisioning")
        assert (status(cluster, hanging).get("infrastructure") or {}).get("running") == "apply"  # still stuck
        assert status(cluster, hanging)["phase"] == "Provisioning"
    finally:
        release.touch()
    cluster.eventually(lambda: status(cluster, hanging).get("phase") == "Active", timeout=120)


def test_a_plan_lacking_its_clouds_credentials_is_refused_and_its_tenant_starts_no_run(tf_operator: Any) -> None:
    """Bad input at the Plan, before any run: an aws plan without credentialsSecret names the keys it needs."""
    cluster = tf_operator
    spec = {"tier": "tf-nocreds", "isolation": "silo", "provisioning": {"cloud": "aws", "region": "us-east-1"}}
    cluster.kube.apply({"apiVersion": API, "kind": "Plan", "metadata": {"name": "tf-nocreds"}, "spec": spec})

    def refused() -> dict[str, Any] | None:
        plan_status = (cluster.kube.get(API, "plans", "tf-nocreds") or {}).get("status") or {}
        ready = next((c for c in plan_status.get("conditions", []) if c["type"] == "Ready"), {})
        return ready if ready.get("reason") == "ProvisioningInvalid" else None

    ready = cluster.eventually(refused, timeout=60)
    assert "needs provider credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)" in ready["message"]
    name = onboard(cluster, "tf-nocreds")
    said = cluster.eventually(
        lambda: (
            condition(cluster, name, "Provisioned").get("reason") == "ProvisioningInvalid"
            and condition(cluster, name, "Provisioned")
        ),
        timeout=60,
    )
    assert "AWS_SECRET_ACCESS_KEY" in said["message"] and "infrastructure" not in status(cluster, name)


def test_a_new_tenant_of_a_deleted_tenants_name_is_provisioned_not_held_by_the_old_ones_run(
    tf_operator: Any, postgres: LocalPostgres
) -> None:
    """The runs this operator finished are the deleted Tenant object's (its uid), never its name's."""
    cluster = tf_operator
    cluster.kube.apply(plan("tf-reused"))
    name = onboard(cluster, "tf-reused", deletionPolicy="destroy")
    cluster.eventually(lambda: status(cluster, name).get("phase") == "Active", timeout=120)
    cluster.kube.delete(API, "tenants", name)
    cluster.eventually(lambda: cluster.kube.get(API, "tenants", name) is None, timeout=120)
    onboard(cluster, "tf-reused", name=name, deletionPolicy="destroy")
    cluster.eventually(lambda: status(cluster, name).get("phase") == "Active", timeout=120)
    assert status(cluster, name)["infrastructure"]["lastResult"] == "Succeeded"
    assert state_resources(dsn(postgres), name, "silo") == SILO


def test_deleting_a_tenant_refused_the_names_retained_data_destroys_none_of_its_infrastructure(
    tf_operator: Any, postgres: LocalPostgres
) -> None:
    """The retained tenant's infrastructure (in the name's workspaces) is not a later Tenant's of that name to destroy
    unless it adopts the data."""
    cluster = tf_operator
    cluster.kube.apply(plan("tf-kept"))
    name = onboard(cluster, "tf-kept", deletionPolicy="retain")
    cluster.eventually(lambda: status(cluster, name).get("phase") == "Active", timeout=120)
    cluster.kube.delete(API, "tenants", name)
    cluster.eventually(lambda: cluster.kube.get(API, "tenants", name) is None, timeout=120)
    onboard(cluster, "tf-kept", name=name, deletionPolicy="destroy")
    cluster.eventually(lambda: condition(cluster, name, "Ready").get("reason") == "NameConflict", timeout=120)
    cluster.kube.delete(API, "tenants", name)
    cluster.eventually(lambda: cluster.kube.get(API, "tenants", name) is None, timeout=120)
    assert state_resources(dsn(postgres), name, "silo") == SILO


def test_a_pooled_tenants_name_stays_held_after_it_goes_so_no_later_tenant_is_given_its_prefix(
    tf_operator: Any, modules: Path
) -> None:
    """An outsider's review: a pooled tenant's objects under tenants/<name>/ in the pool's bucket are not
    Terraform's, and outlive its destroy; a later Tenant of the same name was given a role on exactly that prefix.
    Offboarded (under destroy), the tenant says where its objects stay, and a new Tenant of its name is refused,
    nothing built for it, until it adopts them deliberately."""
    cluster = tf_operator
    shutil.copytree(module_dir("local", "pooled"), modules / "prefixed")
    cluster.kube.apply(plan("tf-prefixed", module="prefixed", isolation="pooled"))
    name = onboard(cluster, "tf-prefixed", deletionPolicy="destroy")
    cluster.eventually(lambda: status(cluster, name).get("phase") == "Active", timeout=180)
    assert status(cluster, name)["infrastructure"]["poolObjects"] is True  # stays, whatever model comes next
    cluster.kube.merge_patch(API, "tenants", name, {"spec": {"offboard": True}})
    cluster.eventually(lambda: status(cluster, name).get("phase") == "Offboarded", timeout=180)
    kept = [e for e in events(cluster, name) if e["reason"] == "PoolObjectsKept"]
    assert kept and kept[0]["type"] == "Warning" and f"tenants/{name}/" in kept[0]["message"]
    first_uid = cluster.kube.get(API, "tenants", name)["metadata"]["uid"]
    cluster.kube.delete(API, "tenants", name)
    cluster.eventually(lambda: cluster.kube.get(API, "tenants", name) is None, timeout=120)

    onboard(cluster, "tf-prefixed", name=name)
    refused = cluster.eventually(
        lambda: (said := condition(cluster, name, "Ready")).get("reason") == "NameConflict" and said, timeout=120
    )
    assert f"uid {first_uid}" in refused["message"] and "retained" in refused["message"]
    assert (status(cluster, name).get("infrastructure") or {}).get("runId") is None  # nothing run for it
