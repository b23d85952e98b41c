"""The Kubernetes Job that runs one Terraform run in production (pure: a manifest from a typed spec).

One Job per run. Nothing secret is inline: the run bundle (the module's files and its tfvars), the backend
DSN and the provider credentials come from Secrets, mounted read-only or referenced by key. The Job lives
no longer than the run's timeout, never retries by itself (the operator retries with backoff), and runs
as a non-root user on a read-only root filesystem.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .models import WORKSPACE, checked_tenant_id

OPERATIONS = ("plan", "apply", "plan-apply", "destroy", "drift", "outputs")  # plan-apply: plan, then apply that plan
BUNDLE_MOUNT = "/paybill/module"
WORK_MOUNT = "/paybill/work"
BACKEND_KEY = "dsn"
RUN_USER = 65532  # the distroless "nonroot" uid


@dataclass(frozen=True)
class JobSpec:
    tenant_id: str
    run_id: str
    operation: str
    namespace: str
    image: str
    bundle_secret: str  # the module's *.tf files and paybill.auto.tfvars.json
    backend_secret: str  # key `dsn`: the PostgreSQL DSN of the pg backend
    provider_secret: str | None  # provider credentials as environment variables (AWS_ACCESS_KEY_ID, ...)
    timeout_seconds: int
    plan_hash: str | None = None  # apply: the approved plan
    workspace: str = "default"  # the tenant's state to run in: one per isolation model, as the operator's runs
    service_account: str = "paybill-terraform"
    owner: dict[str, str] | None = None  # the Tenant's apiVersion, kind, name and uid: the Job goes with it
    ttl_seconds: int = 3600  # a finished Job (and its pod) is kept this long, then deleted by Kubernetes
    requests: dict[str, str] = field(default_factory=lambda: {"cpu": "250m", "memory": "256Mi"})
    limits: dict[str, str] = field(default_factory=lambda: {"cpu": "1", "memory": "1Gi", "ephemeral-storage": "2Gi"})

    def __post_init__(self) -> None:
        checked_tenant_id(self.tenant_id)
        if self.operation not in OPERATIONS:
            raise ValueError(f"unknown operation {self.operation!r}: one of {', '.join(OPERATIONS)}")
        if not self.run_id.isalnum() or len(self.run_id) > 12:
            raise ValueError("run id: at most 12 letters or digits")
        if self.operation == "apply" and not self.plan_hash:
            raise ValueError("apply runs an approved plan: plan_hash is required")
        if self.timeout_seconds <= 0:
            raise ValueError("timeout_seconds must be positive")
        if not WORKSPACE.fullmatch(self.workspace):
            raise ValueError(f"workspace {self.workspace!r} is not a lowercase name of at most 20 characters")

    @property
    def name(self) -> str:
        """tf-<tenant>-<operation>-<run id>, the tenant's part shortened to fit 63 characters: the run id stays."""
        suffix = f"-{self.run_id}".lower()
        return f"tf-{self.tenant_id}-{self.operation}".lower()[: 63 - len(suffix)].rstrip("-") + suffix


def job_manifest(spec: JobSpec) -> dict[str, Any]:
    labels = {
        "app.kubernetes.io/name": "paybill-terraform",
        "app.kubernetes.io/managed-by": "paybill",
        "paybill.dev/tenant": spec.tenant_id,
        "paybill.dev/run": spec.run_id,
        "paybill.dev/operation": spec.operation,
    }
    args = [
        spec.operation,
        "--tenant",
        spec.tenant_id,
        "--module",
        BUNDLE_MOUNT,
        "--state-dir",
        WORK_MOUNT,
        "--timeout",
        str(spec.timeout_seconds),
        "--workspace",
        spec.workspace,
        "--run-id",
        spec.run_id,
    ]
    if spec.plan_hash:
        args += ["--plan-hash", spec.plan_hash]
    env: list[dict[str, Any]] = [
        {
            "name": "PAYBILL_TERRAFORM_BACKEND_DSN",
            "valueFrom": {"secretKeyRef": {"name": spec.backend_secret, "key": BACKEND_KEY}},
        },
        {"name": "HOME", "value": WORK_MOUNT},
    ]
    container: dict[str, Any] = {
        "name": "terraform",
        "image": spec.image,
        "command": ["python", "-m", "paybill.terraform"],
        "args": args,
        "env": env,
        "volumeMounts": [
            {"name": "bundle", "mountPath": BUNDLE_MOUNT, "readOnly": True},
            {"name": "work", "mountPath": WORK_MOUNT},
        ],
        "resources": {"requests": dict(spec.requests), "limits": dict(spec.limits)},
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_USER,
            "runAsGroup": RUN_USER,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    if spec.provider_secret:
        container["envFrom"] = [{"secretRef": {"name": spec.provider_secret}}]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": spec.name, "namespace": spec.namespace, "labels": labels, **_owned(spec.owner)},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": spec.timeout_seconds,
            "ttlSecondsAfterFinished": spec.ttl_seconds,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "serviceAccountName": spec.service_account,
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": RUN_USER,
                        "fsGroup": RUN_USER,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                    "volumes": [
                        {"name": "bundle", "secret": {"secretName": spec.bundle_secret, "defaultMode": 0o400}},
                        {"name": "work", "emptyDir": {"sizeLimit": spec.limits.get("ephemeral-storage", "2Gi")}},
                    ],
                },
            },
        },
    }


def _owned(owner: dict[str, str] | None) -> dict[str, Any]:
    """ownerReferences to the Tenant (cluster-scoped, so it may own objects in any namespace)."""
    if owner is None:
        return {}
    return {"ownerReferences": [{**owner, "blockOwnerDeletion": False, "controller": False}]}
