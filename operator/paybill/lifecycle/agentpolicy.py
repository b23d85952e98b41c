"""The AgentPolicy reconciler's decisions: (the policy, what was observed) -> the action, status, Events. Pure.

The handler (handlers/agentpolicy.py) reads the policy's Tenant, the operator's records of its data and its
credentials Secret into `Observed` and calls `decide`; when that asks it to install, it installs and publishes the
credentials, and hands what came of it to `installed` or `failed`. Deleting a policy is `deleting`, then
`uninstalled` (or `uninstall_failed`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from ..api.agentpolicy import AgentPolicySpec, AgentPolicyStatus
from ..api.tenant import Access, DatabasePlacement, TenantPhase, TenantStatus
from .agents import AuditRecord, Outcome, Report, Retry, Wait
from .evidence import Records, agent_placement_problem, least_access
from .outcome import Notice
from .tenant import agent_grants_key

INSTALLED_PHASES = (TenantPhase.ACTIVE, TenantPhase.SUSPENDED)
NO_DATABASE = "the operator has no tenant database"
CONFLICT_DELAY = 60.0  # a name someone else holds: looked at again slowly


AGENT_SECRET_LABEL = "paybill.dev/agent-login"  # "true" on an agent's Secret: what the repair watch lists


def secret_name(policy: str) -> str:
    """The Secret holding the agent's login."""
    return f"agent-{policy}"


@dataclass(frozen=True)
class PolicyObject:
    """The AgentPolicy as read, parsed once through its models."""

    name: str
    namespace: str
    spec: AgentPolicySpec
    status: AgentPolicyStatus = field(default_factory=AgentPolicyStatus)
    expected_grants: str | None = None  # the tenant state its grants must follow (set by the Tenant's reconcile)


@dataclass(frozen=True)
class TenantView:
    """The Tenant that controls the policy's namespace."""

    name: str
    status: TenantStatus = field(default_factory=TenantStatus)
    uid: str = ""

    @property
    def access(self) -> Access:
        return Access(self.status.access or Access.NONE)


@dataclass(frozen=True)
class Observed:
    """The world as the handler read it for one reconcile."""

    tenant: TenantView | None
    database_configured: bool = True
    records: Records = field(default_factory=lambda: Records(None))  # the operator's own records of its data
    secret_conflict: str | None = None  # a Secret of the credentials' name the policy does not control


@dataclass(frozen=True)
class Install:
    """Install the policy in the tenant's data (its role, grants, row security), then publish its login."""

    tenant: str
    placement: DatabasePlacement
    access: Access
    previous_database: str | None  # where the grants were: dropped there when the data has moved


@dataclass(frozen=True)
class Uninstall:
    """Drop the policy's role, its grants and its row security (if the role is the policy's own)."""

    tenant: str
    database: str | None


@dataclass(frozen=True)
class Installation:
    """What installing found: the role, the policy version (policy and live schema), the tables granted."""

    role: str
    version: str
    tables: tuple[str, ...]


class FailureKind(StrEnum):
    INVALID_POLICY = "InvalidPolicy"  # the policy does not fit the tenant's schema: permanent until something changes
    NAME_CONFLICT = "NameConflict"  # a role Paybill did not create has the name: never adopted
    PLACEMENT_MISMATCH = "PlacementMismatch"  # the Tenant's status names data the operator's records do not bear out
    SECRET_CONFLICT = "SecretConflict"  # a Secret the policy does not control has the credentials' name
    DATABASE_UNAVAILABLE = "DatabaseUnavailable"


@dataclass(frozen=True)
class Failure:
    kind: FailureKind
    message: str


def decide(policy: PolicyObject, seen: Observed) -> Outcome:
    """Install when the tenant's data is ready, where the operator's own records say it is, and the credentials'
    name is free; otherwise say what is waited for. The Tenant's status is only evidence: an agent is never
    installed where it alone says the tenant's data is (it could name another tenant's)."""
    tenant = seen.tenant
    if tenant is None:
        return Outcome(wait=Wait("TenantNotFound", f"namespace {policy.namespace} belongs to no Tenant", 30))
    if not seen.database_configured:
        return Outcome(report=Report("Pending", False, "DatabaseNotConfigured", NO_DATABASE, AgentPolicyStatus()))
    placement = tenant.status.database
    if tenant.status.phase not in INSTALLED_PHASES or placement is None:
        message = f"tenant {tenant.name} is {tenant.status.phase or 'new'}; its database is not ready"
        return Outcome(wait=Wait("WaitingForTenant", message, 10))
    grants = agent_grants_key(tenant.status.access, placement.model_dump(by_alias=True))
    if policy.expected_grants and policy.expected_grants != grants:
        return Outcome(retry=Retry(f"tenant {tenant.name} is changing to {policy.expected_grants}", 1))
    if problem := agent_placement_problem(tenant.name, tenant.uid, placement, seen.records):
        return _conflict(FailureKind.PLACEMENT_MISMATCH, problem, tenant.name)
    if seen.secret_conflict is not None:
        return _conflict(FailureKind.SECRET_CONFLICT, seen.secret_conflict, tenant.name)
    # the agent may do no more than the tenant's role does in the database: status alone never grants
    access = least_access(tenant.access, seen.records.access)
    return Outcome(action=Install(tenant.name, placement, access, policy.status.database))


def installed(policy: PolicyObject, action: Install, done: Installation) -> Outcome:
    """Ready, with where the grants are; an Event and an audit record when the version or the access changed."""
    where = action.placement
    summary = (
        f"role {done.role} in {where.database}.{where.schema_}: {len(policy.spec.rules)} rules over "
        f"{', '.join(done.tables) or 'no tables'}; tenant access {action.access}"
    )
    status = AgentPolicyStatus(
        tenant=action.tenant,
        role=done.role,
        database=where.database,
        schema=where.schema_,
        tables=list(done.tables),
        access=action.access,
        policyVersion=done.version,
        credentialsSecret=secret_name(policy.name),
    )
    report = Report("Ready", True, "Installed", summary, status)
    if (policy.status.policyVersion, policy.status.access) == (done.version, action.access):
        return Outcome(report=report)
    details = {
        "tenant": action.tenant,
        "role": done.role,
        "database": where.database,
        "schema": where.schema_,
        "access": str(action.access),
        "policyVersion": done.version,
        "tables": list(done.tables),
    }
    return Outcome(
        report=report,
        events=(Notice("Installed", summary),),
        audit=AuditRecord("AgentPolicy", f"{policy.namespace}/{policy.name}", "Installed", details),
    )


def failed(failure: Failure, tenant: str) -> Outcome:
    """Installing or publishing the credentials failed."""
    if failure.kind == FailureKind.INVALID_POLICY:  # permanent until the policy, the tenant or its schema changes
        status = AgentPolicyStatus(tenant=tenant)
        return Outcome(
            report=Report("Invalid", False, failure.kind, failure.message, status),
            events=(Notice(failure.kind, failure.message, warning=True),),
        )
    if failure.kind == FailureKind.DATABASE_UNAVAILABLE:
        return Outcome(wait=Wait(failure.kind, failure.message, 10))
    return _conflict(failure.kind, failure.message, tenant)


def deleting(policy: PolicyObject, database_configured: bool) -> Outcome:
    """The role goes with the policy, if it was installed and the operator has a database (the Secret goes too)."""
    if not database_configured or not policy.status.tenant:
        return Outcome()
    return Outcome(action=Uninstall(policy.status.tenant, policy.status.database))


def uninstall_failed(message: str) -> Outcome:
    """The database was unavailable: the deletion waits for it, as long as it takes (the role must not outlive its
    policy), and a Warning Event says why it has not gone yet."""
    notice = Notice("UninstallWaiting", f"the policy's role is dropped once the database answers: {message}", True)
    return Outcome(events=(notice,), retry=Retry(message, 10))


def uninstalled(policy: PolicyObject, dropped: bool) -> Outcome:
    """An Event and an audit record when a role of the policy's was dropped."""
    if not dropped:
        return Outcome()
    return Outcome(
        events=(Notice("Uninstalled", f"role {policy.status.role} dropped"),),
        audit=AuditRecord(
            "AgentPolicy",
            f"{policy.namespace}/{policy.name}",
            "Uninstalled",
            {"tenant": policy.status.tenant, "role": policy.status.role},
        ),
    )


def _conflict(kind: FailureKind, message: str, tenant: str) -> Outcome:
    """Something the policy did not create has a name it needs: said in status and an Event, retried slowly."""
    return Outcome(
        report=Report("Conflict", False, kind, message, AgentPolicyStatus(tenant=tenant)),
        events=(Notice(kind, message, warning=True),),
        retry=Retry(message, CONFLICT_DELAY),
    )
