"""The operator and its Terraform killed with SIGKILL in the middle of an apply (the node went away): the operator
started again finds the run recorded in status but not running, runs it again, and the tenant ends Active with
each resource in its state once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from paybill.database.server import LocalPostgres
from paybill.terraform.backend import schema_for

from .test_operator_terraform import API, SILO, silo_module

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def start_operator(cluster: Any, postgres: LocalPostgres, state: Path, modules: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "KUBECONFIG": str(cluster.kubeconfig),
        "PAYBILL_DATABASE_URL": postgres.dsn,
        "PAYBILL_STATE_DIR": str(state),
        "PAYBILL_TERRAFORM_MODULES_DIR": str(modules),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "paybill", "operator"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=(state.parent / "operator.log").open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def applying(state: Path) -> list[int]:
    """Process groups of the `terraform apply` commands running in this operator's run directories."""
    groups = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            cwd = (proc / "cwd").resolve()
        except OSError:
            continue
        if proc.name.isdigit() and b"apply" in argv and str(cwd).startswith(str(state)):
            groups.append(os.getpgid(int(proc.name)))
    return groups


def instances(dsn: str, tenant: str) -> dict[str, int]:
    """Each managed resource in the tenant's silo state, with how many instances it has."""
    with psycopg.connect(dsn, autocommit=True) as connection:
        row = connection.execute(
            sql.SQL("SELECT data FROM {}.states WHERE name = 'silo'").format(sql.Identifier(schema_for(tenant)))
        ).fetchone()
    resources = json.loads(row[0])["resources"] if row and row[0] else []
    return {f"{r['type']}.{r['name']}": len(r["instances"]) for r in resources if r["mode"] == "managed"}


def test_an_apply_killed_with_its_operator_is_run_again_and_each_resource_made_once(
    cluster: Any, postgres: LocalPostgres, tmp_path: Path
) -> None:
    state, modules = tmp_path / "state", tmp_path / "modules"
    state.mkdir()
    slow = 'resource "terraform_data" "slow" {\n  input = { tags = local.tags }\n'
    slow += '  provisioner "local-exec" {\n    command = "sleep 3"\n  }\n}\n'
    silo_module(modules, "slow", slow)
    spec = {"tier": "slow", "isolation": "silo", "provisioning": {"cloud": "local", "module": "slow"}}
    cluster.kube.apply({"apiVersion": API, "kind": "Plan", "metadata": {"name": "tf-slow"}, "spec": spec})
    cluster.kube.apply(
        {"apiVersion": API, "kind": "Tenant", "metadata": {"name": "killed"}, "spec": {"planRef": "tf-slow"}}
    )
    operator = start_operator(cluster, postgres, state, modules)
    try:
        groups = cluster.eventually(lambda: applying(state) or None, timeout=120, interval=0.05)
        os.killpg(operator.pid, signal.SIGKILL)  # the operator, and with it (the node gone) its Terraform
        for group in groups:
            os.killpg(group, signal.SIGKILL)
        operator.wait(10)
        status = (cluster.kube.get(API, "tenants", "killed") or {}).get("status") or {}
        assert status.get("phase") != "Active" and (status.get("infrastructure") or {}).get("running") == "apply"

        operator = start_operator(cluster, postgres, state, modules)
        current = cluster.eventually(
            lambda: (
                ((cluster.kube.get(API, "tenants", "killed") or {}).get("status") or {}).get("phase") == "Active"
                and cluster.kube.get(API, "tenants", "killed")["status"]
            ),
            timeout=240,
        )
        assert current["infrastructure"]["lastResult"] == "Succeeded" and not current["infrastructure"].get("running")
        dsn = psycopg.conninfo.make_conninfo(postgres.dsn, sslmode="disable")
        assert instances(dsn, "killed") == {name: 1 for name in [*SILO, "terraform_data.slow"]}
    finally:
        operator.send_signal(signal.SIGTERM)
        try:
            operator.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(operator.pid, signal.SIGKILL)
