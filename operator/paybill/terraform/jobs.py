"""The Kubernetes Job executor: each run of a tenant's Terraform as one Job in the operator's namespace, with the
same methods as the local runner (TerraformRunner), so the operator's runs go through either one.

Per run: a bundle Secret (the module's files, the override files and the inputs as tfvars), then one Job (job.py's
manifest: backend DSN and provider credentials referenced from their Secrets, never copied into the spec; owned by
the Tenant; `activeDeadlineSeconds` = the run timeout; `backoffLimit` 0: the operator retries with its backoff). The
run's end is the Job's Complete or Failed condition, seen through a watch bounded by the run timeout; a Job deleted
or still running then is a failed run that says so (and a Job still running is deleted). What the run did is the
record its entry point wrote to PostgreSQL (jobruns.py): no pod log is read.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import urllib3

from ..kubeclient import Kube, KubeError, resource_path
from . import backend, jobruns
from . import workspaces as records
from .connections import Connections
from .errors import (
    AdoptionBlocked,
    DataAtRisk,
    DataKept,
    PlanHashMismatch,
    PlanNotFound,
    StalePlan,
    StateLocked,
    TerraformError,
    redact,
)
from .job import BACKEND_KEY, JobSpec, job_manifest
from .models import (
    ApplyResult,
    DestroyResult,
    DriftReport,
    LockRecovery,
    ModuleInputs,
    Outputs,
    OutputValue,
    PlanSummary,
)
from .plans import PlanStore
from .runner import VARIABLES_FILE, Finder
from .runrecords import RunRecords

TENANTS = ("paybill.dev/v1alpha1", "tenants")
WATCH_SLICE = 60  # seconds: one watch request at most this long, then listed and watched again

log = logging.getLogger(__name__)


class Executor(Protocol):
    """What the operator's runs go through: the local runner (TerraformRunner) or Kubernetes Jobs (JobExecutor)."""

    def plan(
        self, inputs: ModuleInputs, module: Path, env: Mapping[str, str] | None = None, finder: Finder | None = None
    ) -> PlanSummary: ...

    def apply(
        self, inputs: ModuleInputs, module: Path, env: Mapping[str, str] | None = None, finder: Finder | None = None
    ) -> ApplyResult: ...

    def apply_plan(
        self,
        inputs: ModuleInputs,
        module: Path,
        plan_hash: str,
        approved_hash: str,
        env: Mapping[str, str] | None = None,
    ) -> ApplyResult: ...

    def destroy(
        self, inputs: ModuleInputs, module: Path, env: Mapping[str, str] | None = None, finder: Finder | None = None
    ) -> DestroyResult: ...

    def drift(self, inputs: ModuleInputs, module: Path, env: Mapping[str, str] | None = None) -> DriftReport: ...

    def workspaces(self, tenant_id: str) -> dict[str, records.Workspace]: ...

    def record_applied(
        self, inputs: ModuleInputs, module: str, credentials_secret: str | None, config_digest: str | None = None
    ) -> None: ...

    def record_planned(self, tenant_id: str, plan_hash: str, config_digest: str) -> None: ...

    def planned_summary(self, tenant_id: str, plan_hash: str) -> PlanSummary: ...

    def planned_deletions(self, tenant_id: str, plan_hash: str) -> list[str]: ...

    def planned_digest(self, tenant_id: str, plan_hash: str) -> str | None: ...

    def close(self) -> None: ...


class JobFailed(TerraformError):
    """The run's Job ended without a record of its own (deleted, past its deadline, never started)."""


class ProviderEnvironment(dict[str, str]):
    """A run's provider credentials (the values, for the local runner) that know the Secret they came from (its name,
    for a Job, which references the Secret instead of carrying its values)."""

    def __init__(self, values: Mapping[str, str], secret: str | None) -> None:
        super().__init__(values)
        self.secret = secret


@dataclass(frozen=True)
class JobSettings:
    namespace: str  # the operator's: Jobs and bundle Secrets live there only
    image: str  # the operator's image: it holds `python -m paybill.terraform` and Terraform
    backend_secret: str  # a Secret with key `dsn` in the namespace (made from the operator's DSN if missing)
    timeout: float
    service_account: str = "paybill-terraform"
    ttl_seconds: int = 3600


class JobExecutor(RunRecords):
    def __init__(self, kube: Kube, settings: JobSettings, backend_dsn: str, extra_files: Mapping[str, str]) -> None:
        self.kube, self.settings, self.extra_files = kube, settings, dict(extra_files)
        self.backend_dsn = backend_dsn
        self.connections = Connections(backend_dsn, kept=2)
        self.plans = PlanStore(self.connections)
        with self.connections.connection() as connection:
            jobruns.ensure_table(connection)
        self._ensure_backend_secret()

    # -- the runner's methods ------------------------------------------------------------------------------------

    def plan(
        self, inputs: ModuleInputs, module: Path, env: Mapping[str, str] | None = None, finder: Finder | None = None
    ) -> PlanSummary:
        return _summary(self._run("plan", inputs, module, env)["summary"])

    def apply(
        self, inputs: ModuleInputs, module: Path, env: Mapping[str, str] | None = None, finder: Finder | None = None
    ) -> ApplyResult:
        result = self._run("plan-apply", inputs, module, env)
        return self._applied(inputs, result)

    def apply_plan(
        self,
        inputs: ModuleInputs,
        module: Path,
        plan_hash: str,
        approved_hash: str,
        env: Mapping[str, str] | None = None,
    ) -> ApplyResult:
        if plan_hash != approved_hash:
            raise PlanHashMismatch(approved_hash, plan_hash)
        return self._applied(inputs, self._run("apply", inputs, module, env, plan_hash))

    def destroy(
        self, inputs: ModuleInputs, module: Path, env: Mapping[str, str] | None = None, finder: Finder | None = None
    ) -> DestroyResult:
        result = self._run("destroy", inputs, module, env)
        recoveries = tuple(LockRecovery(**item) for item in result.get("lock_recoveries") or ())
        return DestroyResult(inputs.tenant_id, int(result.get("destroyed") or 0), recoveries)

    def drift(self, inputs: ModuleInputs, module: Path, env: Mapping[str, str] | None = None) -> DriftReport:
        result = self._run("drift", inputs, module, env)
        summary = result.get("summary")
        return DriftReport(
            inputs.tenant_id,
            bool(result["drifted"]),
            tuple(result.get("addresses") or ()),
            _summary(summary) if summary else None,
        )

    def state_outputs(self, tenant_id: str, workspace: str = backend.WORKSPACE) -> Outputs:
        with self.connections.connection() as connection:
            values = backend.state_outputs(connection, tenant_id, workspace)
        return Outputs({name: OutputValue(v.get("value"), bool(v.get("sensitive"))) for name, v in values.items()})

    def workspaces(self, tenant_id: str) -> dict[str, records.Workspace]:
        with self.connections.connection() as connection:
            if not backend.state_table_exists(connection, tenant_id):
                return {}
            return records.workspaces(connection, tenant_id)

    # -- one run, one Job ------------------------------------------------------------------------------------------

    def _applied(self, inputs: ModuleInputs, result: dict[str, Any]) -> ApplyResult:
        """The summary from the run's record, the outputs (sensitive ones too) from the state, never from the Job."""
        recoveries = tuple(LockRecovery(**item) for item in result.get("lock_recoveries") or ())
        return ApplyResult(
            _summary(result["summary"]), self.state_outputs(inputs.tenant_id, inputs.workspace), recoveries
        )

    def _run(
        self,
        operation: str,
        inputs: ModuleInputs,
        module: Path,
        env: Mapping[str, str] | None,
        plan_hash: str | None = None,
    ) -> dict[str, Any]:
        run_id = secrets.token_hex(6)
        spec = JobSpec(
            tenant_id=inputs.tenant_id,
            run_id=run_id,
            operation=operation,
            namespace=self.settings.namespace,
            image=self.settings.image,
            bundle_secret=f"tf-{run_id}-bundle",
            backend_secret=self.settings.backend_secret,
            provider_secret=getattr(env, "secret", None) if env else None,
            timeout_seconds=max(1, int(self.settings.timeout)),
            plan_hash=plan_hash,
            workspace=inputs.workspace,
            service_account=self.settings.service_account,
            owner=self._owner(inputs.tenant_id),
            ttl_seconds=self.settings.ttl_seconds,
        )
        self.kube.create(self._bundle(spec, inputs, module))
        try:
            self.kube.create(job_manifest(spec))
            ended = self._wait(spec)
            return self._result(spec, ended, list((env or {}).values()))
        finally:
            self.kube.delete("v1", "secrets", spec.bundle_secret, spec.namespace)

    def _owner(self, tenant_id: str) -> dict[str, str]:
        tenant = self.kube.get(*TENANTS, tenant_id)
        if tenant is None:
            raise JobFailed("job", None, f"tenant {tenant_id} is gone: no Job is started for it")
        return {"apiVersion": TENANTS[0], "kind": "Tenant", "name": tenant_id, "uid": tenant["metadata"]["uid"]}

    def _bundle(self, spec: JobSpec, inputs: ModuleInputs, module: Path) -> dict[str, Any]:
        """The bundle Secret: what the Job mounts at its module directory (files, overrides, the inputs)."""
        files = {
            path.name: path.read_bytes()
            for path in sorted(module.iterdir())
            if path.is_file() and path.name.endswith((".tf", ".tf.json"))
        }
        files |= {Path(name).name: text.encode() for name, text in self.extra_files.items()}
        files[VARIABLES_FILE] = json.dumps(inputs.variables()).encode()
        labels = {"app.kubernetes.io/managed-by": "paybill", "paybill.dev/run": spec.run_id}
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {
                "name": spec.bundle_secret,
                "namespace": spec.namespace,
                "labels": labels,
                "ownerReferences": [{**(spec.owner or {}), "blockOwnerDeletion": False}],
            },
            "data": {name: base64.b64encode(data).decode() for name, data in files.items()},
        }

    def _ensure_backend_secret(self) -> None:
        """The backend DSN as a Secret the Jobs reference (the chart may provide it; else made once from ours)."""
        namespace, name = self.settings.namespace, self.settings.backend_secret
        if self.kube.get("v1", "secrets", name, namespace) is not None:
            return
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/managed-by": "paybill"}},
            "data": {BACKEND_KEY: base64.b64encode(self.backend_dsn.encode()).decode()},
        }
        try:
            self.kube.create(secret)
        except KubeError as exc:
            if exc.status != 409:  # another replica made it first
                raise

    def _wait(self, spec: JobSpec) -> dict[str, Any] | None:
        """The Job as it ended (a Complete or Failed condition), watched until the run timeout; None: deleted. A Job
        still running at the timeout is deleted (its pod with it) and the run fails."""
        deadline = time.monotonic() + spec.timeout_seconds
        path = resource_path("batch/v1", "jobs", spec.namespace)
        selector = f"paybill.dev/run={spec.run_id}"
        while (remaining := deadline - time.monotonic()) > 0:
            listing = self.kube.request("GET", path, query={"labelSelector": selector})
            found = [job for job in listing["items"] if job["metadata"]["name"] == spec.name]
            if not found or _ended(found[0]):
                return found[0] if found else None
            seconds = max(1, min(int(remaining) + 1, WATCH_SLICE))
            try:
                for event in self.kube.watch(
                    "batch/v1", "jobs", listing["metadata"]["resourceVersion"], selector, seconds, spec.namespace
                ):
                    job = event.get("object") or {}
                    if job.get("metadata", {}).get("name") != spec.name or event.get("type") == "BOOKMARK":
                        continue
                    if event.get("type") == "DELETED":
                        return None
                    if _ended(job) or time.monotonic() >= deadline:
                        break
            except (KubeError, urllib3.exceptions.HTTPError) as exc:  # expired (410) or broken: listed again
                log.info("[Tenant %s] watch of Job %s ended (%s): listed again", spec.tenant_id, spec.name, exc)
        self._delete_job(spec)
        raise JobFailed(
            spec.operation,
            None,
            f"Job {spec.name} did not finish within the run timeout ({spec.timeout_seconds}s): deleted",
        )

    def _delete_job(self, spec: JobSpec) -> None:
        """Deleted with its pods (a Job's DELETE orphans them unless told)."""
        try:
            self.kube.request(
                "DELETE",
                resource_path("batch/v1", "jobs", spec.namespace, spec.name),
                {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"},
            )
        except KubeError as exc:
            if exc.status != 404:
                raise

    def _result(self, spec: JobSpec, ended: dict[str, Any] | None, secret_values: list[str]) -> dict[str, Any]:
        with self.connections.connection() as connection:
            record = jobruns.read(connection, spec.run_id)
        if record is not None and record.succeeded:
            return record.result
        if record is not None:  # Terraform's own words, redacted by the entry point (and again here)
            raise _error(spec.operation, record.result, redact(record.output, secret_values))
        if ended is None:
            raise JobFailed(spec.operation, None, f"Job {spec.name} was deleted before it finished")
        reason = _failure(ended) or "it ended without writing its run record"
        raise JobFailed(spec.operation, None, f"Job {spec.name} failed: {reason}")


def _conditions(job: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    found = ((job.get("status") or {}).get("conditions")) or []
    return {c.get("type", ""): c for c in found if c.get("status") == "True"}


def _ended(job: Mapping[str, Any]) -> bool:
    return bool({"Complete", "Failed"} & set(_conditions(job)))


def _failure(job: Mapping[str, Any]) -> str:
    failed = _conditions(job).get("Failed")
    if failed is None:
        return ""
    return ": ".join(part for part in (failed.get("reason"), failed.get("message")) if part)


def _summary(fields: Mapping[str, Any]) -> PlanSummary:
    return PlanSummary(**{**fields, "addresses": tuple(fields.get("addresses") or ())})


_RAISED = {"StalePlan": StalePlan, "StateLocked": StateLocked, "AdoptionBlocked": AdoptionBlocked, "DataKept": DataKept}


def _error(operation: str, result: Mapping[str, Any], message: str) -> Exception:
    """The runner's error the Job's run ended with, raised again here as the local runner would have raised it."""
    kind = str(result.get("error"))
    if kind == "PlanNotFound":
        return PlanNotFound(message)
    if kind == "DataAtRisk":
        return DataAtRisk(operation, message, str(result.get("plan_hash") or ""))
    return _RAISED.get(kind, TerraformError)(operation, 1, message)
