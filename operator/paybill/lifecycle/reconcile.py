"""The Tenant reconciler's decisions: (the Tenant, what was observed) -> actions, status, Events. Pure.

The handler (handlers/tenant.py) reads the world into `Observed`, calls `decide` (or `failed` when an action
raises), carries out the actions in order and writes the status this module built. Phases move only along the
state machine's table (lifecycle/machine.py), and each step is an Event and an audit record.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from ..api.meta import Condition
from ..api.plan import Isolation, PlanSpec
from ..api.subscription import Restriction
from ..api.tenant import ADOPT_RETAINED_DATA, Access, BackupStatus, DeletionPolicy, TenantSpec, TenantStatus
from ..api.tenant import TenantPhase as Phase
from ..billing.grace import Billed, billing_of
from ..clouds.compute import CONDITION as COMPUTE_CONDITION
from ..clouds.compute import PowerCompute, decide_compute
from .conditions import set_condition
from .infrastructure import (
    APPROVE_ANNOTATION,
    RESERVED_PREFIX,
    InfraAction,
    InfraDecision,
    InfraSeen,
    Teardown,
    decide_infrastructure,
    decide_retirement,
    decide_teardown,
    pool_objects_left,
)
from .machine import Event, SuspensionCause, Transition, TransitionRefused, path, retry_delay, transition
from .outcome import Notice, Touch
from .references import tenant_plan_mismatch
from .tenant import (
    CREDENTIALS_SECRET,
    NamespaceCheck,
    agent_grants_key,
    check_namespace,
    may_delete_namespace,
    namespace_manifest,
    tenant_namespace,
    tenant_resources,
)

if TYPE_CHECKING:
    from ..database.placement import Placement

RETRY_DELAY = 10.0  # the first wait; later ones back off (machine.retry_delay), capped at 5 minutes
VERIFY_DELAY = 1.0  # after a repair of broken data, look again this soon
OUTAGE_RETRY_CAP = 5.0  # an unreachable database is retried at most this far apart (a refused connect is cheap)
NO_DATABASE = "the operator has no tenant database: set PAYBILL_DATABASE_URL and restart it"


# --- what the reconciler reads -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TenantObject:
    """The Tenant as read, parsed once through its models."""

    name: str
    uid: str
    spec: TenantSpec
    status: TenantStatus = field(default_factory=TenantStatus)
    generation: int | None = None
    approved_plan: str | None = None  # the paybill.dev/approve-plan annotation (manual approval of a plan)
    adopt_retained: str | None = None  # the earlier Tenant whose retained data it takes over (its annotation)

    @classmethod
    def of(cls, manifest: Mapping[str, Any]) -> TenantObject:
        """Parse a Tenant as the API server returned it."""
        meta = manifest["metadata"]
        return cls(
            name=meta["name"],
            uid=meta["uid"],
            spec=TenantSpec.model_validate(dict(manifest["spec"])),
            status=TenantStatus.model_validate(dict(manifest.get("status") or {})),
            generation=meta.get("generation"),
            approved_plan=(meta.get("annotations") or {}).get(APPROVE_ANNOTATION),
            adopt_retained=(meta.get("annotations") or {}).get(ADOPT_RETAINED_DATA),
        )

    @property
    def phase(self) -> Phase:
        return Phase(self.status.phase or Phase.PENDING)

    @property
    def namespace(self) -> str:
        return tenant_namespace(self.name, self.spec.model_dump())

    def manifest(self) -> dict[str, Any]:
        """The shape the owned-object builders read (name, uid and spec)."""
        return {"metadata": {"name": self.name, "uid": self.uid}, "spec": self.spec.model_dump(exclude_none=True)}

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.status.conditions if c.type == type_), None)


@dataclass(frozen=True)
class PlanObject:
    name: str
    spec: PlanSpec

    def manifest(self) -> dict[str, Any]:
        return {"metadata": {"name": self.name}, "spec": self.spec.model_dump(mode="json")}


@dataclass(frozen=True)
class DataPlacement:
    """Where the tenant's data is recorded to live, and where each isolation model would put it."""

    recorded: Placement | None
    previous: tuple[Placement, ...] = ()  # left behind by a completed move, removed once credentials moved on
    target: Placement | None = None  # where the plan's isolation puts it
    moving_to: Placement | None = None  # the target of a move under way (or interrupted)
    others: tuple[Placement, ...] = ()  # where every other isolation model would put it (offboarding removes all)
    last_known: Placement | None = None  # where status last said the data is, while Paybill still owns its role

    @property
    def current(self) -> Placement | None:
        """Where the data is: the record, or when the record was lost, where it last was (never a new place)."""
        return self.recorded or self.last_known


@dataclass(frozen=True)
class DataHealth:
    """How the tenant's data answers now: what its role may do, and whether its credentials Secret logs in."""

    access: Access
    logs_in: bool | None = None  # None: there were no credentials to try


@dataclass(frozen=True)
class Observed:
    """The world as the handler read it for one reconcile."""

    plan: PlanObject | None = None
    subscriptions: tuple[Billed, ...] = ()
    namespace: Mapping[str, Any] | None = None
    operator_namespace: str | None = None
    database_configured: bool = True
    data: DataPlacement | None = None
    data_error: Failure | None = None  # reading the placement failed: the reconcile fails after the namespace
    backup_intact: bool = False
    health: DataHealth | None = None  # checked once the tenant was provisioned
    retained: str | None = None  # an earlier Tenant of this name keeps its data here: never this one's
    kept_by_this_tenant: bool = False  # this Tenant was offboarded with deletionPolicy retain (the operator's record)
    infrastructure: InfraSeen | None = None  # the plan's provisioning (None: the plan has no infrastructure)
    now: datetime.datetime = field(default_factory=lambda: datetime.datetime.now(datetime.UTC))
    retry: int = 0


# --- what it asks the shell to do ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ConvergeObject:
    """Create the owned object or bring it back to the manifest; post `announce` once it is done."""

    manifest: Mapping[str, Any]
    announce: Notice | None = None


@dataclass(frozen=True)
class ProvisionData:
    """The tenant's role and data location exist (created where the plan says if the tenant has none)."""

    isolation: Isolation


@dataclass(frozen=True)
class EnterPhase:
    """Record `transitions` (Events, audit) and write the phase they end in to status at once, before what
    follows, so that an operator killed in between resumes from there."""

    transitions: tuple[Transition, ...]
    why: str
    conditions: tuple[Condition, ...] = ()  # written with the phase when set (what Ready says meanwhile)


@dataclass(frozen=True)
class MigrateData:
    """Copy, verify and cut over to `target` (the shell posts the checksums in a Migrated Event)."""

    source: Placement
    target: Placement


@dataclass(frozen=True)
class AbandonMove:
    """Roll an interrupted move back: its partial copy at `target` is removed; the source stays."""

    target: Placement


@dataclass(frozen=True)
class FinishMove:
    """Remove what a completed move left at its source (after the credentials point at the target)."""


@dataclass(frozen=True)
class SetAccess:
    placement: Placement
    access: Access


@dataclass(frozen=True)
class PublishCredentials:
    """The credentials Secret says how to log in at `placement`."""

    placement: Placement


@dataclass(frozen=True)
class TouchPolicies:
    """The tenant's AgentPolicies reconcile again, told the grants key to wait for."""

    namespace: str
    key: str


@dataclass(frozen=True)
class TakeBackup:
    """The final backup (recorded in status at once, with a BackupTaken Event)."""

    placement: Placement
    name: str


@dataclass(frozen=True)
class RemoveData:
    """Drop the tenant's data wherever it was placed, then its role and its placement record, and its claim on the
    name unless `keep_claim` (data outside the database stays under the name)."""

    placements: tuple[Placement, ...]
    keep_claim: bool = False


@dataclass(frozen=True)
class DeleteBackupFile:
    """deletionPolicy destroy: the backup file goes too (status keeps its checksum and says so)."""


@dataclass(frozen=True)
class RetainName:
    """Record that this Tenant was offboarded keeping its data: no later Tenant of the name may have it."""


@dataclass(frozen=True)
class ReleaseName:
    """Forget the tenant's placement record and its claim on the name (there is no data left under it)."""


@dataclass(frozen=True)
class DeleteNamespace:
    """Delete the namespace, on the condition (uid precondition) that it is the one that was checked."""

    name: str
    uid: str


Action = (
    ConvergeObject
    | ProvisionData
    | EnterPhase
    | MigrateData
    | AbandonMove
    | FinishMove
    | SetAccess
    | PublishCredentials
    | Touch
    | TouchPolicies
    | TakeBackup
    | RemoveData
    | DeleteBackupFile
    | RetainName
    | ReleaseName
    | DeleteNamespace
    | InfraAction
    | PowerCompute
)


@dataclass(frozen=True)
class Outcome:
    """Do `actions` in order; then record `transitions`, write `status` (if any), post `events`; then, if
    `retry` is set, hand the Tenant back to kopf to try again in that many seconds (`retry_message` says why)."""

    actions: tuple[Action, ...] = ()
    transitions: tuple[Transition, ...] = ()
    why: str = ""
    status: TenantStatus | None = None
    events: tuple[Notice, ...] = ()
    retry: float | None = None
    retry_message: str = ""
    offboarding: bool = False  # an action that fails is an offboarding step (failed_offboarding), not provisioning


class FailureKind(StrEnum):
    """What went wrong, as the shell classifies an exception; each has its reason and the condition it sets."""

    DATABASE_UNAVAILABLE = "DatabaseUnavailable"
    MIGRATION_FAILED = "MigrationFailed"
    NAME_CONFLICT = "NameConflict"
    PLACEMENT_MISMATCH = "PlacementMismatch"  # status names data the operator's records do not bear out (evidence.py)
    SECRET_CONFLICT = "SecretConflict"
    OBJECT_CONFLICT = "ObjectConflict"
    DATABASE_ERROR = "DatabaseError"  # any other error from PostgreSQL
    API_ERROR = "ApiError"  # the Kubernetes API refused or failed
    UNEXPECTED = "UnexpectedError"  # anything else (a full disk, a bug): still a condition, an Event and a retry


@dataclass(frozen=True)
class Failure:
    kind: FailureKind
    message: str

    @property
    def reason(self) -> str:
        return "ProvisioningFailed" if self.kind in (FailureKind.DATABASE_ERROR, FailureKind.API_ERROR) else self.kind

    @property
    def condition(self) -> str | None:
        """The condition the failure turns False, besides Ready."""
        if self.kind == FailureKind.OBJECT_CONFLICT:
            return "NamespaceReady"
        return None if self.kind in (FailureKind.API_ERROR, FailureKind.UNEXPECTED) else "DatabaseReady"


# --- status ---------------------------------------------------------------------------------------------------


class _Status:
    """The status one reconcile builds: conditions kept stable, the rest set field by field."""

    def __init__(self, tenant: TenantObject) -> None:
        self.tenant = tenant
        self.conditions = [c.model_dump(exclude_none=True) for c in tenant.status.conditions]

    def condition(self, type_: str, ok: bool | None, reason: str, message: str) -> None:
        self.conditions = set_condition(self.conditions, type_, ok, reason, message, self.tenant.generation)

    def build(self, phase: Phase, **fields: Any) -> TenantStatus:
        return TenantStatus(
            phase=phase,
            observedGeneration=self.tenant.generation,
            conditions=[Condition.model_validate(c) for c in self.conditions],
            **fields,
        )

    def wait(self, phase: Phase, reason: str, message: str, delay: float, actions: Sequence[Action] = ()) -> Outcome:
        """Not ready: said in status, once as a Warning Event (not on every retry), and retried."""
        said = self.tenant.condition("Ready")
        self.condition("Ready", False, reason, message)
        events = () if said is not None and said.reason == reason else (Notice(reason, message, warning=True),)
        return Outcome(
            actions=tuple(actions),
            status=self.build(phase),
            events=events,
            retry=delay,
            retry_message=message,
        )


# --- decisions --------------------------------------------------------------------------------------------------


def offboarding(tenant: TenantObject) -> bool:
    """Being offboarded (or offboarded): asked for, or under way."""
    return tenant.phase in (Phase.OFFBOARDING, Phase.OFFBOARDED) or tenant.spec.offboard


def decide(tenant: TenantObject, seen: Observed) -> Outcome:
    """What one reconcile of `tenant` does, given what was observed."""
    if tenant.spec.offboard:
        return offboard(tenant, seen)
    disowned: tuple[Notice, ...] = ()
    if tenant.phase in (Phase.OFFBOARDING, Phase.OFFBOARDED):  # never asked for by spec.offboard: status says so
        if _data_in_place(seen) and not seen.kept_by_this_tenant:  # status is not an order: nothing is removed
            message = (
                f"status said {tenant.phase}, but offboarding was never asked for (spec.offboard is false) and the "
                "tenant's data is in place; reconciled from the data, nothing removed"
            )
            disowned = (Notice("StatusDisowned", message, warning=True),)
            tenant = replace(tenant, status=tenant.status.model_copy(update={"phase": Phase.ACTIVE}))
        elif tenant.phase == Phase.OFFBOARDED:
            return _refused(tenant.phase, Event.PROVISION)
        else:
            return offboard(tenant, seen)  # its data already went: the rest of offboarding, as it was under way
    outcome = _decide(tenant, seen)
    return replace(outcome, events=disowned + tuple(outcome.events)) if disowned else outcome


def backup_label(tenant: TenantObject) -> str:
    """The name of the Tenant's final backup (its file is `<label>.sql` in the backup directory)."""
    return f"{tenant.name}-{tenant.uid}"


def _data_in_place(seen: Observed) -> bool:
    return seen.data is not None and seen.data.current is not None


def _decide(tenant: TenantObject, seen: Observed) -> Outcome:
    status = _Status(tenant)
    if seen.plan is None:
        waiting = tenant.phase if tenant.phase != Phase.FAILED else Phase.PENDING
        message = f"plan {tenant.spec.planRef!r} does not exist"
        return status.wait(waiting, "PlanNotFound", message, retry_delay(seen.retry, base=RETRY_DELAY))
    plan = seen.plan
    billing = billing_of(seen.subscriptions, plan.spec, seen.now)
    causes = [
        cause.value
        for cause in SuspensionCause
        if (cause == SuspensionCause.MANUAL and tenant.spec.suspended)
        or (cause == SuspensionCause.BILLING and billing.suspends)
    ]
    goal = Phase.SUSPENDED if causes else Phase.ACTIVE
    access = Access.NONE if causes else billing.access

    namespace = tenant.namespace
    check = check_namespace(
        dict(seen.namespace) if seen.namespace is not None else None, namespace, tenant.uid, seen.operator_namespace
    )
    if not check.ok:
        status.condition("NamespaceReady", False, check.reason, check.message)
        stuck = tenant.phase if check.reason == "NamespaceTerminating" else Phase.FAILED
        return status.wait(stuck, check.reason, check.message, RETRY_DELAY)
    actions: list[Action] = [_namespace_action(tenant, plan, check)]
    status.condition("NamespaceReady", True, "Provisioned", f"namespace {namespace} is ready")
    actions += [ConvergeObject(manifest) for manifest in tenant_resources(tenant.manifest(), plan.manifest())]
    if not seen.database_configured:
        status.condition("DatabaseReady", False, "NotConfigured", NO_DATABASE)
        delay = retry_delay(seen.retry, base=RETRY_DELAY)
        return status.wait(tenant.phase, "DatabaseNotConfigured", NO_DATABASE, delay, actions)
    if seen.retained is not None:
        return _with_actions(failed(tenant, Failure(FailureKind.NAME_CONFLICT, seen.retained), seen.retry), actions)
    if seen.data_error is not None or seen.data is None or seen.data.target is None:
        failure = seen.data_error or Failure(FailureKind.DATABASE_UNAVAILABLE, "the tenant database was not read")
        return _with_actions(failed(tenant, failure, seen.retry), actions)

    infra = _infrastructure(tenant, seen, status)
    if infra is not None and not infra.ready and not _provisioned(tenant):  # Active only once the module is applied
        return _provisioning_infrastructure(tenant, status, infra, actions)
    events: tuple[Notice, ...] = infra.events if infra is not None else ()
    actions += infra.actions if infra is not None else ()
    isolation = Isolation(plan.spec.isolation)
    target = seen.data.target
    placement = seen.data.current or target
    actions.append(ProvisionData(placement.isolation))  # a lost record is made again where the data is
    phase: Phase = tenant.phase
    moving_to, moved = seen.data.moving_to, False
    if moving_to is not None and moving_to.isolation != isolation:  # the plan changed back mid-way: roll back
        actions.append(AbandonMove(moving_to))
        events += (
            Notice(
                "MigrationAbandoned",
                f"the move to {moving_to.isolation} was abandoned (the plan now says {isolation}); "
                f"its partial copy is removed and the data stays on {placement.isolation}",
                warning=True,
            ),
        )
    if placement.isolation != isolation:
        if infra is not None and not infra.ready:  # the new model's infrastructure first, then the data
            status.condition(
                "Migrated", False, "WaitingForInfrastructure", f"moving to {isolation} waits: {infra.provisioned[2]}"
            )
        elif goal == Phase.SUSPENDED:
            status.condition(
                "Migrated",
                False,
                "WaitingForResume",
                f"moving from {placement.isolation} to {isolation} waits until the tenant resumes",
            )
        else:
            if phase != Phase.MIGRATING:  # from Failed or Suspended too: through Active, recorded as a move
                moving = f"moving from {placement.isolation} to {isolation}; writes wait until the move is verified"
                meanwhile = _Status(tenant)
                meanwhile.condition("Ready", False, "Migrating", moving)
                if phase == Phase.FAILED:  # a failed move tried again: never said Active mid-move
                    entered: tuple[Transition, ...] = (transition(phase, Event.MIGRATE),)
                else:
                    entered = (*path(phase, Phase.ACTIVE), transition(Phase.ACTIVE, Event.MIGRATE))
                actions.append(
                    EnterPhase(
                        entered, f"{placement.isolation} -> {isolation}", tuple(meanwhile.build(phase).conditions)
                    )
                )
                phase = Phase.MIGRATING
            actions.append(MigrateData(placement, target))
            status.condition("Migrated", True, "Verified", f"moved from {placement.isolation} to {target.isolation}")
            placement, moved = target, True
    if phase == Phase.MIGRATING and not moved and tenant.status.isolation == str(placement.isolation):
        # interrupted before anything moved: rolled back, or paused while it cannot go on; never "migrated"
        if placement.isolation != isolation:  # still wanted: the tenant is suspended, or the infrastructure not ready
            waits = "until the tenant resumes" if goal == Phase.SUSPENDED else "for its infrastructure"
            why = f"the move to {isolation} waits {waits}; the data stays on {placement.isolation}"
            actions.append(EnterPhase((transition(phase, Event.PAUSE),), why))
        else:
            why = f"the move was abandoned; the data stays on {placement.isolation}"
            actions.append(EnterPhase((transition(phase, Event.ROLL_BACK),), why))
        phase = Phase.ACTIVE
    actions += [SetAccess(placement, access), PublishCredentials(placement)]
    if moved or seen.data.previous:  # the source goes only once the credentials point at the target
        actions.append(FinishMove())
    if seen.infrastructure is not None:  # a model left behind: its infrastructure goes once the data is off it
        actions += decide_retirement(
            seen.infrastructure, tenant.status.infrastructure, str(placement.isolation), seen.now
        )
    status.condition(
        "DatabaseReady",
        True,
        "Provisioned",
        f"{placement.isolation} data in database {placement.database}, schema {placement.schema}; access {access}",
    )

    status.condition("Billing", billing.restriction == Restriction.NONE, _camel(billing.restriction), billing.message)
    events += _plan_mismatch(tenant, status, seen.subscriptions)
    broken = data_problems(tenant, seen, access)
    events += _data_health(tenant, status, broken, checked=seen.health is not None and _provisioned(tenant))
    if broken:
        found = "; ".join(message for _, message in broken)
        status.condition("Ready", False, "Repairing", f"{found}; repaired as the plan says, verifying")
    elif causes:
        status.condition("Ready", False, "Suspended", f"suspended ({', '.join(causes)}); data kept, logins refused")
    else:
        read_only = "; data is read-only" if access == Access.READ_ONLY else ""
        status.condition("Ready", True, "Provisioned", f"tenant is active on plan {plan.name}{read_only}")
    database = placement.to_model()
    if tenant.status.plan != plan.name:  # its subscriptions check the plan they bill again
        actions += [Touch("subscriptions", billed.name, "tenant-plan", plan.name) for billed in seen.subscriptions]
    grants = agent_grants_key(str(access), database.model_dump(by_alias=True))
    before = tenant.status.database.model_dump(by_alias=True) if tenant.status.database else None
    if grants != agent_grants_key(tenant.status.access, before):
        actions.append(TouchPolicies(namespace, grants))
    provisioned = infra is not None and infra.ready  # a silo or bridge tenant's instances stop while it is suspended
    compute = decide_compute(plan.spec, goal == Phase.SUSPENDED, provisioned, tenant.status.compute)
    actions += compute.actions
    if compute.condition is not None:
        status.condition(COMPUTE_CONDITION, *compute.condition)
    return Outcome(
        actions=tuple(actions),
        transitions=tuple(_chain(phase, goal)),
        why=f"plan {plan.name}, {billing.message}",
        status=status.build(
            goal,
            namespace=namespace,
            plan=plan.name,
            suspendedFor=causes,
            isolation=str(placement.isolation),
            access=access,
            restriction=str(billing.restriction),
            database=database,
            credentialsSecret=CREDENTIALS_SECRET,
        ),
        events=events,
        retry=_sooner(retry_delay(seen.retry, base=VERIFY_DELAY) if broken else None, infra.retry if infra else None),
        retry_message="verifying the repair of the tenant's data" if broken else "looking at the infrastructure again",
    )


def _infrastructure(tenant: TenantObject, seen: Observed, status: _Status) -> InfraDecision | None:
    """The plan's infrastructure for the tenant (None without spec.provisioning): its conditions set in `status`."""
    if seen.infrastructure is None or not seen.infrastructure.planned:  # a state only observed for offboarding
        return None
    infra = decide_infrastructure(
        seen.infrastructure, tenant.status.infrastructure, tenant.condition("Provisioned"), seen.now, tenant.name
    )
    status.condition("Provisioned", *infra.provisioned)
    if infra.drifted is not None:
        status.condition("Drifted", *infra.drifted)
    return infra


def _provisioning_infrastructure(
    tenant: TenantObject, status: _Status, infra: InfraDecision, actions: Sequence[Action]
) -> Outcome:
    """Provisioning until the module is applied (Failed while a failed run waits for its retry): Ready says which
    run is under way or why it failed. A run that ends makes the tenant reconcile again (no retry needed)."""
    _, reason, message = infra.provisioned
    status.condition("Ready", False, reason, message)
    phase = Phase.FAILED if infra.failed else Phase.PROVISIONING
    transitions = [] if tenant.phase == phase else _chain(tenant.phase, phase)
    return Outcome(
        actions=(*actions, *infra.actions),
        transitions=tuple(transitions),
        why=message,
        status=status.build(phase, namespace=tenant.namespace),
        events=infra.events,
        retry=infra.retry,
        retry_message=message,
    )


def _sooner(*delays: float | None) -> float | None:
    return min((d for d in delays if d is not None), default=None)


def data_problems(tenant: TenantObject, seen: Observed, access: Access) -> list[tuple[str, str]]:
    """What is wrong with a provisioned tenant's data that the operator did not do: its placement record gone,
    its role's access changed, its credentials refused. Only in a steady state (the access it should have is
    the access it had), so a change the operator is making is never taken for damage."""
    if not _provisioned(tenant):
        return []
    problems = []
    if seen.data is not None and seen.data.recorded is None:
        problems.append(("PlacementMissing", "the record of where the tenant's data lives was missing"))
    health, steady = seen.health, tenant.status.access == access
    if health is not None and steady and health.access != access:
        problems.append(("AccessChanged", f"the tenant's role had access {health.access}, not {access}"))
    if health is not None and steady and access != Access.NONE and health.logs_in is False:
        problems.append(("CredentialsRejected", f"the credentials in secret {CREDENTIALS_SECRET} did not log in"))
    return problems


def _provisioned(tenant: TenantObject) -> bool:
    """Provisioned and kept serving: the tenants whose data is checked."""
    return tenant.status.database is not None and tenant.phase in (Phase.ACTIVE, Phase.SUSPENDED)


def _data_health(
    tenant: TenantObject, status: _Status, problems: list[tuple[str, str]], checked: bool
) -> tuple[Notice, ...]:
    """DataHealthy False and a Warning Event while the data is broken; True again (and an Event) once verified."""
    previous = tenant.condition("DataHealthy")
    if problems:
        reason, message = problems[0][0], "; ".join(m for _, m in problems)
        status.condition("DataHealthy", False, reason, message)
        if previous is not None and previous.status == "False" and previous.message == message:
            return ()  # said already: a repair that does not take is not warned about every second
        return (Notice(reason, f"{message}; repairing", warning=True),)
    if not checked:
        return ()
    status.condition("DataHealthy", True, "Verified", "placement recorded, role access as planned, credentials log in")
    if previous is not None and previous.status == "False":
        return (Notice("DataRepaired", "the tenant's data answers as planned again"),)
    return ()


def failed(tenant: TenantObject, failure: Failure, retry: int, phase: Phase | None = None) -> Outcome:
    """An action failed (or the database could not be read): the conditions say why, a tenant still being set up
    goes to Failed, and the reconcile is retried with backoff. `phase` is where the actions left the tenant."""
    status = _Status(tenant)
    if failure.condition is not None:
        status.condition(failure.condition, False, failure.reason, failure.message)
    phase = phase or tenant.phase
    transitions: list[Transition] = []
    if phase in (Phase.PENDING, Phase.PROVISIONING, Phase.MIGRATING):
        transitions = _chain(phase, Phase.FAILED)
        phase = Phase.FAILED
    delay = retry_delay(retry)
    if failure.kind == FailureKind.DATABASE_UNAVAILABLE:  # an outage: look again soon, so recovery is quick
        delay = min(delay, OUTAGE_RETRY_CAP)
    outcome = status.wait(phase, failure.reason, failure.message, delay)
    return replace(outcome, transitions=tuple(transitions), why=failure.message)


def offboard(tenant: TenantObject, seen: Observed, deleting: bool = False) -> Outcome:
    """Final backup, then the deletion policy, then the namespace; each step is safe to repeat. `deleting`: the
    Tenant itself is going (no status is written)."""
    if tenant.phase == Phase.OFFBOARDED:
        return Outcome()
    actions: list[Action] = []
    if tenant.phase != Phase.OFFBOARDING:
        actions.append(EnterPhase(tuple(path(tenant.phase, Phase.OFFBOARDING)), "offboarding requested"))
    if seen.data_error is not None:
        return _with_actions(failed_offboarding(tenant, seen.data_error, _entered(actions, tenant.phase)), actions)
    policy = DeletionPolicy(tenant.spec.deletionPolicy)
    data = seen.data
    placement = data.current if data is not None else None
    objects_left = pool_objects_left(tenant.name, tenant.status.infrastructure)
    held = policy == DeletionPolicy.RETAIN or objects_left is not None  # data stays under the name
    if data is not None and placement is not None:
        actions.append(SetAccess(placement, Access.NONE))
        if tenant.status.backup is None or not seen.backup_intact:
            actions.append(TakeBackup(placement, backup_label(tenant)))
        if policy != DeletionPolicy.RETAIN:  # wherever a move may have left data too, so the role can be dropped
            actions.append(RemoveData((placement, *(p for p in data.others if p != placement)), keep_claim=held))
        if policy == DeletionPolicy.DESTROY:
            actions.append(DeleteBackupFile())
        if held:
            actions.append(RetainName())  # the data kept is never a later Tenant's of the same name
    free = seen.retained is None and not seen.kept_by_this_tenant
    if data is not None and placement is None and free and not held:
        actions.append(ReleaseName())  # nothing was placed (or all is removed): the name is free for a new Tenant
    kept = policy == DeletionPolicy.RETAIN  # the infrastructure holding kept data stays too
    ready = tenant.condition("Ready")
    # refused the name's retained data, or a pool's name (pool-<pool> is the pool's own state): not this Tenant's
    owns_name = seen.retained is None and not tenant.name.startswith(RESERVED_PREFIX)
    teardown = decide_teardown(seen.infrastructure, tenant.status.infrastructure, kept, ready, seen.now, owns_name)
    if not teardown.done:
        return _tearing_down(tenant, actions, teardown)
    existing = seen.namespace
    events: tuple[Notice, ...] = (Notice("PoolObjectsKept", objects_left, warning=True),) if objects_left else ()
    if existing is not None:
        if may_delete_namespace(dict(existing), tenant.uid, seen.operator_namespace):
            actions.append(DeleteNamespace(existing["metadata"]["name"], existing["metadata"]["uid"]))
        else:
            name = existing["metadata"]["name"]
            events += (Notice("NamespaceKept", f"namespace {name} is not this tenant's; left as it is"),)
    status = None
    if not deleting:
        builder = _Status(tenant)
        builder.condition("Ready", False, "Offboarded", f"offboarded; data {policy}")
        if tenant.status.infrastructure is not None:
            said = "kept with the data" if kept else "destroyed"
            builder.condition("Provisioned", False, "Kept" if kept else "Destroyed", f"the infrastructure is {said}")
        data_said = "kept where it was; logins refused" if kept else "removed; the final backup is kept"
        builder.condition(
            "DatabaseReady", False, "Retained" if kept else "Removed", f"the tenant's data is {data_said}"
        )
        builder.condition("NamespaceReady", False, "Deleted", "the tenant's namespace is deleted (unless not its own)")
        if tenant.condition("DataHealthy") is not None:
            builder.condition("DataHealthy", None, "Offboarded", "an offboarded tenant's data is no longer checked")
        status = builder.build(Phase.OFFBOARDED, access=Access.NONE, **({} if kept else {"database": None}))
    return Outcome(
        actions=tuple(actions),
        transitions=(transition(Phase.OFFBOARDING, Event.OFFBOARDED),),
        why=f"deletion policy {policy}",
        status=status,
        events=events,
        offboarding=True,
    )


def _tearing_down(tenant: TenantObject, actions: Sequence[Action], teardown: Teardown) -> Outcome:
    """Offboarding waits for the infrastructure's destroy (the namespace and the finalizer stay): Ready and
    Provisioned say which step and, when it failed, Terraform's reason."""
    status = _Status(tenant)
    status.condition("Provisioned", False, teardown.reason, teardown.message)
    status.condition("Ready", False, teardown.reason, teardown.message)
    return Outcome(
        actions=(*actions, *teardown.actions),
        status=status.build(_entered(actions, tenant.phase)),
        events=teardown.events,
        retry=teardown.retry,
        retry_message=teardown.message,
        offboarding=True,
    )


def failed_offboarding(tenant: TenantObject, failure: Failure, phase: Phase | None = None) -> Outcome:
    """A step of offboarding failed: Ready says which and why (the phase stays), a Warning Event once per reason,
    and a retry (each step is safe to repeat)."""
    status = _Status(tenant)
    outcome = status.wait(phase or tenant.phase, "OffboardingFailed", failure.message, RETRY_DELAY)
    return replace(outcome, offboarding=True)


def destroyed(backup: BackupStatus) -> BackupStatus:
    """The record of a backup whose file deletionPolicy destroy removed."""
    return backup.model_copy(update={"location": f"{backup.location} (deleted: deletionPolicy destroy)"})


# --- pieces -----------------------------------------------------------------------------------------------------


def _refused(phase: Phase, event: Event) -> Outcome:
    """An event the state machine refuses in this phase: a Warning Event says why; nothing changes."""
    try:
        transition(phase, event)
    except TransitionRefused as refused:
        return Outcome(events=(Notice("TransitionRefused", str(refused), warning=True),))
    raise AssertionError(f"{event} is allowed in {phase}")


def _namespace_action(tenant: TenantObject, plan: PlanObject, check: NamespaceCheck) -> ConvergeObject:
    namespace = tenant.namespace
    created = Notice("NamespaceCreated", f"namespace {namespace} created") if check.reason == "Missing" else None
    return ConvergeObject(namespace_manifest(tenant.manifest(), plan.manifest()), announce=created)


def _plan_mismatch(tenant: TenantObject, status: _Status, subscriptions: Sequence[Billed]) -> tuple[Notice, ...]:
    """A Tenant billed for another plan than its own: a PlanMismatch condition and a Warning Event (once per
    change); the condition turns False once they agree again."""
    mismatch = tenant_plan_mismatch(
        tenant.spec.planRef, [{"name": billed.name, "planRef": billed.spec.planRef} for billed in subscriptions]
    )
    previous = tenant.condition("PlanMismatch")
    if mismatch is not None:
        status.condition("PlanMismatch", True, mismatch.reason, mismatch.message)
        if previous is None or previous.message != mismatch.message:
            return (Notice(mismatch.reason, mismatch.message, warning=True),)
    elif previous is not None:
        status.condition("PlanMismatch", False, "PlanAgrees", "the tenant's subscriptions bill the plan it is on")
    return ()


def _chain(source: Phase, target: Phase) -> list[Transition]:
    """The transitions from `source` to `target`; to Failed through Provisioning (or straight from Migrating)."""
    if source == target:
        return []
    if target == Phase.FAILED:
        if source == Phase.MIGRATING:
            return [transition(source, Event.FAIL)]
        return [*path(source, Phase.PROVISIONING), transition(Phase.PROVISIONING, Event.FAIL)]
    return path(source, target)


def _with_actions(outcome: Outcome, actions: Sequence[Action]) -> Outcome:
    return replace(outcome, actions=(*actions, *outcome.actions))


def _entered(actions: Sequence[Action], phase: Phase) -> Phase:
    """The phase the actions' EnterPhase steps leave the tenant in."""
    for action in actions:
        if isinstance(action, EnterPhase):
            phase = action.transitions[-1].target
    return phase


def _camel(value: str) -> str:
    return "".join(part.title() for part in str(value).split("_"))
