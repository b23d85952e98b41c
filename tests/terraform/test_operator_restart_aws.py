"""The operator and its Terraform killed with SIGKILL in the middle of an AWS apply against moto (issue 14's test):
the operator started again runs the apply again, the tenant ends Active, and boto3 finds each of its resources in
moto once: nothing made twice by the second apply.

Terraform writes the state to the pg backend at the end of an apply (and every 20 s during a long one), so what the
killed apply had made since is in moto but not in the state. The runner knows the apply never finished (its mark in
paybill_terraform.applying), finds the tenant's objects through the AWS adapter (tags, and the names the module
gives), and adopts them with `import {}` blocks before planning again; the adoption is in the audit chain."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest

from paybill.audit import AuditLog
from paybill.database.server import LocalPostgres

from . import aws_sim
from .test_operator_aws import moto  # noqa: F401  (the fixture: moto, the provider mirror, the credentials Secret)
from .test_operator_restart_terraform import applying, start_operator

API = "paybill.dev/v1alpha1"
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def test_an_aws_apply_killed_with_its_operator_is_run_again_and_makes_nothing_twice_in_moto(
    moto: tuple[Path, str],  # noqa: F811
    cluster: Any,
    postgres: LocalPostgres,
    tmp_path: Path,
) -> None:
    python, url = moto
    state, modules = tmp_path / "state", tmp_path / "modules"
    state.mkdir()
    modules.mkdir()
    provisioning = {"cloud": "aws", "region": aws_sim.REGION, "credentialsSecret": "aws-credentials"}
    plan = {"tier": "aws-killed", "isolation": "silo", "provisioning": provisioning}
    cluster.kube.apply({"apiVersion": API, "kind": "Plan", "metadata": {"name": "aws-killed"}, "spec": plan})
    name = f"killed-{secrets.token_hex(3)}"
    spec = {"planRef": "aws-killed", "deletionPolicy": "destroy"}
    cluster.kube.apply({"apiVersion": API, "kind": "Tenant", "metadata": {"name": name}, "spec": spec})

    def found() -> dict[str, list[str]]:
        return aws_sim.find_by_tag(python, url, "paybill.dev/tenant", name)

    operator = start_operator(cluster, postgres, state, modules)
    try:
        cluster.eventually(lambda: bool(applying(state)) and bool(found()["vpc"]), timeout=900, interval=1)
        groups = applying(state)
        os.killpg(operator.pid, signal.SIGKILL)  # the operator, and with it (the node gone) its Terraform
        for group in groups:
            os.killpg(group, signal.SIGKILL)
        operator.wait(10)
        status = (cluster.kube.get(API, "tenants", name) or {}).get("status") or {}
        assert status.get("phase") != "Active" and (status.get("infrastructure") or {}).get("running") == "apply"

        operator = start_operator(cluster, postgres, state, modules)

        def settled() -> dict[str, Any] | None:
            current = (cluster.kube.get(API, "tenants", name) or {}).get("status") or {}
            run = current.get("infrastructure") or {}
            return current if current.get("phase") == "Active" or run.get("lastResult") == "Failed" else None

        current = cluster.eventually(settled, timeout=900, interval=1)
        resources = found()
        assert current["phase"] == "Active", f"{current['infrastructure'].get('message')}; in moto: {resources}"
        assert (len(resources["vpc"]), len(resources["subnet"]), len(resources["security_group"])) == (1, 2, 1), (
            resources
        )
        assert resources["db_instance"] == [f"paybill-{name}"] and resources["s3_bucket"] == [f"paybill-{name}"]
        assert resources["iam_role"] == [f"paybill-{name}"]
        with psycopg.connect(postgres.dsn, autocommit=True) as connection:
            records = AuditLog(lambda: connection).records("Tenant", name)
            adopted = [r.details for r in records if r.event == "terraform-resources-adopted"]
        assert len(adopted) == 1 and {"address": "aws_vpc.tenant", "id": resources["vpc"][0]} in adopted[0]["imports"]
        cluster.kube.delete(API, "tenants", name)
        cluster.eventually(lambda: cluster.kube.get(API, "tenants", name) is None, timeout=900, interval=1)
        assert all(not ids for ids in found().values())
    finally:
        operator.send_signal(signal.SIGTERM)
        try:
            operator.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(operator.pid, signal.SIGKILL)
