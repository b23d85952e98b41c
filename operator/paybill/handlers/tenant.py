"""Tenant handlers: read the object, call the lifecycle and database domains, write status.

Level-based and idempotent: every reconcile reads the world (plan, subscription, namespace, recorded
database placement) and converges it, so an operator killed at any point reaches the same end state.
"""

from __future__ import annotations

import datetime
import hashlib
import secrets
from pathlib import Path
from typing import Any

import kopf
import psycopg

from ..api.meta import API_VERSION, GROUP, VERSION, now_rfc3339
from ..api.plan import Isolation
from ..api.subscription import Restriction
from ..api.tenant import Access, DeletionPolicy
from ..api.tenant import TenantPhase as Phase
from ..billing.grace import BillingState, billing_state
from ..database.tenants import DatabaseUnavailable, MigrationError, NameConflict, Placement, TenantDatabases
from ..errors import first_line
from ..kubeclient import Kube, KubeError, resource_path
from ..lifecycle.conditions import set_condition
from ..lifecycle.drift import ObjectConflict
from ..lifecycle.machine import Event, SuspensionCause, Transition, TransitionRefused, path, retry_delay, transition
from ..lifecycle.references import tenant_plan_mismatch
from ..lifecycle.tenant import (
    CREDENTIALS_SECRET,
    SecretConflict,
    agent_grants_key,
    check_namespace,
    credentials_secret,
    may_delete_namespace,
    namespace_manifest,
    owned_secret,
    secret_field,
    tenant_namespace,
    tenant_resources,
)
from . import events
from .apply import TENANT_GRANTS, converge, operator_namespace, publish_secret, touch

RETRY_DELAY = 10  # the first wait; later ones back off (lifecycle.machine.retry_delay), capped at 5 minutes
NO_DATABASE = "the operator has no tenant database: set PAYBILL_DATABASE_URL and restart it"
FAILURES = (DatabaseUnavailable, MigrationError, NameConflict, SecretConflict, ObjectConflict, KubeError, psycopg.Error)


class _Status:
    """Accumulates the status patch of one reconcile."""

    def __init__(self, body: kopf.Body, patch: kopf.Patch) -> None:
        self.body, self.patch = body, patch
        self.generation = body.metadata.get("generation")
        self.current = dict(body.get("status") or {})
        self.phase = Phase(self.current.get("phase") or Phase.PENDING)
        self.conditions = list(self.current.get("conditions") or [])

    def condition(self, type_: str, ok: bool | None, reason: str, message: str) -> None:
        self.conditions = set_condition(self.conditions, type_, ok, reason, message, self.generation)

    def write(self, phase: Phase | str, **fields: Any) -> None:
        self.patch.status.update(
            phase=str(phase), observedGeneration=self.generation, conditions=self.conditions, **fields
        )

    def wait(self, phase: Phase | str, reason: str, message: str, delay: float = RETRY_DELAY) -> None:
        """Record why the tenant is not ready, post a Warning Event when the reason is new (not on every
        retry), and hand the retry to kopf."""
        said = next((c.get("reason") for c in self.conditions if c.get("type") == "Ready"), None)
        self.condition("Ready", False, reason, message)
        self.write(phase)
        if said != reason:
            events.warn(self.body, reason=reason, message=message)
        raise kopf.TemporaryError(message, delay=delay)


# --- billing: the subscription of each tenant, indexed in memory ------------------------------------------------


@kopf.index(GROUP, VERSION, "subscriptions")
def subscriptions_by_tenant(name: str, spec: kopf.Spec, **_: Any) -> dict[str, dict[str, Any]]:
    return {
        spec.get("tenantRef", ""): {
            "name": name,
            "billingStatus": spec.get("billingStatus", "active"),
            "pastDueSince": spec.get("pastDueSince"),
            "planRef": spec.get("planRef"),
        }
    }


def billing_of(index: kopf.Index, tenant: str, plan: dict[str, Any]) -> BillingState:
    subscriptions = sorted(index.get(tenant, []), key=lambda s: s["name"])
    if not subscriptions:
        return BillingState(Restriction.NONE, "no subscription: not billed")
    subscription = subscriptions[0]
    return billing_state(
        subscription["billingStatus"],
        subscription.get("pastDueSince"),
        int(plan["spec"].get("gracePeriodDays", 7)),
        datetime.datetime.now(datetime.UTC),
    )


# --- reconcile ------------------------------------------------------------------------------------------------


@kopf.on.resume(GROUP, VERSION, "tenants")
@kopf.on.create(GROUP, VERSION, "tenants")
@kopf.on.update(GROUP, VERSION, "tenants")  # type: ignore[arg-type]  # kopf passes the index by its name
def reconcile_tenant(
    body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, retry: int, subscriptions_by_tenant: kopf.Index, **_: Any
) -> None:
    kube: Kube = memo.kube
    name, spec = body.metadata.name, dict(body.spec)
    status = _Status(body, patch)
    if status.phase in (Phase.OFFBOARDING, Phase.OFFBOARDED) or spec.get("offboard"):
        if status.phase == Phase.OFFBOARDED and not spec.get("offboard"):
            refused = TransitionRefused(
                Phase.OFFBOARDED, Event.PROVISION, "offboarding is irreversible; create a new Tenant"
            )
            events.warn(body, reason="TransitionRefused", message=str(refused))
            return
        offboard(body, memo, status)
        return

    plan = kube.get(API_VERSION, "plans", spec["planRef"])
    if plan is None:
        status.wait(
            status.phase if status.phase != Phase.FAILED else Phase.PENDING,
            "PlanNotFound",
            f"plan {spec['planRef']!r} does not exist",
            delay=retry_delay(retry, base=RETRY_DELAY),
        )
        return
    billing = billing_of(subscriptions_by_tenant, name, plan)
    causes = [
        c.value
        for c in SuspensionCause
        if (c == SuspensionCause.MANUAL and spec.get("suspended"))
        or (c == SuspensionCause.BILLING and billing.suspends)
    ]
    goal = Phase.SUSPENDED if causes else Phase.ACTIVE
    access = Access.NONE if causes else billing.access
    isolation = Isolation(plan["spec"]["isolation"])
    namespace = tenant_namespace(name, spec)

    try:
        _ensure_namespace(kube, body, plan, status, namespace)
        for manifest in tenant_resources(dict(body), plan):
            converge(kube, body, manifest)
        if memo.databases is None:
            status.condition("DatabaseReady", False, "NotConfigured", NO_DATABASE)
            status.wait(status.phase, "DatabaseNotConfigured", NO_DATABASE, delay=retry_delay(retry, base=RETRY_DELAY))
        placement = _ensure_database(body, memo, status, isolation, access, goal)
    except FAILURES as exc:
        _fail(body, memo, status, exc, retry)
        return

    _advance(body, memo, status.phase, goal, f"plan {plan['metadata']['name']}, {billing.message}")
    status.condition("Billing", billing.restriction == Restriction.NONE, _camel(billing.restriction), billing.message)
    _check_subscriptions(body, status, list(subscriptions_by_tenant.get(name, [])))
    if causes:
        status.condition("Ready", False, "Suspended", f"suspended ({', '.join(causes)}); data kept, logins refused")
    else:
        status.condition(
            "Ready",
            True,
            "Provisioned",
            f"tenant is active on plan {plan['metadata']['name']}"
            + ("; data is read-only" if access == Access.READ_ONLY else ""),
        )
    before = body.get("status") or {}
    status.write(
        goal,
        namespace=namespace,
        plan=plan["metadata"]["name"],
        suspendedFor=causes,
        isolation=str(placement.isolation),
        access=str(access),
        restriction=str(billing.restriction),
        database=placement.to_status(),
        credentialsSecret=CREDENTIALS_SECRET,
    )
    if before.get("plan") != plan["metadata"]["name"]:  # its subscriptions check the plan they bill again
        for subscription in subscriptions_by_tenant.get(name, []):
            touch(kube, "subscriptions", subscription["name"], "tenant-plan", plan["metadata"]["name"])
    grants = agent_grants_key(str(access), placement.to_status())
    if grants != agent_grants_key(before.get("access"), before.get("database")):
        _touch_policies(kube, namespace, grants)


def _check_subscriptions(body: kopf.Body, status: _Status, subscriptions: list[dict[str, Any]]) -> None:
    """A Tenant billed for another plan than its own: a PlanMismatch condition and a Warning Event (once per
    change); the condition turns False once they agree again."""
    mismatch = tenant_plan_mismatch(body.spec["planRef"], subscriptions)
    previous = next((c for c in status.conditions if c.get("type") == "PlanMismatch"), None)
    if mismatch is not None:
        if previous is None or previous.get("message") != mismatch.message:
            events.warn(body, reason=mismatch.reason, message=mismatch.message)
        status.condition("PlanMismatch", True, mismatch.reason, mismatch.message)
    elif previous is not None:
        status.condition("PlanMismatch", False, "PlanAgrees", "the tenant's subscriptions bill the plan it is on")


def _touch_policies(kube: Kube, namespace: str, key: str) -> None:
    """The agents' grants follow the tenant: its AgentPolicies reconcile again, told what to expect.

    kopf writes this reconcile's status only after it returns, so a policy may read the old status
    first; the annotation tells it to wait for the new one."""
    for policy in kube.list(API_VERSION, "agentpolicies", namespace):
        kube.merge_patch(
            API_VERSION,
            "agentpolicies",
            policy["metadata"]["name"],
            {"metadata": {"annotations": {TENANT_GRANTS: key}}},
            namespace,
        )


def _ensure_namespace(kube: Kube, body: kopf.Body, plan: dict[str, Any], status: _Status, namespace: str) -> None:
    check = check_namespace(kube.get("v1", "namespaces", namespace), namespace, body.metadata.uid, operator_namespace())
    if not check.ok:
        status.condition("NamespaceReady", False, check.reason, check.message)
        status.wait(
            status.phase if check.reason == "NamespaceTerminating" else Phase.FAILED, check.reason, check.message
        )
    converge(kube, body, namespace_manifest(dict(body), plan))
    if check.reason == "Missing":
        events.info(body, reason="NamespaceCreated", message=f"namespace {namespace} created")
    status.condition("NamespaceReady", True, "Provisioned", f"namespace {namespace} is ready")


def _credentials(kube: Kube, body: kopf.Body) -> str:
    """The tenant role's password: kept in the credentials Secret the Tenant controls, made once (again if the
    Secret is lost). A Secret of that name it does not control is a SecretConflict, never a password source."""
    namespace = tenant_namespace(body.metadata.name, dict(body.spec))
    secret = owned_secret(kube.get("v1", "secrets", CREDENTIALS_SECRET, namespace), body, "Tenant")
    password = secret_field(secret, "password") if secret else None
    if password:
        return password
    password = secrets.token_urlsafe(24)
    try:
        kube.create(credentials_secret(dict(body), {"password": password}))
    except KubeError as exc:
        if exc.status != 409:
            raise
        return _credentials(kube, body)  # another reconcile made it first: use theirs
    return password


def _publish_credentials(
    kube: Kube, body: kopf.Body, databases: TenantDatabases, placement: Placement, password: str
) -> None:
    fields = databases.login_fields(placement.role, password, placement.database, placement.schema)
    publish_secret(kube, credentials_secret(dict(body), fields))


def _ensure_database(
    body: kopf.Body, memo: kopf.Memo, status: _Status, isolation: Isolation, access: Access, goal: Phase
) -> Placement:
    databases: TenantDatabases = memo.databases
    name = body.metadata.name
    password = _credentials(memo.kube, body)
    placement = databases.provision(name, isolation, password)
    if placement.isolation != isolation:
        if goal == Phase.SUSPENDED:
            status.condition(
                "Migrated",
                False,
                "WaitingForResume",
                f"moving from {placement.isolation} to {isolation} waits until the tenant resumes",
            )
        else:
            placement = _migrate(body, memo, status, placement, isolation, password)
    databases.set_access(placement, access)
    _publish_credentials(memo.kube, body, databases, placement, password)
    status.condition(
        "DatabaseReady",
        True,
        "Provisioned",
        f"{placement.isolation} data in database {placement.database}, schema {placement.schema}; access {access}",
    )
    return placement


def _migrate(
    body: kopf.Body, memo: kopf.Memo, status: _Status, source: Placement, isolation: Isolation, password: str
) -> Placement:
    name = body.metadata.name
    if status.phase == Phase.ACTIVE:
        _advance(body, memo, Phase.ACTIVE, Phase.MIGRATING, f"{source.isolation} -> {isolation}")
        memo.kube.merge_patch(
            API_VERSION, "tenants", name, {"status": {"phase": Phase.MIGRATING}}, subresource="status"
        )
        status.phase = Phase.MIGRATING
    target = memo.databases.migrate(name, isolation, password)
    checksums = memo.databases.checksums(target)
    events.info(
        body,
        reason="Migrated",
        message=f"data moved from {source.isolation} to {target.isolation}: "
        + ", ".join(f"{t} {c.rows} rows" for t, c in checksums.items())
        + ", checksums verified",
    )
    status.condition("Migrated", True, "Verified", f"moved from {source.isolation} to {target.isolation}")
    return target


def _fail(body: kopf.Body, memo: kopf.Memo, status: _Status, exc: BaseException, retry: int) -> None:
    reasons: dict[type[BaseException], str] = {
        DatabaseUnavailable: "DatabaseUnavailable",
        MigrationError: "MigrationFailed",
        NameConflict: "NameConflict",
        SecretConflict: "SecretConflict",
        ObjectConflict: "ObjectConflict",
    }
    reason = reasons.get(type(exc), "ProvisioningFailed")
    message = first_line(exc)
    if isinstance(exc, (DatabaseUnavailable, MigrationError, NameConflict, SecretConflict, psycopg.Error)):
        status.condition("DatabaseReady", False, reason, message)
    if isinstance(exc, ObjectConflict):
        status.condition("NamespaceReady", False, reason, message)
    phase = status.phase
    if phase in (Phase.PENDING, Phase.PROVISIONING, Phase.MIGRATING):
        _advance(body, memo, phase, Phase.FAILED, message)
        phase = Phase.FAILED
    status.wait(phase, reason, message, delay=retry_delay(retry))


# --- transitions: Events and audit records -----------------------------------------------------------------------


def _chain(source: Phase, target: Phase) -> list[Transition]:
    if source == target:
        return []
    if target == Phase.FAILED:
        if source == Phase.MIGRATING:
            return [transition(source, Event.FAIL)]
        return [*path(source, Phase.PROVISIONING), transition(Phase.PROVISIONING, Event.FAIL)]
    return path(source, target)


def _advance(body: kopf.Body, memo: kopf.Memo, source: Phase, target: Phase, why: str) -> None:
    for step in _chain(source, target):
        message = f"{step.source} -> {step.target} ({step.event}): {why}"
        if step.target == Phase.FAILED:
            events.warn(body, reason=str(step.target), message=message)
        else:
            events.info(body, reason=str(step.target), message=message)
        if memo.audit is not None:
            try:
                memo.audit.append(
                    "Tenant",
                    body.metadata.name,
                    str(step.event),
                    {
                        "from": str(step.source),
                        "to": str(step.target),
                        "why": why,
                        "uid": body.metadata.uid,
                        "generation": body.metadata.get("generation"),
                    },
                )
            except (DatabaseUnavailable, psycopg.Error):
                events.warn(
                    body,
                    reason="AuditUnavailable",
                    message="could not append the audit record; the database is unreachable",
                )


def _camel(value: str) -> str:
    return "".join(part.title() for part in str(value).split("_"))


# --- offboarding --------------------------------------------------------------------------------------------------


def offboard(body: kopf.Body, memo: kopf.Memo, status: _Status | None = None) -> dict[str, Any] | None:
    """Final backup, then the deletion policy, then the namespace. Each step is safe to repeat."""
    kube: Kube = memo.kube
    name, spec = body.metadata.name, dict(body.spec)
    current = dict(body.get("status") or {})
    phase = Phase(current.get("phase") or Phase.PENDING)
    if phase == Phase.OFFBOARDED:
        return current.get("backup")
    if phase != Phase.OFFBOARDING:
        _advance(body, memo, phase, Phase.OFFBOARDING, "offboarding requested")
        _patch_status(kube, body, {"phase": Phase.OFFBOARDING})
    backup = current.get("backup")
    policy = DeletionPolicy(spec.get("deletionPolicy", DeletionPolicy.SNAPSHOT))
    databases: TenantDatabases | None = memo.databases
    try:
        if databases is not None:
            placement, _, previous = databases.recorded(name)
            if placement is not None:
                databases.set_access(placement, Access.NONE)
                if backup is None or not _backup_intact(backup):
                    taken = databases.backup(placement, f"{name}-{body.metadata.uid}")
                    backup = {**taken.to_status(), "takenAt": now_rfc3339()}
                    _patch_status(kube, body, {"backup": backup})
                    events.info(
                        body,
                        reason="BackupTaken",
                        message=f"final backup at {backup['location']} (sha256 {backup['sha256']})",
                    )
                if policy != DeletionPolicy.RETAIN:
                    databases.remove(placement)
                    if previous:
                        databases.remove(databases.placement_for(name, previous))
                    databases.drop_role(name)
                    databases.forget(name)
                if policy == DeletionPolicy.DESTROY and backup is not None:
                    Path(backup["location"]).unlink(missing_ok=True)
                    backup = {**backup, "location": f"{backup['location']} (deleted: deletionPolicy destroy)"}
        _delete_owned_namespace(kube, body, tenant_namespace(name, spec))
    except FAILURES as exc:
        message = first_line(exc)
        events.warn(body, reason="OffboardingFailed", message=message)
        raise kopf.TemporaryError(message, delay=RETRY_DELAY) from None
    _advance(body, memo, Phase.OFFBOARDING, Phase.OFFBOARDED, f"deletion policy {policy}")
    if status is not None:
        status.condition("Ready", False, "Offboarded", f"offboarded; data {policy}")
        status.write(Phase.OFFBOARDED, backup=backup, access=str(Access.NONE))
    return backup


def _delete_owned_namespace(kube: Kube, body: kopf.Body, namespace: str) -> None:
    """Delete the namespace only if this Tenant controls it; the uid precondition stops a namespace that was
    replaced in between from going too."""
    existing = kube.get("v1", "namespaces", namespace)
    if existing is None:
        return
    if not may_delete_namespace(existing, body.metadata.uid, operator_namespace()):
        events.info(body, reason="NamespaceKept", message=f"namespace {namespace} is not this tenant's; left as it is")
        return
    try:
        preconditions = {"uid": existing["metadata"]["uid"]}
        kube.request(
            "DELETE",
            resource_path("v1", "namespaces", None, namespace),
            {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": preconditions},
        )
    except KubeError as exc:
        if exc.status not in (404, 409):  # gone already, or no longer the namespace we checked
            raise


def _backup_intact(backup: dict[str, Any]) -> bool:
    location = Path(backup["location"])
    return location.exists() and hashlib.sha256(location.read_bytes()).hexdigest() == backup["sha256"]


def _patch_status(kube: Kube, body: kopf.Body, fields: dict[str, Any]) -> None:
    kube.merge_patch(API_VERSION, "tenants", body.metadata.name, {"status": fields}, subresource="status")


@kopf.on.delete(GROUP, VERSION, "tenants")
def delete_tenant(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    backup = offboard(body, memo)
    if backup is not None:
        events.info(
            body,
            reason="Offboarded",
            message=f"tenant deleted; final backup {backup['location']} sha256 {backup['sha256']}",
        )
