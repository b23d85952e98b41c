"""The Tenant's actions carried out: what lifecycle.reconcile asks for, done against the Kubernetes API and the
tenant database. Each action is safe to repeat; a failure is an exception the handler turns into a decision."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any, assert_never

import kopf
import psycopg

from ..api.meta import API_VERSION, now_rfc3339
from ..api.tenant import BackupStatus
from ..api.tenant import TenantPhase as Phase
from ..audit import AuditLog
from ..database import DatabaseUnavailable, MigrationError, NameConflict, TenantDatabases
from ..errors import first_line
from ..kubeclient import Kube, KubeError, resource_path
from ..lifecycle import infrastructure as infra
from ..lifecycle import reconcile as decisions
from ..lifecycle.drift import ObjectConflict
from ..lifecycle.evidence import PlacementMismatch
from ..lifecycle.machine import Transition
from ..lifecycle.reconcile import Failure, FailureKind, TenantObject
from ..lifecycle.tenant import CREDENTIALS_SECRET, SecretConflict, credentials_secret, owned_secret, secret_field
from . import events
from .agent_moves import install_agents_where_the_data_is
from .apply import TENANT_GRANTS, audit, converge, publish_secret, touch
from .compute import power_compute
from .infrastructure import InfrastructureRuns

FAILURES: dict[type[BaseException], FailureKind] = {
    DatabaseUnavailable: FailureKind.DATABASE_UNAVAILABLE,
    MigrationError: FailureKind.MIGRATION_FAILED,
    NameConflict: FailureKind.NAME_CONFLICT,
    PlacementMismatch: FailureKind.PLACEMENT_MISMATCH,
    SecretConflict: FailureKind.SECRET_CONFLICT,
    ObjectConflict: FailureKind.OBJECT_CONFLICT,
    psycopg.Error: FailureKind.DATABASE_ERROR,
    KubeError: FailureKind.API_ERROR,
}


def failure_of(exc: Exception, step: str) -> Failure:
    """What went wrong, in the decisions' terms; anything unforeseen names the step and the error's type."""
    kind = next((kind for cls, kind in FAILURES.items() if isinstance(exc, cls)), FailureKind.UNEXPECTED)
    if kind == FailureKind.UNEXPECTED:
        return Failure(kind, f"{step} failed: {type(exc).__name__}: {first_line(exc)}")
    return Failure(kind, first_line(exc))


class TenantActions:
    """Carries out one reconcile's actions for a Tenant; `phase` and `backup` follow what they did."""

    def __init__(self, body: kopf.Body, tenant: TenantObject, memo: kopf.Memo) -> None:
        self.body, self.tenant = body, tenant
        self.kube: Kube = memo.kube
        self.databases: TenantDatabases | None = memo.databases
        self.audit: AuditLog | None = memo.audit
        self.infrastructure: InfrastructureRuns | None = memo.get("infrastructure")
        self.phase: Phase = tenant.phase
        self.backup: BackupStatus | None = tenant.status.backup
        self._password: str | None = None

    def act(self, action: decisions.Action) -> None:
        name, databases = self.tenant.name, self.databases
        match action:
            case decisions.ConvergeObject(manifest, announce):
                converge(self.kube, self.body, dict(manifest))
                if announce is not None:
                    events.info(self.body, reason=announce.reason, message=announce.message)
            case decisions.ProvisionData(isolation):
                assert databases is not None
                if adopted := databases.claim_tenant(name, self.tenant.uid, self.tenant.adopt_retained):
                    took = f"took over the data Tenant uid {adopted} retained under the name {name} (annotation)"
                    events.info(self.body, reason="RetainedDataAdopted", message=took)
                    details = {"uid": self.tenant.uid, "retainedBy": adopted}
                    audit(self.body, self.audit, "Tenant", name, "adopted_retained_data", details)
                databases.provision(name, isolation, self.password())
            case decisions.EnterPhase(transitions, why, conditions):
                self.record(transitions, why)
                self.phase = transitions[-1].target
                said = [c.model_dump(mode="json", exclude_none=True) for c in conditions]
                self.patch_status({"phase": str(self.phase), **({"conditions": said} if said else {})})
            case decisions.MigrateData(source, target):
                assert databases is not None
                moved = databases.migrate(name, target.isolation, self.password())
                checksums = ", ".join(f"{t} {c.rows} rows" for t, c in databases.checksums(moved).items())
                message = f"data moved from {source.isolation} to {moved.isolation}: {checksums}, checksums verified"
                events.info(self.body, reason="Migrated", message=message)
            case decisions.AbandonMove():
                assert databases is not None
                databases.abandon_move(name)
            case decisions.FinishMove():
                assert databases is not None
                install_agents_where_the_data_is(self.kube, databases, name, self.tenant.namespace)
                databases.finish_move(name)
            case decisions.SetAccess(placement, access):
                assert databases is not None
                databases.set_access(placement, access)
            case decisions.PublishCredentials(p):
                assert databases is not None
                fields = databases.login_fields(p.role, self.password(), p.database, p.schema)
                publish_secret(self.kube, credentials_secret(self.tenant.manifest(), fields))
            case decisions.Touch(plural, target, key, value):
                touch(self.kube, plural, target, key, value)
            case decisions.TouchPolicies(namespace, key):
                for policy in self.kube.list(API_VERSION, "agentpolicies", namespace):
                    annotations = {"metadata": {"annotations": {TENANT_GRANTS: key}}}
                    self.kube.merge_patch(
                        API_VERSION, "agentpolicies", policy["metadata"]["name"], annotations, namespace
                    )
            case decisions.TakeBackup(placement, label):
                assert databases is not None
                self.backup = (
                    databases.backup(placement, label).to_model().model_copy(update={"takenAt": now_rfc3339()})
                )
                self.patch_status({"backup": self.backup.model_dump(mode="json", exclude_none=True)})
                message = f"final backup at {self.backup.location} (sha256 {self.backup.sha256})"
                events.info(self.body, reason="BackupTaken", message=message)
            case decisions.RemoveData(placements):
                assert databases is not None
                for placement in placements:
                    databases.remove(placement)
                databases.drop_role(name)
                databases.forget(name, keep_claim=action.keep_claim)
            case decisions.DeleteBackupFile():
                assert databases is not None and databases.backup_dir is not None
                own = databases.backup_dir / f"{decisions.backup_label(self.tenant)}.sql"
                if self.backup is not None and Path(self.backup.location) == own:  # never a file status names
                    own.unlink(missing_ok=True)
                    self.backup = decisions.destroyed(self.backup)
                    self.patch_status({"backup": self.backup.model_dump(mode="json", exclude_none=True)})
            case decisions.RetainName():
                assert databases is not None
                databases.retain_tenant(name)
            case decisions.ReleaseName():
                assert databases is not None
                databases.forget(name)
            case decisions.PowerCompute(wanted):
                power_compute(self.kube, self.body, name, wanted)
            case decisions.DeleteNamespace(namespace, uid):
                self.delete_namespace(namespace, uid)
            case (
                infra.PlanInfrastructure()
                | infra.ApplyInfrastructure()
                | infra.CheckDrift()
                | infra.DestroyInfrastructure()
            ):
                assert self.infrastructure is not None
                self.infrastructure.start(self.body, self.tenant, action)
            case _:
                assert_never(action)

    def password(self) -> str:
        """The tenant role's password: kept in the credentials Secret the Tenant controls, made once (again if the
        Secret is lost). A Secret of that name it does not control is a SecretConflict, never a password source."""
        if self._password is None:
            self._password = self._credentials()
        return self._password

    def _credentials(self) -> str:
        found = self.kube.get("v1", "secrets", CREDENTIALS_SECRET, self.tenant.namespace)
        secret = owned_secret(found, self.body, "Tenant")
        password = secret_field(secret, "password") if secret else None
        if password:
            return password
        password = secrets.token_urlsafe(24)
        try:
            self.kube.create(credentials_secret(self.tenant.manifest(), {"password": password}))
        except KubeError as exc:
            if exc.status != 409:
                raise
            return self._credentials()  # another reconcile made it first: use theirs
        return password

    def delete_namespace(self, namespace: str, uid: str) -> None:
        """The uid precondition stops a namespace that was replaced since it was checked from going too."""
        options = {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": uid}}
        try:
            self.kube.request("DELETE", resource_path("v1", "namespaces", None, namespace), options)
        except KubeError as exc:
            if exc.status not in (404, 409):  # gone already, or no longer the namespace we checked
                raise

    def record(self, transitions: tuple[Transition, ...], why: str) -> None:
        """Each transition: an Event, and a record in the audit log."""
        for step in transitions:
            message = f"{step.source} -> {step.target} ({step.event}): {why}"
            (events.warn if step.target == Phase.FAILED else events.info)(
                self.body, reason=str(step.target), message=message
            )
            details: dict[str, Any] = {"from": str(step.source), "to": str(step.target), "why": why}
            details |= {"uid": self.tenant.uid, "generation": self.tenant.generation}
            audit(self.body, self.audit, "Tenant", self.tenant.name, str(step.event), details)

    def patch_status(self, fields: dict[str, Any]) -> None:
        """Written at once (not at the end of the reconcile), so that a restart resumes from there."""
        self.kube.merge_patch(API_VERSION, "tenants", self.tenant.name, {"status": fields}, subresource="status")
