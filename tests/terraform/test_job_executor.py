"""The Kubernetes Job executor through the operator (PAYBILL_TERRAFORM_EXECUTOR=job). The emulated API server has no
Job controller and no kubelet: the test plays both. It watches Jobs in the operator's namespace and runs each Job's
container command as a local process, with the Job's env (values and Secret references resolved as a kubelet does)
and its volumes materialized into a temporary directory at the mount paths the manifest names (a wrong mount, env
name, Secret or key in the manifest fails the run), then writes the Job's Complete or Failed condition as the Job
controller does. A Job whose tenant's name starts with `stuck` is left running forever (say, an image never pulled)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import psycopg
import pytest

from paybill.database.server import LocalPostgres
from paybill.kubeclient import Kube, KubeError

from .conftest import state_resources
from .test_operator_terraform import SILO, condition, dsn, events, onboard, plan, silo_module, status

NAMESPACE = "paybill-system"
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


class JobController:
    """The Job controller and the kubelet, for the Jobs of one namespace."""

    def __init__(self, kubeconfig: Path, root: Path) -> None:
        self.kube = Kube(kubernetes.config.new_client_from_config(config_file=str(kubeconfig)))
        self.root = root
        self.jobs: dict[str, dict[str, Any]] = {}  # name -> the Job as created
        self.problems: list[str] = []  # what a kubelet would have refused to start
        self.outputs: dict[str, str] = {}  # name -> the container's stdout and stderr
        self.errors: list[str] = []  # the controller's own troubles with the API server, for a failure's message
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> JobController:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _watch(self) -> None:
        """List, start what is new, watch from the listing for a moment; again (a watch that breaks is listed over)."""
        while not self._stop.is_set():
            try:
                listing = self.kube.request("GET", f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs")
                for job in listing["items"]:
                    self._seen(job)
                version = listing["metadata"]["resourceVersion"]
                for event in self.kube.watch("batch/v1", "jobs", version, timeout_seconds=2, namespace=NAMESPACE):
                    if event.get("type") == "ADDED":
                        self._seen(event["object"])
            except Exception as exc:  # the API server busy or a watch expired: listed again
                self.errors.append(repr(exc))
                self._stop.wait(0.5)

    def _seen(self, job: dict[str, Any]) -> None:
        name = job["metadata"]["name"]
        if name not in self.jobs:
            self.jobs[name] = job
            threading.Thread(target=self._start, args=(job,), daemon=True).start()

    def _start(self, job: dict[str, Any]) -> None:
        if job["metadata"]["labels"]["paybill.dev/tenant"].startswith("stuck"):
            return  # never scheduled: the operator's run timeout ends it
        name = job["metadata"]["name"]
        try:
            argv, env, cwd = self._container(job)
        except (KeyError, LookupError) as exc:
            self.problems.append(f"{name}: {exc!r}")
            self._finish(job, False, "CreateContainerConfigError")
            return
        done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
        self.outputs[name] = done.stdout + done.stderr
        self._finish(job, done.returncode == 0, "BackoffLimitExceeded")

    def _container(self, job: dict[str, Any]) -> tuple[list[str], dict[str, str], Path]:
        """The pod's one container as a process: command, env, and its volume mounts under a directory of its own."""
        namespace, pod = job["metadata"]["namespace"], job["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        volumes = {volume["name"]: volume for volume in pod["volumes"]}
        sandbox = self.root / job["metadata"]["name"]
        mounts: dict[str, str] = {}
        for mount in container["volumeMounts"]:
            volume, local = volumes[mount["name"]], sandbox / mount["mountPath"].strip("/")
            local.mkdir(parents=True)
            if "secret" in volume:
                for key, value in self._secret(namespace, volume["secret"]["secretName"]).items():
                    (local / key).write_bytes(value)
            elif "emptyDir" not in volume:
                raise LookupError(f"volume {mount['name']} is neither a Secret nor an emptyDir")
            mounts[mount["mountPath"]] = str(local)

        def seen(text: str) -> str:  # a path inside the container, as the process here sees it
            for path, local in mounts.items():
                if text == path or text.startswith(path + "/"):
                    return local + text[len(path) :]
            return text

        env = {"PATH": os.environ["PATH"]}  # the image's PATH
        for source in container.get("envFrom") or []:
            env |= {k: v.decode() for k, v in self._secret(namespace, source["secretRef"]["name"]).items()}
        for item in container["env"]:
            if "value" in item:
                env[item["name"]] = seen(item["value"])
            else:
                ref = item["valueFrom"]["secretKeyRef"]
                env[item["name"]] = self._secret(namespace, ref["name"])[ref["key"]].decode()
        command = [sys.executable if part == "python" else part for part in container["command"]]
        return command + [seen(arg) for arg in container["args"]], env, sandbox

    def _secret(self, namespace: str, name: str) -> dict[str, bytes]:
        found = self.kube.get("v1", "secrets", name, namespace)
        if found is None:
            raise LookupError(f"secret {namespace}/{name} not found")
        return {key: base64.b64decode(value) for key, value in (found.get("data") or {}).items()}

    def _finish(self, job: dict[str, Any], succeeded: bool, reason: str) -> None:
        kind = "Complete" if succeeded else "Failed"
        condition_ = {"type": kind, "status": "True", **({} if succeeded else {"reason": reason})}
        counts = {"succeeded": 1} if succeeded else {"failed": 1}
        try:
            self.kube.merge_patch(
                "batch/v1",
                "jobs",
                job["metadata"]["name"],
                {"status": {"conditions": [condition_], **counts}},
                job["metadata"]["namespace"],
                subresource="status",
            )
        except KubeError as exc:
            if exc.status != 404:
                raise


@pytest.fixture
def job_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Path:
    root = tmp_path / "modules"
    root.mkdir()
    monkeypatch.setenv("PAYBILL_TERRAFORM_MODULES_DIR", str(root))
    monkeypatch.setenv("PAYBILL_TERRAFORM_TIMEOUT", str(getattr(request, "param", 240)))
    monkeypatch.setenv("PAYBILL_TERRAFORM_EXECUTOR", "job")
    monkeypatch.setenv("PAYBILL_OPERATOR_NAMESPACE", NAMESPACE)
    monkeypatch.setenv("PAYBILL_TERRAFORM_JOB_IMAGE", "registry.test/paybill:job")
    return root


@pytest.fixture
def jobs(job_env: Path, cluster: Any, tmp_path: Path) -> Iterator[JobController]:
    cluster.kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    with JobController(cluster.kubeconfig, tmp_path / "kubelet") as controller:
        yield controller


@pytest.fixture
def job_operator(jobs: JobController, operator: Any) -> Any:
    return operator


def _run_records(postgres: LocalPostgres, tenant: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(postgres.dsn, autocommit=True) as connection:
        return connection.execute(
            "SELECT operation, succeeded, result, output FROM paybill_terraform.job_runs WHERE tenant_id = %s"
            " ORDER BY finished_at",
            [tenant],
        ).fetchall()


def test_a_silo_tenant_goes_active_through_a_job_and_its_run_record_holds_the_jobs_output(
    job_operator: Any, jobs: JobController, postgres: LocalPostgres
) -> None:
    cluster = job_operator
    cluster.kube.apply(plan("job-silo"))
    name = onboard(cluster, "job-silo")
    current = cluster.eventually(
        lambda: status(cluster, name).get("phase") in ("Active", "Failed") and status(cluster, name), timeout=240
    )
    assert current["phase"] == "Active", (current, jobs.problems, jobs.outputs, jobs.errors)
    infrastructure = current["infrastructure"]
    assert infrastructure["lastResult"] == "Succeeded" and (infrastructure["adds"], infrastructure["destroys"]) == (
        4,
        0,
    )
    assert state_resources(dsn(postgres), name, "silo") == SILO
    assert jobs.problems == []
    secret = cluster.kube.get("v1", "secrets", "paybill-infrastructure", f"tenant-{name}")
    assert secret is not None and "database_password" in secret["data"]  # sensitive outputs from the state

    # the Job as the operator made it: owned by the tenant, bounded, never retried by Kubernetes, nothing secret inline
    [job] = [job for job in jobs.jobs.values() if job["metadata"]["labels"]["paybill.dev/tenant"] == name]
    tenant = cluster.kube.get("paybill.dev/v1alpha1", "tenants", name)
    assert [(o["kind"], o["name"], o["uid"]) for o in job["metadata"]["ownerReferences"]] == [
        ("Tenant", name, tenant["metadata"]["uid"])
    ]
    assert job["spec"]["backoffLimit"] == 0 and job["spec"]["activeDeadlineSeconds"] == 240
    assert job["spec"]["ttlSecondsAfterFinished"] > 0
    password = str(psycopg.conninfo.conninfo_to_dict(postgres.dsn).get("password") or "")
    assert password and password not in json.dumps(job)
    # its bundle Secret is gone once the run ended
    bundle = job["spec"]["template"]["spec"]["volumes"][0]["secret"]["secretName"]
    assert cluster.kube.get("v1", "secrets", bundle, NAMESPACE) is None

    [(operation, succeeded, result, output)] = _run_records(postgres, name)
    assert operation == "plan-apply" and succeeded
    assert result["summary"]["adds"] == 4 and result["summary"]["plan_hash"] == infrastructure["appliedHash"]
    assert "database_password" not in result["outputs"] and json.loads(output) == result

    # offboarding destroys through another Job
    cluster.kube.delete("paybill.dev/v1alpha1", "tenants", name)
    cluster.eventually(lambda: cluster.kube.get("paybill.dev/v1alpha1", "tenants", name) is None, timeout=240)
    assert state_resources(dsn(postgres), name, "silo") == []
    assert [(op, ok, result.get("destroyed")) for op, ok, result, _ in _run_records(postgres, name)][1:] == [
        ("destroy", True, 4)
    ]


def test_a_failing_job_says_terraforms_message(
    job_operator: Any, jobs: JobController, job_env: Path, postgres: LocalPostgres
) -> None:
    cluster = job_operator
    gate = """
resource "terraform_data" "gate" {
  input = { tags = local.tags }
  provisioner "local-exec" {
    command = "echo 'gate: the marker is missing' >&2; exit 1"
  }
}
"""
    silo_module(job_env, "gated", gate)
    cluster.kube.apply(plan("job-gated", module="gated"))
    name = onboard(cluster, "job-gated")

    def failed() -> dict[str, Any] | None:
        said = condition(cluster, name, "Provisioned")
        return said if said.get("reason") == "ApplyFailed" else None

    said = cluster.eventually(failed, timeout=240)
    assert said["status"] == "False" and "gate: the marker is missing" in said["message"]
    assert any(e["type"] == "Warning" and e["reason"] == "ApplyFailed" for e in events(cluster, name))
    assert jobs.problems == []
    records = _run_records(postgres, name)
    assert records and records[0][1] is False and "gate: the marker is missing" in records[0][3]


@pytest.mark.parametrize("job_env", [8], indirect=True)
def test_a_job_that_never_finishes_fails_at_the_run_timeout_and_is_deleted(
    job_operator: Any, jobs: JobController
) -> None:
    cluster = job_operator
    cluster.kube.apply(plan("job-stuck"))
    name = onboard(cluster, "job-stuck", name="stuck-job")

    def failed() -> dict[str, Any] | None:
        said = condition(cluster, name, "Provisioned")
        return said if said.get("reason") == "ApplyFailed" else None

    said = cluster.eventually(failed, timeout=120)
    assert "did not finish within the run timeout (8s): deleted" in said["message"]
    first = next(job for job in jobs.jobs.values() if job["metadata"]["labels"]["paybill.dev/tenant"] == name)
    assert cluster.kube.get("batch/v1", "jobs", first["metadata"]["name"], NAMESPACE) is None
    assert status(cluster, name)["phase"] != "Active"


@pytest.fixture
def chart_job_operator(
    jobs: JobController, cluster: Any, postgres: LocalPostgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    """The operator (kopf in this process) as the chart's ServiceAccount, under the chart's roles rendered with
    terraform.executor=job."""
    from kopf.testing import KopfRunner

    from chart.rendering import template
    from chart.webhooks import register_on_loopback, serve_webhooks_over_tls
    from paybill.kube import write_service_account_kubeconfig

    shown = ("--show-only", "templates/serviceaccount.yaml", "--show-only", "templates/rbac.yaml")
    rbac = template({"terraform": {"executor": "job"}}, *shown, namespace=NAMESPACE)
    for doc in rbac:
        cluster.kube.apply(doc)
    kubeconfig = write_service_account_kubeconfig(
        cluster.kubeconfig, NAMESPACE, "paybill-operator", tmp_path / "operator.kubeconfig"
    )
    # the chart registers the admission webhooks, the operator only serves them (HTTPS, here on loopback)
    port, certificate_authority = serve_webhooks_over_tls(tmp_path / "webhook", monkeypatch)
    webhooks = template(None, "--show-only", "templates/webhook.yaml", namespace=NAMESPACE)
    register_on_loopback(cluster.kube, webhooks, port, certificate_authority)
    cluster.api.access.recorder = []
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.setenv("PAYBILL_DATABASE_URL", postgres.dsn)
    monkeypatch.setenv("PAYBILL_BACKUP_DIR", str(tmp_path / "backups"))
    monkeypatch.setenv("PAYBILL_STATE_DIR", str(tmp_path / "state"))
    with KopfRunner(["run", "--all-namespaces", "--standalone", "-m", "paybill.handlers"], timeout=120) as runner:
        yield cluster
    assert runner.exit_code == 0, runner.output


@pytest.mark.parametrize("job_env", [60], indirect=True)
def test_the_chart_role_lets_the_operator_run_jobs_in_its_namespace_and_no_more(
    chart_job_operator: Any, jobs: JobController
) -> None:
    cluster = chart_job_operator
    operator = f"system:serviceaccount:{NAMESPACE}:paybill-operator"
    cluster.kube.apply(plan("job-chart"))
    done = onboard(cluster, "job-chart")
    stuck = onboard(cluster, "job-chart", name="stuck-chart")
    try:
        cluster.eventually(lambda: status(cluster, done).get("phase") == "Active", timeout=240)
        cluster.eventually(
            lambda: (
                "did not finish within the run timeout" in condition(cluster, stuck, "Provisioned").get("message", "")
            ),
            timeout=240,
        )
    finally:
        denied = [message for attributes, message in cluster.api.access.denied if attributes.user.username == operator]
        assert denied == [], "\n".join(sorted(set(denied)))
    used = {
        (attributes.verb, attributes.namespace)
        for attributes, decision in cluster.api.access.recorder or []
        if attributes.user.username == operator and decision.allowed and attributes.combined_resource == "jobs"
    }
    assert used == {(verb, NAMESPACE) for verb in ("create", "list", "watch", "delete")}
