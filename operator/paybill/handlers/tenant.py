"""Tenant handlers: read the world, ask lifecycle.reconcile what to do, do it, write the status it built.

Level-based and idempotent: every reconcile reads the world (plan, subscriptions, namespace, recorded database
placement) and converges it, so an operator killed at any point reaches the same end state.
"""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path
from typing import Any, assert_never

import kopf
import psycopg

from ..api.meta import API_VERSION, GROUP, VERSION, now_rfc3339
from ..api.plan import PlanSpec
from ..api.subscription import SubscriptionSpec
from ..api.tenant import TenantPhase as Phase
from ..api.tenant import TenantSpec, TenantStatus
from ..billing.subscription import Billed
from ..database import DatabaseUnavailable, MigrationError, NameConflict, TenantDatabases
from ..errors import first_line
from ..kubeclient import KubeError, resource_path
from ..lifecycle import reconcile as decisions
from ..lifecycle.drift import ObjectConflict
from ..lifecycle.machine import Transition
from ..lifecycle.reconcile import Failure, FailureKind, Observed, Outcome, TenantObject
from ..lifecycle.tenant import CREDENTIALS_SECRET, SecretConflict, credentials_secret, owned_secret, secret_field
from . import events
from .apply import TENANT_GRANTS, converge, operator_namespace, publish_secret, touch

FAILURES: dict[type[BaseException], FailureKind] = {
    DatabaseUnavailable: FailureKind.DATABASE_UNAVAILABLE,
    MigrationError: FailureKind.MIGRATION_FAILED,
    NameConflict: FailureKind.NAME_CONFLICT,
    SecretConflict: FailureKind.SECRET_CONFLICT,
    ObjectConflict: FailureKind.OBJECT_CONFLICT,
    psycopg.Error: FailureKind.DATABASE_ERROR,
    KubeError: FailureKind.API_ERROR,
}


def failure_of(exc: BaseException) -> Failure | None:
    kind = next((kind for cls, kind in FAILURES.items() if isinstance(exc, cls)), None)
    return None if kind is None else Failure(kind, first_line(exc))


@kopf.index(GROUP, VERSION, "subscriptions")
def subscriptions_by_tenant(name: str, spec: kopf.Spec, **_: Any) -> dict[str, Billed]:
    """The subscriptions of each tenant, in memory (the billing the reconcile reads)."""
    return {spec.get("tenantRef", ""): Billed(name, SubscriptionSpec.model_validate(dict(spec)))}


class Shell:
    """Reads the world for one reconcile and carries out what `decisions` asked for."""

    def __init__(self, body: kopf.Body, memo: kopf.Memo) -> None:
        self.body, self.kube, self.audit = body, memo.kube, memo.audit
        self.databases: TenantDatabases | None = memo.databases
        self.tenant = TenantObject(
            name=body.metadata.name,
            uid=body.metadata.uid,
            spec=TenantSpec.model_validate(dict(body.spec)),
            status=TenantStatus.model_validate(dict(body.get("status") or {})),
            generation=body.metadata.get("generation"),
        )
        self.phase = self.tenant.phase
        self.backup = self.tenant.status.backup
        self._password: str | None = None

    def observe(self, subscriptions: list[Billed], retry: int) -> Observed:
        plan = self.kube.get(API_VERSION, "plans", self.tenant.spec.planRef)
        return Observed(
            plan=decisions.PlanObject(plan["metadata"]["name"], PlanSpec.model_validate(plan["spec"]))
            if plan
            else None,
            subscriptions=tuple(subscriptions),
            namespace=self.kube.get("v1", "namespaces", self.tenant.namespace),
            operator_namespace=operator_namespace(),
            database_configured=self.databases is not None,
            retry=retry,
            **self._observe_data(plan["spec"]["isolation"] if plan else None),
        )

    def _observe_data(self, isolation: str | None) -> dict[str, Any]:
        if self.databases is None:
            return {}
        try:
            current, _, previous = self.databases.recorded(self.tenant.name)
            target = self.databases.placement_for(self.tenant.name, isolation) if isolation else None
            left = (self.databases.placement_for(self.tenant.name, previous),) if previous else ()
        except (DatabaseUnavailable, psycopg.Error) as exc:
            return {"data_error": failure_of(exc)}
        backup = self.tenant.status.backup
        intact = backup is not None and _intact(Path(backup.location), backup.sha256)
        return {"data": decisions.DataPlacement(current, left, target), "backup_intact": intact}

    def carry_out(self, outcome: Outcome, retry: int, patch: kopf.Patch | None) -> None:
        """The actions in order; if one fails, what `decisions.failed` makes of it instead of the rest."""
        try:
            for action in outcome.actions:
                self.act(action)
        except tuple(FAILURES) as exc:
            failure = failure_of(exc)
            assert failure is not None
            if outcome.offboarding:
                outcome = decisions.failed_offboarding(failure.message)
            else:
                outcome = decisions.failed(self.tenant, failure, retry, self.phase)
        self.record(outcome.transitions, outcome.why)
        if outcome.status is not None and patch is not None:
            patch.status.update(outcome.status.model_dump(mode="json", by_alias=True, exclude_unset=True))
        for notice in outcome.events:
            (events.warn if notice.warning else events.info)(self.body, reason=notice.reason, message=notice.message)
        if outcome.retry is not None:
            raise kopf.TemporaryError(outcome.retry_message, delay=outcome.retry)

    def act(self, action: decisions.Action) -> None:
        name, databases = self.tenant.name, self.databases
        match action:
            case decisions.ConvergeObject(manifest, announce):
                converge(self.kube, self.body, dict(manifest))
                if announce is not None:
                    events.info(self.body, reason=announce.reason, message=announce.message)
            case decisions.ProvisionData(isolation):
                assert databases is not None
                databases.provision(name, isolation, self.password())
            case decisions.EnterPhase(transitions, why):
                self.record(transitions, why)
                self.phase = transitions[-1].target
                self.patch_status({"phase": str(self.phase)})
            case decisions.MigrateData(source, target):
                assert databases is not None
                moved = databases.migrate(name, target.isolation, self.password())
                checksums = ", ".join(f"{t} {c.rows} rows" for t, c in databases.checksums(moved).items())
                message = f"data moved from {source.isolation} to {moved.isolation}: {checksums}, checksums verified"
                events.info(self.body, reason="Migrated", message=message)
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
                self.backup = decisions.backup_status(databases.backup(placement, label).to_status(), now_rfc3339())
                self.patch_status({"backup": self.backup.model_dump(mode="json", exclude_none=True)})
                message = f"final backup at {self.backup.location} (sha256 {self.backup.sha256})"
                events.info(self.body, reason="BackupTaken", message=message)
            case decisions.RemoveData(placements):
                assert databases is not None
                for placement in placements:
                    databases.remove(placement)
                databases.drop_role(name)
                databases.forget(name)
            case decisions.DeleteBackupFile():
                if self.backup is not None:
                    Path(self.backup.location).unlink(missing_ok=True)
                    self.backup = decisions.destroyed(self.backup)
                    self.patch_status({"backup": self.backup.model_dump(mode="json", exclude_none=True)})
            case decisions.DeleteNamespace(namespace, uid):
                self.delete_namespace(namespace, uid)
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
            if self.audit is None:
                continue
            details = {"from": str(step.source), "to": str(step.target), "why": why, "uid": self.tenant.uid}
            try:
                self.audit.append(
                    "Tenant", self.tenant.name, str(step.event), {**details, "generation": self.tenant.generation}
                )
            except (DatabaseUnavailable, psycopg.Error):
                message = "could not append the audit record; the database is unreachable"
                events.warn(self.body, reason="AuditUnavailable", message=message)

    def patch_status(self, fields: dict[str, Any]) -> None:
        """Written at once (not at the end of the reconcile), so that a restart resumes from there."""
        self.kube.merge_patch(API_VERSION, "tenants", self.tenant.name, {"status": fields}, subresource="status")


def _intact(location: Path, sha256: str) -> bool:
    return location.exists() and hashlib.sha256(location.read_bytes()).hexdigest() == sha256


@kopf.on.resume(GROUP, VERSION, "tenants")
@kopf.on.create(GROUP, VERSION, "tenants")
@kopf.on.update(GROUP, VERSION, "tenants")  # type: ignore[arg-type]  # kopf passes the index by its name
def reconcile_tenant(
    body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, retry: int, subscriptions_by_tenant: kopf.Index, **_: Any
) -> None:
    shell = Shell(body, memo)
    seen = shell.observe(list(subscriptions_by_tenant.get(body.metadata.name, [])), retry)
    shell.carry_out(decisions.decide(shell.tenant, seen), retry, patch)


@kopf.on.delete(GROUP, VERSION, "tenants")
def delete_tenant(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    shell = Shell(body, memo)
    shell.carry_out(decisions.offboard(shell.tenant, shell.observe([], 0), deleting=True), 0, None)
    if shell.backup is not None:
        message = f"tenant deleted; final backup {shell.backup.location} sha256 {shell.backup.sha256}"
        events.info(body, reason="Offboarded", message=message)
