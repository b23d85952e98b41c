"""The Kubernetes Job of one run: its shape (running it needs a real cluster: `make e2e`)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from paybill.terraform.job import BACKEND_KEY, JobSpec, job_manifest
from paybill.terraform.modules import module_dir

from .conftest import state_resources

SILO = ["terraform_data.credentials", "terraform_data.database", "terraform_data.network", "terraform_data.subnets"]


def _spec(**changes: object) -> JobSpec:
    fields: dict[str, object] = dict(
        tenant_id="acme",
        run_id="a1b2c3d4e5f6",
        operation="apply",
        namespace="paybill-system",
        image="ghcr.io/paybill/operator:0.1.0",
        bundle_secret="tf-acme-a1b2c3d4e5f6-bundle",
        backend_secret="paybill-terraform-backend",
        provider_secret="paybill-aws-credentials",
        timeout_seconds=900,
        plan_hash="f" * 64,
    )
    fields.update(changes)
    return JobSpec(**fields)  # type: ignore[arg-type]


def test_one_job_per_run_with_everything_secret_from_secrets() -> None:
    job = job_manifest(_spec())
    assert job["kind"] == "Job" and job["metadata"]["name"] == "tf-acme-apply-a1b2c3d4e5f6"
    assert job["metadata"]["labels"]["paybill.dev/tenant"] == "acme"
    spec = job["spec"]
    assert spec["activeDeadlineSeconds"] == 900 and spec["backoffLimit"] == 0
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    assert container["args"][:3] == ["apply", "--tenant", "acme"] and "f" * 64 in container["args"]
    args = container["args"]
    assert args[args.index("--workspace") + 1] == "default"
    args = job_manifest(_spec(workspace="silo"))["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--workspace") + 1] == "silo"  # the operator's runs are per isolation model
    env = {item["name"]: item for item in container["env"]}
    assert env["PAYBILL_TERRAFORM_BACKEND_DSN"]["valueFrom"]["secretKeyRef"] == {
        "name": "paybill-terraform-backend",
        "key": BACKEND_KEY,
    }
    assert container["envFrom"] == [{"secretRef": {"name": "paybill-aws-credentials"}}]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert volumes["bundle"]["secret"]["secretName"] == "tf-acme-a1b2c3d4e5f6-bundle"
    mounts = {mount["name"]: mount for mount in container["volumeMounts"]}
    assert mounts["bundle"]["readOnly"] is True
    # no value in the manifest but names: only HOME is a literal, and it is a path
    assert [item["name"] for item in container["env"] if "value" in item] == ["HOME"]
    assert "postgres" not in json.dumps(job).lower().replace("paybill-terraform-backend", "")


def test_the_pod_runs_non_root_read_only_and_bounded() -> None:
    pod = job_manifest(_spec())["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    context = container["securityContext"]
    assert context["allowPrivilegeEscalation"] is False and context["readOnlyRootFilesystem"] is True
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert set(container["resources"]["limits"]) >= {"cpu", "memory"}
    assert set(container["resources"]["requests"]) >= {"cpu", "memory"}


def test_a_plan_job_without_provider_credentials_has_no_env_from() -> None:
    job = job_manifest(_spec(operation="plan", plan_hash=None, provider_secret=None, timeout_seconds=60))
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert "envFrom" not in container and "--plan-hash" not in container["args"]
    assert job["spec"]["activeDeadlineSeconds"] == 60


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"operation": "import"}, "unknown operation"),
        ({"tenant_id": "Acme;rm"}, "not a DNS label"),
        ({"plan_hash": None}, "plan_hash is required"),
        ({"run_id": "../x"}, "run id"),
        ({"timeout_seconds": 0}, "positive"),
        ({"workspace": "../silo"}, "workspace"),
    ],
)
def test_bad_specs_are_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _spec(**changes)


def test_the_jobs_entry_point_plans_then_applies_the_approved_plan(backend_dsn: str, tmp_path: Path) -> None:
    """What the Job's container runs, run here as a process: the bundle directory as the Secret mounts it."""
    bundle = tmp_path / "bundle"
    shutil.copytree(module_dir("local", "silo"), bundle)
    (bundle / "paybill.auto.tfvars.json").write_text(
        json.dumps({"tenant_id": "ignored", "plan": "gold", "region": "eu-west-1", "cost_center": "cc-1", "sizes": {}})
    )
    tenant = f"job-{secrets.token_hex(3)}"
    env = {"PATH": os.environ["PATH"], "PAYBILL_TERRAFORM_BACKEND_DSN": backend_dsn, "HOME": str(tmp_path)}

    def run(*args: str) -> dict[str, object]:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "paybill.terraform",
                *args,
                "--tenant",
                tenant,
                "--module",
                str(bundle),
                "--state-dir",
                str(tmp_path / "work"),
                "--timeout",
                "120",
                "--workspace",
                "silo",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        result: dict[str, object] = json.loads(done.stdout)
        assert backend_dsn not in done.stdout + done.stderr
        return result

    summary = run("plan")["summary"]
    assert isinstance(summary, dict) and summary["adds"] == 4
    applied = run("apply", "--plan-hash", str(summary["plan_hash"]))
    outputs = applied["outputs"]
    assert isinstance(outputs, dict) and outputs["database_name"] == f"tenant_{tenant.replace('-', '_')}"
    assert "database_password" not in outputs  # sensitive: never printed
    assert state_resources(backend_dsn, tenant, "silo") == SILO and state_resources(backend_dsn, tenant) == []
    assert run("destroy")["destroyed"] == 4


def test_a_jobs_name_keeps_its_run_id_and_the_job_is_owned_by_the_tenant() -> None:
    owner = {"apiVersion": "paybill.dev/v1alpha1", "kind": "Tenant", "name": "t" * 40, "uid": "u-1"}
    job = job_manifest(_spec(tenant_id="t" * 40, operation="plan-apply", plan_hash=None, owner=owner))
    name = job["metadata"]["name"]
    assert len(name) <= 63 and name.endswith("-a1b2c3d4e5f6") and name.startswith("tf-ttt")
    assert [(o["kind"], o["uid"]) for o in job["metadata"]["ownerReferences"]] == [("Tenant", "u-1")]
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[0] == "plan-apply" and args[args.index("--run-id") + 1] == "a1b2c3d4e5f6"
    assert job["spec"]["ttlSecondsAfterFinished"] == 3600
