"""/metrics and /readyz of a real operator (`paybill operator --metrics-bind-address`, a child process) against the
emulated API server and a real PostgreSQL: the controller-runtime series and Paybill's own, with their labels and
values, after a tenant went Active and agent workflows were decided; readiness false while the database is down."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from paybill.audit import AuditLog, FileCheckpoint
from paybill.database.server import LocalPostgres
from paybill.kubeclient import KubeError
from test_tenant_lifecycle import (
    agent_policy,
    agent_workflow,
    login,
    onboard,
    submit,
    wait_phase,
    wait_policy,
    wait_workflow,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
API = "paybill.dev/v1alpha1"
SERVING = re.compile(rb"metrics at http://([\d.]+):(\d+)/metrics")
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class Operator:
    """`paybill operator` in a child process, its log in a file, its /metrics and /readyz on a free port."""

    def __init__(self, cluster: Any, database_url: str, log: Path, **environ: str) -> None:
        self.cluster, self.log = cluster, log
        env = {
            **os.environ,
            "KUBECONFIG": str(cluster.kubeconfig),
            "PAYBILL_DATABASE_URL": database_url,
            "PAYBILL_STATE_DIR": str(log.parent / f"{log.stem}-state"),
            **environ,
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "paybill", "operator", "--metrics-bind-address", "127.0.0.1:0"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        found = cluster.eventually(lambda: self._alive() and SERVING.search(log.read_bytes()), timeout=60)
        self.url = f"http://{found.group(1).decode()}:{found.group(2).decode()}"

    def _alive(self) -> bool:
        assert self.process.poll() is None, self.log.read_text()[-3000:]
        return True

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=30) as reply:
                return reply.status, reply.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def readiness(self) -> tuple[int, dict[str, Any]]:
        status, body = self.get("/readyz")
        return status, json.loads(body)

    def samples(self) -> Samples:
        status, body = self.get("/metrics")
        assert status == 200
        return {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(body.decode())
            for sample in family.samples
        }

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def value(samples: Samples, metric: str, /, **labels: str) -> float | None:
    return samples.get((metric, frozenset(labels.items())))


def total(samples: Samples, metric: str, /, **labels: str) -> float:
    """The sum of `metric` over every series whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, series), v in samples.items() if n == metric and wanted <= series)


def labels_of(samples: Samples, metric: str) -> set[frozenset[tuple[str, str]]]:
    return {series for n, series in samples if n == metric}


@pytest.fixture
def running(cluster: Any, postgres: LocalPostgres, tmp_path: Path) -> Iterator[Operator]:
    operator = Operator(cluster, postgres.dsn, tmp_path / "operator.log")
    yield operator
    operator.stop()
    assert operator.process.returncode == 0, operator.log.read_text()[-3000:]


def test_metrics_after_a_tenant_goes_active_and_workflows_are_decided(
    running: Operator, postgres: LocalPostgres, tmp_path: Path
) -> None:
    cluster = running.cluster
    name = onboard(cluster, "pooled")
    wait_phase(cluster, name, "Active")
    namespace = f"tenant-{name}"
    with login(cluster, name) as conn:
        conn.execute("INSERT INTO customers (tenant_id, id, name) VALUES (%s, 1, 'c')", (name,))
        for key in (1, 2):
            conn.execute(
                "INSERT INTO orders (tenant_id, id, customer_id, status, total) VALUES (%s, %s, 1, 'open', 5)",
                (name, key),
            )
    cluster.kube.apply(agent_policy(namespace))
    wait_policy(cluster, namespace, "Ready")
    find: dict[str, Any] = {"name": "find", "kind": "query", "sql": "SELECT id, status FROM orders WHERE status = $1"}
    fix: dict[str, Any] = {"name": "fix", "kind": "mutation", "sql": "UPDATE orders SET status = 'x' WHERE id = $1"}
    find["params"], fix["params"] = ["open"], [1]
    wipe = {"name": "wipe", "kind": "mutation", "sql": "DELETE FROM orders WHERE id = 2"}
    submit(cluster, agent_workflow(namespace, "refund", [find, fix]))
    with pytest.raises(KubeError, match="no_allow_rule"):  # no rule allows DELETE: refused at submission
        submit(cluster, agent_workflow(namespace, "cleanup", [wipe]))
    wait_workflow(cluster, namespace, "refund", "Succeeded")

    def settled() -> Samples | None:
        """The workflow's status is written before its handler returns: wait for its reconcile to be counted."""
        samples = running.samples()
        return samples if total(samples, "controller_runtime_reconcile_total", controller="agentworkflow") else None

    samples = cluster.eventually(settled, timeout=30)
    for controller in ("tenant", "plan", "subscription", "agentpolicy", "agentworkflow"):
        reconciles = total(samples, "controller_runtime_reconcile_total", controller=controller)
        assert reconciles >= 1, controller
        assert value(samples, "controller_runtime_reconcile_total", controller=controller, result="success")
        assert value(samples, "controller_runtime_reconcile_time_seconds_count", controller=controller) == reconciles
        assert value(samples, "controller_runtime_reconcile_time_seconds_bucket", controller=controller, le="+Inf")
        assert value(samples, "controller_runtime_active_workers", controller=controller) is not None
        assert value(samples, "workqueue_adds_total", name=controller), controller
        assert value(samples, "workqueue_depth", name=controller) is not None
    quiet = cluster.eventually(  # every event delivered was taken by its worker: each queue drains
        lambda: total(s := running.samples(), "workqueue_depth") == 0 and s, timeout=30
    )
    assert total(quiet, "workqueue_adds_total") >= total(samples, "workqueue_adds_total") > 0
    results = {dict(series)["result"] for series in labels_of(samples, "controller_runtime_reconcile_total")}
    assert results <= {"success", "error", "requeue", "requeue_after"}
    errors = total(samples, "controller_runtime_reconcile_errors_total")
    assert errors == total(samples, "controller_runtime_reconcile_total", result="error")

    assert value(samples, "paybill_tenants", phase="Active", plan="plan-pooled") == 1
    assert total(samples, "paybill_tenants") == 1
    # find and fix allowed when submitted and when run (2 rows read, 1 written); wipe refused at submission
    gate = "paybill_gate_decisions_total"
    assert value(samples, gate, stage="admission", decision="allow", reason="none") == 2
    assert value(samples, gate, stage="admission", decision="deny", reason="no_allow_rule") == 1
    assert value(samples, gate, stage="run", decision="allow", reason="none") == 2
    assert total(samples, gate) == 5
    assert value(samples, "paybill_gate_decision_duration_seconds_count") >= 5  # type: ignore[operator]
    assert value(samples, "paybill_guard_rows_read_total") == 2
    assert value(samples, "paybill_guard_rows_written_total") == 1
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        length = AuditLog(lambda: conn, FileCheckpoint(tmp_path / "operator-state" / "audit")).verify()
    assert value(samples, "paybill_audit_chain_length") == length > 0
    assert not labels_of(samples, "paybill_terraform_runs_total")  # a pooled plan runs no Terraform
    assert value(samples, "process_resident_memory_bytes")  # the process collector is there too
    assert "leader_election_master_status" not in {n for n, _ in samples}  # no election: standalone

    _, body = running.get("/metrics")
    password = str(psycopg.conninfo.conninfo_to_dict(postgres.dsn)["password"])
    assert password.encode() not in body
    assert running.readiness() == (
        200,
        {"started": True, "apiServer": "ok", "database": "ok", "role": "standalone"},
    )
    assert running.get("/nothing")[0] == 404


@pytest.fixture
def own_postgres() -> Iterator[LocalPostgres]:
    """A PostgreSQL server of this test's own, to stop and start (the session's serves every other test)."""
    directory = Path(tempfile.mkdtemp(prefix="paybill-pg-ready-"))
    server = LocalPostgres(directory / "postgres", durable=False)
    server.start()
    yield server
    server.remove()
    shutil.rmtree(directory, ignore_errors=True)


def test_readiness_is_false_while_the_database_is_down(
    cluster: Any, own_postgres: LocalPostgres, tmp_path: Path
) -> None:
    operator = Operator(cluster, own_postgres.dsn, tmp_path / "operator.log")
    try:
        ready = cluster.eventually(lambda: (r := operator.readiness())[0] == 200 and r, timeout=60)
        assert ready[1]["database"] == "ok" and ready[1]["apiServer"] == "ok"
        dsn = own_postgres.dsn
        own_postgres.stop()
        _, answers = cluster.eventually(lambda: (r := operator.readiness())[0] == 503 and r, timeout=60)
        assert answers["database"].startswith("unavailable: OperationalError") and answers["apiServer"] == "ok"
        assert "password" not in json.dumps(answers)
        _, liveness_unaffected = operator.get("/metrics")
        assert b"controller_runtime_reconcile_total" in liveness_unaffected  # metrics still served
        own_postgres.start()
        assert own_postgres.dsn == dsn
        cluster.eventually(lambda: operator.readiness()[0] == 200, timeout=60)
    finally:
        operator.stop()


def test_terraform_runs_are_counted_by_operation_and_result_with_their_duration(
    running: Operator, postgres: LocalPostgres
) -> None:
    cluster = running.cluster
    provisioning = {"cloud": "local", "approval": "auto", "costCenter": "cc-7", "region": "us-east-1"}
    plan = {"tier": "tf-silo", "isolation": "silo", "provisioning": provisioning}
    cluster.kube.apply({"apiVersion": API, "kind": "Plan", "metadata": {"name": "tf-silo"}, "spec": plan})
    name = f"m-{secrets.token_hex(3)}"
    cluster.kube.apply(
        {"apiVersion": API, "kind": "Tenant", "metadata": {"name": name}, "spec": {"planRef": "tf-silo"}}
    )

    def active() -> dict[str, Any] | None:  # Terraform under a loaded machine: a longer wait than wait_phase's
        current = (cluster.kube.get(API, "tenants", name) or {}).get("status") or {}
        return current if current.get("phase") == "Active" else None

    assert cluster.eventually(active, timeout=240)["infrastructure"]["lastResult"] == "Succeeded"

    def counted() -> Samples | None:
        """The run is counted when it ends, the tenant when its worker takes the Active event: wait for both."""
        samples = running.samples()
        ran = value(samples, "paybill_terraform_run_duration_seconds_count", operation="apply")
        return samples if ran and value(samples, "paybill_tenants", phase="Active", plan="tf-silo") else None

    samples = cluster.eventually(counted, timeout=30)
    assert value(samples, "paybill_terraform_runs_total", operation="apply", result="Succeeded") == 1
    assert total(samples, "paybill_terraform_runs_total", operation="apply") == 1
    assert value(samples, "paybill_terraform_run_duration_seconds_count", operation="apply") == 1
    assert 0 < value(samples, "paybill_terraform_run_duration_seconds_sum", operation="apply") < 600  # type: ignore[operator]
    assert value(samples, "paybill_tenants", phase="Active", plan="tf-silo") == 1
