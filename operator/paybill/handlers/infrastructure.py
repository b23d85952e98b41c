"""Terraform for tenants, in the operator: what a Plan's `spec.provisioning` resolves to (module, contract,
credentials), and the runs lifecycle/infrastructure.py asks for, carried out in a worker pool of their own.

A run never holds kopf's event loop or its executor: the reconcile that asks for it only records it in status
(`running`) and hands it to the pool; when it ends, the worker writes its result to `status.infrastructure`
(summary, hashes, Terraform's first error lines; outputs go to the tenant's Secret paybill-infrastructure,
never to status) and touches the Tenant, whose next reconcile decides on it. At most PAYBILL_TERRAFORM_CONCURRENCY
runs at once; one tenant's failing or slow run holds nobody else's.
"""

from __future__ import annotations

import base64
import contextvars
import dataclasses
import datetime
import functools
import logging
import os
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import kopf
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from .. import __version__
from ..api.meta import API_VERSION, GROUP, VERSION, now_rfc3339
from ..api.plan import Cloud, Isolation, PlanSpec
from ..api.tenant import DeletionPolicy, InfrastructureStatus
from ..clouds import Cloud as CloudName
from ..clouds import preflight as cloud_preflight
from ..clouds.preflight import gate as cloud_gate
from ..errors import first_line
from ..kubeclient import Kube, KubeError
from ..lifecycle import infrastructure as infra
from ..lifecycle.reconcile import PlanObject, TenantObject
from ..metrics import terraform_ran
from ..terraform import (
    ApplyResult,
    ModuleInputs,
    PlanSummary,
    RunnerConfig,
    StalePlan,
    TerraformError,
    TerraformRunner,
)
from ..terraform import workspaces as records
from ..terraform.adoption import Adoption, CloudObject
from ..terraform.backend import state_table_exists
from ..terraform.connections import Connections
from ..terraform.contract import violations
from ..terraform.errors import DataAtRisk, PlanHashMismatch, PlanNotFound, redact
from ..terraform.jobs import Executor, JobExecutor, JobSettings, ProviderEnvironment
from ..terraform.modules import module_dir
from ..terraform.runner import Finder
from ..terraform.workspaces import Workspace, config_digest, files_digest
from .apply import TRIGGER, audit, delete_owned_secret, operator_namespace, publish_secret, touch
from .settings import DATABASE_URL_ENV, state_directory

BACKEND_DSN_ENV = "PAYBILL_TERRAFORM_BACKEND_DSN"
CONCURRENCY_ENV = "PAYBILL_TERRAFORM_CONCURRENCY"
TIMEOUT_ENV = "PAYBILL_TERRAFORM_TIMEOUT"
LOCK_TIMEOUT_ENV = "PAYBILL_TERRAFORM_LOCK_TIMEOUT"
STALE_LOCK_ENV = "PAYBILL_TERRAFORM_STALE_LOCK_SECONDS"
MODULES_DIR_ENV = "PAYBILL_TERRAFORM_MODULES_DIR"
PROVIDER_MIRROR_ENV = "PAYBILL_TERRAFORM_PROVIDER_MIRROR"
OVERRIDES_DIR_ENV = "PAYBILL_TERRAFORM_OVERRIDES_DIR"
EXECUTOR_ENV = "PAYBILL_TERRAFORM_EXECUTOR"  # local (a process per run, here) | job (a Kubernetes Job per run)
JOB_IMAGE_ENV = "PAYBILL_TERRAFORM_JOB_IMAGE"
JOB_BACKEND_SECRET_ENV = "PAYBILL_TERRAFORM_JOB_BACKEND_SECRET"
JOB_SERVICE_ACCOUNT_ENV = "PAYBILL_TERRAFORM_JOB_SERVICE_ACCOUNT"
EXECUTORS = ("local", "job")
DEFAULT_POLICY = str(DeletionPolicy.SNAPSHOT)  # a Tenant's deletionPolicy default
DRIFT_TICK = 5.0  # seconds: how often a provisioned tenant looks whether its drift check is due
SETUPS_KEPT = 4096
KINDS = {
    infra.PlanInfrastructure: "plan",
    infra.ApplyInfrastructure: "apply",
    infra.CheckDrift: "drift",
    infra.DestroyInfrastructure: "destroy",
}

log = logging.getLogger(__name__)


@dataclass
class TenantRuns:
    """One Tenant object's runs in this process (by uid: a new Tenant of a reused name has none)."""

    started: deque[str] = dataclasses.field(default_factory=lambda: deque(maxlen=16))
    finished: str | None = None  # the id of its last run this process finished
    finished_at: float = 0.0  # time.monotonic() then


@dataclass(frozen=True)
class RunSetup:
    """What a run of one Desired configuration needs: the module's directory, its inputs, the credentials Secret."""

    module: Path
    inputs: ModuleInputs
    credentials_secret: str | None
    cloud: str = Cloud.LOCAL  # whose adapter finds what an interrupted apply left (local: nothing in a cloud)


# --- what a Plan's provisioning resolves to ------------------------------------------------------------------------


def resolve_module(
    cloud: str, isolation: str, override: str | None, environ: Mapping[str, str]
) -> tuple[str, Path | None]:
    """The module's name and directory: the override under PAYBILL_TERRAFORM_MODULES_DIR, else the shipped one."""
    if override is not None:
        root = environ.get(MODULES_DIR_ENV)
        if not root:
            return f"{override} (no {MODULES_DIR_ENV} to look in)", None
        return override, Path(root) / override
    try:
        return f"{cloud}/{isolation}", module_dir(cloud, isolation)
    except ValueError:
        return f"{cloud}/{isolation}", None


def module_check(name: str, directory: Path | None, cloud: str) -> infra.ModuleCheck:
    if directory is None or not directory.is_dir():
        return infra.ModuleCheck(name, False)
    return infra.ModuleCheck(name, True, _violations(str(directory), files_digest(directory), cloud == Cloud.LOCAL))


@functools.lru_cache(maxsize=256)
def _violations(directory: str, digest: str, stands_for_cloud_objects: bool) -> tuple[str, ...]:
    """The contract check, once per version of a module's files (`digest` is the cache key)."""
    return tuple(violations(Path(directory), stands_for_cloud_objects))


def credentials_check(kube: Kube, secret: str | None) -> infra.CredentialsCheck:
    """Only the Secret's key names are read into the decision (its values go to a run's environment only)."""
    namespace = operator_namespace()
    if secret is None or namespace is None:
        return infra.CredentialsCheck(secret, namespace)
    found = kube.get("v1", "secrets", secret, namespace)
    keys = frozenset((found.get("data") or {}).keys()) if found is not None else None
    return infra.CredentialsCheck(secret, namespace, keys)


def plan_problems(kube: Kube, spec: PlanSpec) -> tuple[str, ...]:
    """What a Plan's provisioning lacks, found before any run: unknown module, a broken contract, credentials."""
    provisioning = spec.provisioning
    if provisioning is None:
        return ()
    name, directory = resolve_module(str(provisioning.cloud), str(spec.isolation), provisioning.module, os.environ)
    check = module_check(name, directory, str(provisioning.cloud))
    return infra.provisioning_problems(provisioning, check, credentials_check(kube, provisioning.credentialsSecret))


def module_inputs(tenant: str, plan: PlanObject, workspace: str, policy: str = DEFAULT_POLICY) -> ModuleInputs:
    """The module's inputs for the tenant, in the workspace (state) of `workspace`, an isolation model; `policy`:
    the Tenant's deletionPolicy, what a destroy does to its databases and buckets."""
    provisioning = plan.spec.provisioning
    assert provisioning is not None
    quotas = plan.spec.quotas
    return ModuleInputs(
        tenant_id=tenant,
        plan=plan.name,
        region=provisioning.target_region,
        cost_center=provisioning.costCenter or plan.spec.tier,
        sizes={"storage_gib": infra.storage_gib(quotas.databaseSizeMi), "agents": quotas.maxAgents},
        deletion_policy=policy,
        workspace=workspace,
    )


# --- the runs ------------------------------------------------------------------------------------------------------


class InfrastructureRuns:
    """The operator's Terraform runs: a bounded pool, the runs in flight per tenant, and the runner (made on first
    use, so an operator without Terraform still serves every tenant whose plan needs none)."""

    def __init__(self, kube: Kube, audit_log: Any, environ: Mapping[str, str]) -> None:
        self.kube, self.audit, self.environ = kube, audit_log, dict(environ)
        self.concurrency = max(1, int(environ.get(CONCURRENCY_ENV) or 4))
        self._executor = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="paybill-terraform")
        self._guard = threading.Lock()
        self._running: dict[str, str] = {}  # tenant -> kind
        self._runs: OrderedDict[str, TenantRuns] = OrderedDict()  # Tenant uid -> its runs in this process
        self._setups: OrderedDict[str, RunSetup] = OrderedDict()
        self._runner: Executor | None = None
        self._state_reader: Connections | None = None  # the state of tenants whose plan no longer provisions

    # -- observing ------------------------------------------------------------------------------------------------

    def seen(self, tenant: TenantObject, plan: PlanObject | None) -> infra.InfraSeen:
        """The tenant's desired infrastructure and its runs, for the decision; when the plan has no provisioning
        (any more), what the tenant's Terraform state holds all the same, for offboarding to destroy."""
        if plan is None or plan.spec.provisioning is None:
            return self._state_only(tenant)
        policy = str(tenant.spec.deletionPolicy)  # the Tenant's now: every run, a destroy too, takes it
        desired = self.desire(tenant.name, plan, policy)
        blocked = cloud_gate(self.kube.get(API_VERSION, "plans", plan.name))  # its cloud preflight, on the Plan
        if blocked is not None:  # no new run starts (a destroy of what was built still may)
            desired = dataclasses.replace(desired, problems=(*desired.problems, blocked))
        recorded = tenant.status.infrastructure
        running, settled = self._in_flight(tenant)
        try:
            found = self._workspaces(tenant.name)
        except Exception as exc:  # the decision waits, and says why
            return infra.InfraSeen(desired, running, settled, tenant.approved_plan, None, None, redact(first_line(exc)))
        built = tuple(self._built(tenant.name, desired, found[name], policy) for name in found if found[name].resources)
        retired = None
        if recorded is not None and recorded.retiring:
            retiring = found.get(str(recorded.retiring))
            retired = self.retired(tenant.name, plan, recorded, retiring, infra.RETIRING_POLICY)
        workspace = found.get(desired.workspace)
        applied = workspace.config_digest if workspace is not None else None
        return infra.InfraSeen(desired, running, settled, tenant.approved_plan, retired, built, applied_digest=applied)

    def _state_only(self, tenant: TenantObject) -> infra.InfraSeen:
        running, settled = self._in_flight(tenant)
        try:
            found = self._state_workspaces(tenant.name)
        except Exception as exc:  # offboarding waits, and says why
            return infra.state_only(None, redact(first_line(exc), self._secret_values()), running, settled)
        policy = str(tenant.spec.deletionPolicy)
        built = tuple(self._state_built(tenant.name, found[name], policy) for name in found if found[name].resources)
        return infra.state_only(built, "", running, settled)

    def _in_flight(self, tenant: TenantObject) -> tuple[str | None, bool]:
        """The run in flight under the tenant's name, and whether status holds this Tenant's last result."""
        recorded = tenant.status.infrastructure
        with self._guard:
            running = self._running.get(tenant.name)
            runs = self._runs.get(tenant.uid) or TenantRuns()
            since = time.monotonic() - runs.finished_at
            settled = infra.run_settled(recorded.runId if recorded else None, runs.finished, runs.started, since)
        return running, settled

    def _runs_of(self, uid: str) -> TenantRuns:
        """Under the guard: the Tenant's runs, made on first use (at most SETUPS_KEPT Tenants remembered)."""
        runs = self._runs.setdefault(uid, TenantRuns())
        self._runs.move_to_end(uid)
        while len(self._runs) > SETUPS_KEPT:
            self._runs.popitem(last=False)
        return runs

    def forget(self, uid: str) -> None:
        """The Tenant is gone: its runs say nothing about a later Tenant of its name."""
        with self._guard:
            self._runs.pop(uid, None)

    def _state_workspaces(self, tenant: str) -> dict[str, Workspace]:
        """The tenant's workspaces, read without Terraform (an operator without it has its state all the same)."""
        if infra.name_too_long(tenant):
            return {}
        if self._runner is not None:
            return self._runner.workspaces(tenant)
        dsn = self.environ.get(BACKEND_DSN_ENV) or self.environ.get(DATABASE_URL_ENV)
        if not dsn:  # no PostgreSQL for state: nothing was ever built
            return {}
        with self._state_connections(dsn).connection() as connection:
            return records.workspaces(connection, tenant) if state_table_exists(connection, tenant) else {}

    def _state_connections(self, dsn: str) -> Connections:
        with self._guard:
            if self._state_reader is None:
                self._state_reader = Connections(dsn, kept=1)
            return self._state_reader

    def _state_built(self, tenant: str, found: Workspace, policy: str) -> infra.Desired:
        """A workspace of a plan that no longer provisions: destroyed with what it was applied with, if recorded."""
        if found.module is not None:
            return self._recorded_desired(tenant, found, policy)
        problem = f"it holds {found.resources} resources, but no record says which module and inputs built them"
        return infra.Desired("unknown", "-", problems=(problem,), workspace=found.name)

    def _workspaces(self, tenant: str) -> dict[str, Workspace]:
        """The tenant's workspaces as PostgreSQL has them (none can exist under a name too long to provision)."""
        if infra.name_too_long(tenant):
            return {}
        return self.runner().workspaces(tenant)

    def _built(self, tenant: str, desired: infra.Desired, found: Workspace, policy: str) -> infra.Desired:
        """What destroys a workspace holding resources: the module and inputs it was applied with, but the Tenant's
        deletion policy as it is now. A workspace no record speaks for (applied before records were kept) is the
        current model's, with today's inputs."""
        if found.module is not None:
            return self._recorded_desired(tenant, found, policy)
        if found.name == desired.workspace:
            return desired
        problem = f"it holds {found.resources} resources, but no record says which module and inputs built them"
        return infra.Desired("unknown", "-", problems=(problem,), workspace=found.name)

    def _recorded_desired(self, tenant: str, found: Workspace, policy: str) -> infra.Desired:
        """The workspace's recorded module and inputs, with the Tenant's current deletion policy: what a destroy of
        it does to the data is decided now, never by the policy of its last apply."""
        module = str(found.module)
        cloud, _, model = module.partition("/")
        _, directory = (
            resolve_module(cloud, model, None, self.environ) if model else resolve_module("", "", module, self.environ)
        )
        if directory is None or not directory.is_dir():
            return infra.Desired(module, "-", problems=(f"module {module} does not exist",), workspace=found.name)
        recorded = {**found.variables, "tenant_id": tenant, "workspace": found.name, "deletion_policy": policy}
        inputs = ModuleInputs(**recorded)
        digest = config_digest(directory, inputs.variables(), found.credentials_secret, found.name)
        self._keep(digest, RunSetup(directory, inputs, found.credentials_secret, _cloud_of(module)))
        return infra.Desired(module, digest, workspace=found.name)

    def desire(self, tenant: str, plan: PlanObject, policy: str = DEFAULT_POLICY) -> infra.Desired:
        provisioning = plan.spec.provisioning
        assert provisioning is not None
        cloud, isolation = str(provisioning.cloud), str(Isolation(plan.spec.isolation))
        name, directory = resolve_module(cloud, isolation, provisioning.module, self.environ)
        problems = infra.provisioning_problems(
            provisioning,
            module_check(name, directory, cloud),
            credentials_check(self.kube, provisioning.credentialsSecret),
        )
        inputs: ModuleInputs | None = None
        if not infra.name_too_long(tenant):  # a name too long is the decision's to say, not the plan's problem
            try:
                inputs = module_inputs(tenant, plan, isolation, policy)
            except ValueError as exc:
                problems = (*problems, str(exc))
        variables = inputs.variables() if inputs is not None else {"tenant_id": tenant}
        digest = config_digest(directory, variables, provisioning.credentialsSecret, isolation)
        if directory is not None and inputs is not None and not problems:
            self._keep(digest, RunSetup(directory, inputs, provisioning.credentialsSecret, cloud))
        return infra.Desired(
            name,
            digest,
            provisioning.approval,
            provisioning.driftCheckSeconds,
            provisioning.autoRemediate,
            problems,
            isolation,
        )

    def retired(
        self,
        tenant: str,
        plan: PlanObject,
        recorded: InfrastructureStatus,
        found: Workspace | None,
        policy: str = DEFAULT_POLICY,
    ) -> infra.Desired | None:
        """The workspace of the model the tenant left, with the module and inputs it was applied with (recorded in
        PostgreSQL; without a record, the module status names and today's inputs). None: not found."""
        provisioning, workspace = plan.spec.provisioning, str(recorded.retiring)
        if found is not None and found.module is not None:
            return self._recorded_desired(tenant, found, policy)
        module = str(recorded.retiringModule or "")
        if provisioning is None or not module:
            return None
        cloud, _, model = module.partition("/")
        _, directory = (
            resolve_module(cloud, model, None, self.environ) if model else resolve_module("", "", module, self.environ)
        )
        if directory is None or not directory.is_dir():
            return None
        inputs = module_inputs(tenant, plan, workspace, policy)
        digest = config_digest(directory, inputs.variables(), provisioning.credentialsSecret, workspace)
        self._keep(digest, RunSetup(directory, inputs, provisioning.credentialsSecret, _cloud_of(module)))
        return infra.Desired(module, digest, workspace=workspace)

    def _keep(self, digest: str, setup: RunSetup) -> None:
        with self._guard:
            self._setups[digest] = setup
            self._setups.move_to_end(digest)
            while len(self._setups) > SETUPS_KEPT:
                self._setups.popitem(last=False)

    # -- running ------------------------------------------------------------------------------------------------------

    def start(self, body: Mapping[str, Any], tenant: TenantObject, action: infra.InfraAction) -> None:
        """Record the run in status and hand it to the pool; nothing if the tenant has a run in flight already."""
        kind = KINDS[type(action)]
        with self._guard:
            setup = self._setups.get(action.desired.digest)
            if tenant.name in self._running:
                return
            if setup is None:
                raise RuntimeError(f"no run setup for {action.desired.module}: reconcile again")
            run_id = secrets.token_hex(6)
            self._running[tenant.name] = kind
            self._runs_of(tenant.uid).started.append(run_id)
        ref = {"apiVersion": API_VERSION, "kind": "Tenant", "metadata": {"name": tenant.name, "uid": tenant.uid}}
        try:
            self._write(tenant.name, {"running": kind, "runId": run_id})
            context = contextvars.copy_context()
            self._executor.submit(context.run, self._execute, ref, tenant, setup, action, run_id)
        except BaseException:
            with self._guard:
                self._running.pop(tenant.name, None)
            raise

    def _execute(
        self, ref: dict[str, Any], tenant: TenantObject, setup: RunSetup, action: infra.InfraAction, run_id: str
    ) -> None:
        kind = KINDS[type(action)]
        started = time.monotonic()
        try:
            fields = self._perform(ref, tenant, setup, action)
        except Exception as exc:  # every failure is a result in status, never only a log line
            fields = self._failed(tenant.name, action, exc)
        terraform_ran(kind, str(fields.get("lastResult")), time.monotonic() - started)
        fields |= {"running": None, "runId": run_id, "lastRun": kind, "lastRunAt": now_rfc3339()}
        try:
            self._write(tenant.name, fields)
        except KubeError as exc:
            log.warning("[Tenant %s] terraform %s result not written: %s", tenant.name, kind, first_line(exc))
        finally:
            with self._guard:
                self._running.pop(tenant.name, None)
                runs = self._runs_of(tenant.uid)
                runs.finished, runs.finished_at = run_id, time.monotonic()
        try:
            touch(self.kube, "tenants", tenant.name, "infrastructure", run_id)
        except KubeError as exc:
            log.warning("[Tenant %s] not touched after terraform %s: %s", tenant.name, kind, first_line(exc))

    def _perform(
        self, ref: dict[str, Any], tenant: TenantObject, setup: RunSetup, action: infra.InfraAction
    ) -> dict[str, Any]:
        runner, env = self.runner(), self._credentials(setup.credentials_secret)
        digest = action.desired.digest
        match action:
            case infra.PlanInfrastructure():
                summary = runner.plan(setup.inputs, setup.module, env, self._finder(setup, env))
                awaits = f"plan {summary.plan_hash[:12]} awaits approval"
                deleted = runner.planned_deletions(tenant.name, summary.plan_hash)
                if deleted:
                    awaits += f"; it deletes or replaces {', '.join(deleted)}, {infra.HOLDS_DATA}"
                return _awaiting(runner, tenant.name, action.desired, summary, awaits)
            case infra.ApplyInfrastructure(_, plan_hash):
                if plan_hash is not None and runner.planned_digest(tenant.name, plan_hash) != digest:
                    raise PlanNotFound(f"plan {plan_hash[:12]} was not made for the tenant's current configuration")
                runner.record_applied(setup.inputs, action.desired.module, setup.credentials_secret)
                if plan_hash is None:
                    try:
                        result = runner.apply(setup.inputs, setup.module, env, self._finder(setup, env))
                    except DataAtRisk as held:  # its plan waits for a person's approval, as under approval manual
                        summary = runner.planned_summary(tenant.name, held.plan_hash)
                        return _awaiting(runner, tenant.name, action.desired, summary, held.message)
                else:
                    result = runner.apply_plan(setup.inputs, setup.module, plan_hash, plan_hash, env)
                    self._approved(ref, tenant.name, action.desired, result.summary)
                runner.record_applied(setup.inputs, action.desired.module, setup.credentials_secret, digest)
                return self._applied(ref, tenant, result, action.desired)
            case infra.CheckDrift():
                report = runner.drift(setup.inputs, setup.module, env)
                found = f"{len(report.addresses)} resources drifted" if report.drifted else "no drift"
                return {
                    "lastResult": infra.SUCCEEDED,
                    "driftCheckedAt": now_rfc3339(),
                    "drifted": sorted(report.addresses),
                    "failures": 0,
                    "message": found,
                }
            case infra.DestroyInfrastructure(desired) if desired.workspace == self._recorded(tenant.name).retiring:
                destroyed = runner.destroy(setup.inputs, setup.module, env, self._finder(setup, env))
                runner.record_applied(setup.inputs, desired.module, setup.credentials_secret)  # nothing applied now
                self._recovered(ref, tenant.name, destroyed.lock_recoveries)
                self._adopted(ref, tenant.name, desired, destroyed.adoption)
                return {
                    "lastResult": infra.SUCCEEDED,
                    "retiring": None,
                    "retiringModule": None,
                    "failures": 0,
                    "message": f"destroyed {destroyed.destroyed} resources of {desired.module}, left for another model",
                }
            case infra.DestroyInfrastructure():
                destroyed = runner.destroy(setup.inputs, setup.module, env, self._finder(setup, env))
                runner.record_applied(setup.inputs, action.desired.module, setup.credentials_secret)  # none applied
                self._recovered(ref, tenant.name, destroyed.lock_recoveries)
                self._adopted(ref, tenant.name, action.desired, destroyed.adoption)
                delete_owned_secret(self.kube, infra.OUTPUTS_SECRET, tenant.namespace, ref, "Tenant")  # type: ignore[arg-type]
                return {
                    "lastResult": infra.SUCCEEDED,
                    "destroyed": True,
                    "appliedDigest": None,
                    "failures": 0,
                    "message": f"destroyed {destroyed.destroyed} resources",
                    "outputsSecret": None,
                }

    def _applied(
        self, ref: dict[str, Any], tenant: TenantObject, result: ApplyResult, desired: infra.Desired
    ) -> dict[str, Any]:
        """The outputs into the tenant's Secret (sensitive ones nowhere else); the summary into status."""
        secret = infra.outputs_secret(ref, tenant.namespace, result.outputs.secret_data())
        publish_secret(self.kube, secret)
        self._recovered(ref, tenant.name, result.lock_recoveries)
        self._adopted(ref, tenant.name, desired, result.adoption)
        summary, before = result.summary, self._recorded(tenant.name)
        ever_pooled = before.poolObjects
        return {
            **_retiring(before, desired.workspace),
            "workspace": desired.workspace,
            "module": desired.module,
            "poolObjects": ever_pooled or infra.leaves_pool_objects(desired.module, desired.workspace),
            **_summary(summary),
            "lastResult": infra.SUCCEEDED,
            "configDigest": desired.digest,
            "appliedDigest": desired.digest,
            "appliedHash": summary.plan_hash,
            "destroyed": False,
            "failures": 0,
            "driftCheckedAt": now_rfc3339(),
            "drifted": [],
            "outputsSecret": infra.OUTPUTS_SECRET,
            "message": f"applied: {summary.adds} added, {summary.changes} changed, {summary.destroys} destroyed",
        }

    def _adopted(self, ref: dict[str, Any], tenant: str, desired: infra.Desired, adopted: Adoption | None) -> None:
        """What a run adopted after an apply that never finished, in the audit chain."""
        if adopted is not None:
            record = {"workspace": desired.workspace, "module": desired.module, **adopted.record}
            audit(ref, self.audit, "Tenant", tenant, "terraform-resources-adopted", record)  # type: ignore[arg-type]

    def _approved(self, ref: dict[str, Any], tenant: str, desired: infra.Desired, summary: PlanSummary) -> None:
        """A plan applied on a person's approval (the annotation naming its hash), in the audit chain."""
        record = {"workspace": desired.workspace, "module": desired.module, **_summary(summary)}
        audit(ref, self.audit, "Tenant", tenant, "terraform-plan-applied-on-approval", record)  # type: ignore[arg-type]

    def _recovered(self, ref: dict[str, Any], tenant: str, recoveries: tuple[Any, ...]) -> None:
        for recovery in recoveries:
            audit(ref, self.audit, "Tenant", tenant, "terraform-lock-released", asdict(recovery))  # type: ignore[arg-type]

    def _failed(self, tenant: str, action: infra.InfraAction, exc: Exception) -> dict[str, Any]:
        """Terraform's first error lines (secrets redacted), and the failures in a row for the backoff."""
        if isinstance(exc, (StalePlan, PlanHashMismatch, PlanNotFound)):
            message = f"the plan could not be applied ({first_line(exc)}); nothing applied"
            return {"lastResult": infra.STALE, "message": redact(message)}
        message = exc.message if isinstance(exc, TerraformError) else f"{type(exc).__name__}: {first_line(exc)}"
        record = self._recorded(tenant)
        fields: dict[str, Any] = {
            "lastResult": infra.FAILED,
            "message": redact(message, self._secret_values()),
            "failures": record.failures + 1,
            "configDigest": action.desired.digest,
        }
        if isinstance(action, infra.CheckDrift):
            fields["driftCheckedAt"] = now_rfc3339()  # looked at again next period, not at once
        return fields

    def _recorded(self, tenant: str) -> InfrastructureStatus:
        """The tenant's status.infrastructure as it stands now (a run reads it when it ends)."""
        found = self.kube.get(API_VERSION, "tenants", tenant) or {}
        return InfrastructureStatus.model_validate(((found.get("status") or {}).get("infrastructure")) or {})

    def runner(self) -> Executor:
        """The executor PAYBILL_TERRAFORM_EXECUTOR names: this process's runner (local) or a Job per run (job)."""
        with self._guard:
            if self._runner is None:
                self._runner = self._executor_of(self.environ.get(EXECUTOR_ENV) or "local")
            return self._runner

    def _executor_of(self, kind: str) -> Executor:
        if kind not in EXECUTORS:
            raise RuntimeError(f"{EXECUTOR_ENV}={kind!r}: one of {', '.join(EXECUTORS)}")
        config = self._config()
        if kind == "local":
            return TerraformRunner(config)
        namespace = operator_namespace()
        if namespace is None:
            raise RuntimeError("the job executor runs Jobs in the operator's namespace: set PAYBILL_OPERATOR_NAMESPACE")
        settings = JobSettings(
            namespace=namespace,
            image=self.environ.get(JOB_IMAGE_ENV) or f"ghcr.io/paybill/paybill:{__version__}",
            backend_secret=self.environ.get(JOB_BACKEND_SECRET_ENV) or "paybill-terraform-backend",
            timeout=config.timeout,
            service_account=self.environ.get(JOB_SERVICE_ACCOUNT_ENV) or "paybill-terraform",
        )
        return JobExecutor(self.kube, settings, config.backend_dsn, config.extra_files)

    def _config(self) -> RunnerConfig:
        dsn = self.environ.get(BACKEND_DSN_ENV) or self.environ.get(DATABASE_URL_ENV)
        if not dsn:
            raise RuntimeError(f"no PostgreSQL for Terraform's state: set {BACKEND_DSN_ENV} or {DATABASE_URL_ENV}")
        mirror = self.environ.get(PROVIDER_MIRROR_ENV)
        return RunnerConfig(
            backend_dsn=backend_dsn(dsn),
            state_dir=state_directory(self.environ) / "terraform",
            timeout=float(self.environ.get(TIMEOUT_ENV) or 900),
            concurrency=self.concurrency,
            lock_timeout=float(self.environ.get(LOCK_TIMEOUT_ENV) or 30),
            stale_lock_after=float(self.environ[STALE_LOCK_ENV]) if self.environ.get(STALE_LOCK_ENV) else None,
            provider_mirror=Path(mirror) if mirror else None,
            extra_files=override_files(self.environ.get(OVERRIDES_DIR_ENV)),
        )

    def _finder(self, setup: RunSetup, credentials: Mapping[str, str]) -> Finder | None:
        """The cloud adapter's lookup of a tenant's objects, for the recovery after an apply that never finished
        (made only if one did: the runner calls it then). None for the local module, which builds nothing in a cloud."""
        if setup.cloud == Cloud.LOCAL:
            return None

        def tenant_objects(tenant: str) -> Sequence[CloudObject]:
            from ..clouds.adapters import adapter  # the SDKs are the `clouds` extra

            cloud = CloudName(str(setup.cloud))
            endpoint = cloud_preflight.endpoints(self.environ.get(cloud_preflight.ENDPOINTS_ENV)).get(cloud)
            return adapter(cloud, credentials, setup.inputs.region, endpoint=endpoint).tenant_objects(tenant)

        return tenant_objects

    def _credentials(self, secret: str | None) -> dict[str, str]:
        namespace = operator_namespace()
        if secret is None or namespace is None:
            return {}
        found = self.kube.get("v1", "secrets", secret, namespace) or {}
        data = {key: base64.b64decode(value).decode() for key, value in (found.get("data") or {}).items()}
        return ProviderEnvironment(infra.provider_environment(data), secret)

    def _secret_values(self) -> list[str]:
        dsn = self.environ.get(BACKEND_DSN_ENV) or self.environ.get(DATABASE_URL_ENV) or ""
        password = conninfo_to_dict(dsn).get("password") if dsn else None
        return [str(password)] if password else []

    def _write(self, tenant: str, fields: dict[str, Any]) -> None:
        status = {"status": {"infrastructure": fields}}
        try:
            self.kube.merge_patch(API_VERSION, "tenants", tenant, status, subresource="status")
        except KubeError as exc:
            if exc.status != 404:
                raise

    def shutdown(self) -> None:
        """Queued runs are dropped (their tenants start them again); runs in progress end at their timeout. The
        backend connections kept between runs are closed."""
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self._runner is not None:
            self._runner.close()
        if self._state_reader is not None:
            self._state_reader.close()


def _cloud_of(module: str) -> str:
    """The cloud of a shipped module's name (<cloud>/<model>); an override module's is not known: local."""
    cloud, _, model = module.partition("/")
    return cloud if model and cloud in {str(c) for c in Cloud} else str(Cloud.LOCAL)


def override_files(directory: str | None) -> dict[str, str]:
    """The `*_override.tf` files of PAYBILL_TERRAFORM_OVERRIDES_DIR, put in every run (say, provider endpoints)."""
    if not directory:
        return {}
    return {path.name: path.read_text() for path in sorted(Path(directory).glob("*_override.tf")) if path.is_file()}


def backend_dsn(dsn: str) -> str:
    """The DSN for Terraform's lib/pq, which requires TLS unless told: a loopback server without a stated sslmode
    is asked without it (as psycopg's `prefer` would end up), any other keeps what the DSN says."""
    parts = conninfo_to_dict(dsn)
    loopback = str(parts.get("host", "")) in ("", "localhost", "127.0.0.1", "::1") or str(parts.get("host")).startswith(
        "/"
    )
    return make_conninfo(dsn, sslmode="disable") if loopback and "sslmode" not in parts else dsn


def _retiring(before: InfrastructureStatus, workspace: str) -> dict[str, Any]:
    """An apply in a new model's workspace leaves the previous model's infrastructure to destroy once the data
    moved (one at a time: a model left before that one was destroyed stays recorded)."""
    left = (
        before.workspace is not None and before.workspace != workspace and before.appliedDigest and not before.destroyed
    )
    if not left or before.retiring:
        return {}
    return {"retiring": before.workspace, "retiringModule": before.module}


def _awaiting(
    runner: Executor, tenant: str, desired: infra.Desired, summary: PlanSummary, message: str
) -> dict[str, Any]:
    """A saved plan that only an approval applies: recorded with the configuration it was made from."""
    runner.record_planned(tenant, summary.plan_hash, desired.digest)
    return {
        **_summary(summary),
        "lastResult": infra.AWAITING,
        "module": desired.module,
        "configDigest": desired.digest,
        "failures": 0,
        "message": message,
    }


def _summary(summary: Any) -> dict[str, Any]:
    return {
        "planHash": summary.plan_hash,
        "artifact": summary.artifact,
        "adds": summary.adds,
        "changes": summary.changes,
        "destroys": summary.destroys,
    }


def observe_infrastructure(memo: kopf.Memo, tenant: TenantObject, plan: PlanObject | None) -> infra.InfraSeen | None:
    """None: this operator runs no Terraform at all."""
    runs: InfrastructureRuns | None = memo.get("infrastructure")
    return runs.seen(tenant, plan) if runs is not None else None


# --- kopf ------------------------------------------------------------------------------------------------------------


@kopf.on.startup()
def start_infrastructure_runs(memo: kopf.Memo, **_: Any) -> None:
    memo.infrastructure = InfrastructureRuns(memo.kube, memo.get("audit"), os.environ)


@kopf.on.cleanup()
def stop_infrastructure_runs(memo: kopf.Memo, **_: Any) -> None:
    if memo.get("infrastructure") is not None:
        memo.infrastructure.shutdown()


def _deleted(type: str, **_: Any) -> bool:
    return type == "DELETED"


@kopf.on.event(GROUP, VERSION, "tenants", when=_deleted)
def forget_tenant_runs(uid: str, memo: kopf.Memo, **_: Any) -> None:
    """A deleted Tenant's runs are forgotten: a new Tenant of its name starts with none."""
    runs: InfrastructureRuns | None = memo.get("infrastructure")
    if runs is not None:
        runs.forget(uid)


APPROVAL_SEEN = f"{TRIGGER}/approve-plan"


def _approval_unseen(annotations: kopf.Annotations, **_: Any) -> bool:
    approved = annotations.get(infra.APPROVE_ANNOTATION)
    return approved is not None and approved != annotations.get(APPROVAL_SEEN)


@kopf.on.event(GROUP, VERSION, "tenants", when=_approval_unseen)
def relay_approval(name: str, annotations: kopf.Annotations, memo: kopf.Memo, **_: Any) -> None:
    """kopf leaves its own prefix's annotations (paybill.dev/*) out of what counts as a change: an approval is
    relayed to a trigger annotation, so that the tenant reconciles on it."""
    touch(memo.kube, "tenants", name, "approve-plan", annotations[infra.APPROVE_ANNOTATION])


def _provisioned(status: kopf.Status, **_: Any) -> bool:
    return bool((status.get("infrastructure") or {}).get("appliedDigest"))


@kopf.timer(GROUP, VERSION, "tenants", interval=DRIFT_TICK, when=_provisioned)
def drift_due(name: str, spec: kopf.Spec, status: kopf.Status, memo: kopf.Memo, **_: Any) -> None:
    """A tenant whose drift check is due reconciles (the decision starts the check); one touch per period."""
    plan = memo.kube.get(API_VERSION, "plans", spec.get("planRef", ""))
    every = (((plan or {}).get("spec") or {}).get("provisioning") or {}).get("driftCheckSeconds") or 0
    checked = (status.get("infrastructure") or {}).get("driftCheckedAt")
    if every and infra.elapsed(checked, datetime.datetime.now(datetime.UTC)) >= every:
        touch(memo.kube, "tenants", name, "drift", str(checked))
