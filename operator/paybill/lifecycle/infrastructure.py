"""A tenant's infrastructure, decided: what its Plan's `spec.provisioning` lacks, whether the module is applied for
the tenant's current configuration, which Terraform run to start next (plan, apply, an approved plan, a drift
check, a destroy), and what the Provisioned and Drifted conditions say. Pure: the handler (handlers/infrastructure.py)
reads the module, the credentials Secret and the runs in flight, and carries out the actions in a worker pool of
its own; a run that ends writes `status.infrastructure` and makes the tenant reconcile again.
"""

from __future__ import annotations

import base64
import datetime
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..api.meta import Condition
from ..api.plan import Approval, Isolation, Provisioning
from ..api.tenant import InfrastructureStatus
from ..terraform.models import MODEL_SUFFIXES
from .machine import retry_delay
from .outcome import Notice
from .tenant import owner_reference

APPROVE_ANNOTATION = "paybill.dev/approve-plan"
OUTPUTS_SECRET = "paybill-infrastructure"
REQUIRED_CREDENTIALS: Mapping[str, tuple[str, ...]] = {
    "local": (),
    "aws": ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
    # azurerm's service principal, and the bearer token the adapter (preflight, inventory, power) calls ARM with
    "azure": ("ARM_SUBSCRIPTION_ID", "ARM_TENANT_ID", "ARM_CLIENT_ID", "ARM_CLIENT_SECRET", "ARM_ACCESS_TOKEN"),
    "gcp": ("GOOGLE_PROJECT", "GOOGLE_CREDENTIALS|GOOGLE_OAUTH_ACCESS_TOKEN"),  # a service account's key, or a token
    # the compartment reaches Terraform as TF_VAR_compartment_ocid (provider_environment)
    "oci": ("OCI_TENANCY_OCID", "OCI_USER_OCID", "OCI_FINGERPRINT", "OCI_PRIVATE_KEY", "OCI_COMPARTMENT_OCID"),
    "ibm": ("IC_API_KEY",),
}
CONTEXT_VARIABLES = {"OCI_COMPARTMENT_OCID": "TF_VAR_compartment_ocid"}  # a module input from the credentials
PROVIDER_PREFIXES = ("AWS_", "ARM_", "GOOGLE_", "OCI_", "IC_")  # the providers' own variables; nothing else passes
PROBLEM_RETRY = 30.0  # a Plan's provisioning that lacks something is looked at again this often
DESTROY_POLL = 2.0  # offboarding waits for a destroy in flight this often
SETTLE_GRACE = 5.0  # seconds a result being written may hold a tenant's decision (a stale read), never longer
FAILURE_BASE = 5.0  # a failed run is tried again after 5 s, 10 s, 20 s ... capped at 5 minutes
# a provisioned tenant's name (terraform/models.py TENANT_ID): `paybill-<name>` names its cloud resources (an RDS
# identifier, an S3 bucket: at most 63 characters), `tf_<name>` its state's schema
MAX_TENANT_NAME = 40
# a pool is applied as the runner's tenant id pool-<pool> (its cloud resources paybill-pool-<pool>): no Tenant's name
RESERVED_PREFIX = "pool-"
# The deletion policy a model left is destroyed under, whatever the Tenant's: the move copies the operator's own
# tables, not what the tenant's applications wrote into the module's databases and buckets, so their data is kept
# (a final snapshot, a bucket left while it holds objects) or the destroy stops and says why
RETIRING_POLICY = "snapshot"
# How a plan's message says it deletes or replaces resources with the tenant's data (the runner's DataAtRisk too):
# its approval is asked for with a Warning
HOLDS_DATA = "which hold the tenant's data"

# results a run writes to status.infrastructure.lastResult
SUCCEEDED, FAILED, AWAITING, STALE = "Succeeded", "Failed", "AwaitingApproval", "Stale"


# --- what a Plan's provisioning lacks ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ModuleCheck:
    """The module a Plan's provisioning names, as the handler found it."""

    name: str  # <cloud>/<isolation>, or the override's name
    found: bool
    violations: tuple[str, ...] = ()  # of the module contract (terraform/contract.py)


@dataclass(frozen=True)
class CredentialsCheck:
    """The provider credentials Secret, as the handler found it: only its key names, never a value."""

    secret: str | None
    operator_namespace: str | None
    keys: frozenset[str] | None = None  # None: no such Secret


def provisioning_problems(
    provisioning: Provisioning, module: ModuleCheck, credentials: CredentialsCheck
) -> tuple[str, ...]:
    """Everything that would make a run fail before it starts, each naming what is missing."""
    problems: list[str] = []
    if not module.found:
        problems.append(f"module {module.name} does not exist")
    if module.name in UNCONFINED_POOLS:
        problems.append(f"module {module.name}: {UNCONFINED_POOLS[module.name]}")
    problems += [f"module {module.name}: {violation}" for violation in module.violations]
    needed = REQUIRED_CREDENTIALS.get(str(provisioning.cloud))
    if needed is None:
        problems.append(f"unknown cloud {provisioning.cloud!r}: one of {', '.join(REQUIRED_CREDENTIALS)}")
        return tuple(problems)
    if not needed:
        return tuple(problems)
    if credentials.secret is None:
        problems.append(
            f"cloud {provisioning.cloud} needs provider credentials ({_named(needed)}): "
            "set credentialsSecret to a Secret in the operator's namespace"
        )
    elif credentials.operator_namespace is None:
        problems.append(
            f"credentials secret {credentials.secret}: the operator has no namespace to read it from "
            "(set PAYBILL_OPERATOR_NAMESPACE)"
        )
    elif credentials.keys is None:
        problems.append(f"credentials secret {credentials.operator_namespace}/{credentials.secret} does not exist")
    else:
        found = credentials.keys
        missing = [keys for keys in needed if not any(key in found for key in keys.split("|"))]
        if missing:
            where = f"{credentials.operator_namespace}/{credentials.secret}"
            problems.append(f"credentials secret {where} lacks {_named(missing)}")
    return tuple(problems)


def _named(keys: Iterable[str]) -> str:
    """Required keys for a message: "A|B" (either will do) reads "A or B"."""
    return ", ".join(key.replace("|", " or ") for key in keys)


def name_reserved(tenant: str) -> str | None:
    """Why the tenant's name cannot be provisioned though short enough (None: it can): its cloud resources' names
    would be a pool's (paybill-pool-<pool>), and a cloud that answers "created" for a name its account already owns
    (S3) would hand the pool's bucket to the tenant's state, and its offboarding every pooled tenant's data; or
    another tenant's bridge or pooled resources' (paybill-<other>-bridge): whichever came second never builds."""
    if tenant.startswith(RESERVED_PREFIX):
        return (
            f"tenant name {tenant} starts with {RESERVED_PREFIX}: its cloud resources would be named like a pool's "
            "(paybill-pool-<pool>); nothing is built: recreate it under another name"
        )
    taken = next((model for model in MODEL_SUFFIXES if tenant.endswith(f"-{model}")), None)
    if taken is None:
        return None
    other = tenant.removesuffix(f"-{taken}")
    return (
        f"tenant name {tenant} ends with -{taken}: its cloud resources (paybill-{tenant}) would be named like the "
        f"{taken} resources of a tenant {other}, and one of the two could never be built; nothing is built: "
        "recreate it under another name"
    )


# Shipped modules that cannot confine a tenant to its own part of a pool: refused at the Plan
UNCONFINED_POOLS = {
    "ibm/pooled": "its service ID is given Writer on the whole pool bucket (this module grants no prefix-scoped "
    "COS access), so each pooled tenant could read and delete every other's objects; use isolation bridge or silo",
}
# The shipped pooled modules whose tenant writes objects under tenants/<name>/ in the pool's bucket: Terraform makes
# the prefix's marker only, so a destroy leaves what the tenant wrote (azure's pooled tenants get a container of
# their own, which Terraform deletes with its blobs or refuses to)
PREFIX_MODULES = frozenset({"aws/pooled", "gcp/pooled", "oci/pooled", "ibm/pooled"})


def leaves_pool_objects(module: str | None, workspace: str | None) -> bool:
    """Whether applying `module` in `workspace` gives the tenant a prefix in a pool's bucket. A pooled module of
    the operator's own (an override) is taken to: nothing says it does not."""
    return module in PREFIX_MODULES or (workspace == "pooled" and bool(module) and "/" not in str(module))


def pool_objects_left(tenant: str, recorded: InfrastructureStatus | None) -> str | None:
    """What a pooled tenant's offboarding leaves in the pool's bucket, to say (None: nothing): ever pooled, even if
    it moved to another model since (poolObjects stays)."""
    if recorded is None:
        return None
    built = ((recorded.module, recorded.workspace), (recorded.retiringModule, recorded.retiring))
    if not recorded.poolObjects and not any(leaves_pool_objects(*pair) for pair in built):
        return None
    return (
        f"objects under tenants/{tenant}/ in the pool's bucket are the tenant's application's, not Terraform's: "
        "they are kept (delete them by hand if they must go), and the name stays held by this Tenant, so no later "
        "Tenant of it is given that prefix unless it adopts them"
    )


def name_too_long(tenant: str) -> str | None:
    """Why the tenant's name cannot be provisioned (None: it can). A Tenant's name may have 56 characters."""
    if len(tenant) <= MAX_TENANT_NAME:
        return None
    return (
        f"tenant name {tenant} has {len(tenant)} characters: a tenant whose plan builds infrastructure may have at "
        f"most {MAX_TENANT_NAME} (its cloud resources are named paybill-<name>, e.g. an RDS instance or S3 bucket, "
        "at most 63); nothing is built: recreate it under a shorter name, or put it on a plan without provisioning"
    )


def provider_environment(data: Mapping[str, str]) -> dict[str, str]:
    """The variables of a credentials Secret that reach Terraform: the providers' own (and the module inputs some
    of them carry, CONTEXT_VARIABLES), nothing else."""
    found = {key: value for key, value in data.items() if key.startswith(PROVIDER_PREFIXES)}
    return found | {CONTEXT_VARIABLES[key]: value for key, value in found.items() if key in CONTEXT_VARIABLES}


def storage_gib(database_size_mi: int) -> int:
    return max(1, -(-database_size_mi // 1024))


# --- what the tenant's reconcile sees ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Desired:
    """The infrastructure the tenant's Plan asks for: the module, its inputs (by digest), how runs are approved and
    how often drift is checked. `problems`: what the Plan's provisioning lacks (no run starts)."""

    module: str
    digest: str  # sha256 of the module's files and the inputs
    approval: Approval = Approval.AUTO
    drift_every: int = 0
    auto_remediate: bool = False
    problems: tuple[str, ...] = ()
    workspace: str = "default"  # the tenant's state of this module: one per isolation model


@dataclass(frozen=True)
class InfraSeen:
    desired: Desired
    running: str | None = None  # a run of this operator in flight for the tenant (plan, apply, destroy, drift)
    settled: bool = True  # False: a run just ended and its result is being written (decide on the next read)
    approved: str | None = None  # the tenant's paybill.dev/approve-plan annotation
    retired: Desired | None = None  # the infrastructure of the model the tenant left, to destroy once data moved
    # the tenant's workspaces whose Terraform state (in PostgreSQL, never status) holds resources, each with the
    # module and inputs it was applied with; None: the state could not be read (`state_error` says why)
    built: tuple[Desired, ...] | None = ()
    state_error: str = ""
    planned: bool = True  # False: the plan builds nothing (any more); only the tenant's Terraform state was read
    # the config digest PostgreSQL records for the last apply that succeeded in the desired workspace (None: none)
    applied_digest: str | None = None


def run_settled(recorded: str | None, finished: str | None, started: Iterable[str], since_finished: float) -> bool:
    """Whether status (its runId `recorded`) holds the result of the Tenant's last run this process finished.
    Only an earlier run of this Tenant in this process makes it wait, and only for SETTLE_GRACE seconds: a run id
    no run of ours has (a forged one, or a Tenant of a reused name) never holds a decision."""
    if finished is None or recorded == finished or recorded not in set(started):
        return True
    return since_finished > SETTLE_GRACE


def state_only(
    built: tuple[Desired, ...] | None, state_error: str = "", running: str | None = None, settled: bool = True
) -> InfraSeen:
    """The observation of a tenant whose plan has no provisioning (any more): what its Terraform state holds, which
    offboarding destroys all the same; nothing is planned or applied for it."""
    return InfraSeen(
        Desired("-", "-", workspace=""), running, settled, built=built, state_error=state_error, planned=False
    )


# --- what it asks the shell to do -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanInfrastructure:
    """Plan and keep the plan (manual approval): the summary and hash go to status, nothing is applied."""

    desired: Desired


@dataclass(frozen=True)
class ApplyInfrastructure:
    """Apply the module: exactly the saved plan `plan_hash` (approved), or, when None, a plan made and applied in
    one run (auto). The outputs go to the tenant's Secret paybill-infrastructure."""

    desired: Desired
    plan_hash: str | None = None


@dataclass(frozen=True)
class CheckDrift:
    """`plan -detailed-exitcode`: the addresses that differ from the configuration go to status."""

    desired: Desired


@dataclass(frozen=True)
class DestroyInfrastructure:
    desired: Desired


InfraAction = PlanInfrastructure | ApplyInfrastructure | CheckDrift | DestroyInfrastructure


@dataclass(frozen=True)
class InfraDecision:
    ready: bool  # applied for the desired configuration: the tenant may be (or stay) Active
    provisioned: tuple[bool | None, str, str]  # the Provisioned condition: status, reason, message
    actions: tuple[InfraAction, ...] = ()
    drifted: tuple[bool, str, str] | None = None  # the Drifted condition, once drift was checked
    events: tuple[Notice, ...] = ()
    retry: float | None = None  # look again then; None: a run that ends makes the tenant reconcile again
    failed: bool = False  # the last run failed and its retry waits (a tenant not yet Active is Failed meanwhile)


def decide_infrastructure(
    seen: InfraSeen,
    recorded: InfrastructureStatus | None,
    said: Condition | None,
    now: datetime.datetime,
    tenant: str,
) -> InfraDecision:
    """What the tenant's infrastructure needs next. `said`: the Provisioned condition as it stands."""
    desired, record = seen.desired, recorded or InfrastructureStatus()
    # applied as PostgreSQL's record of the last apply says; status alone (forgeable) never makes it so
    applied = seen.applied_digest == desired.digest == record.appliedDigest and not record.destroyed
    drifted = _drifted(record) if applied else None
    too_long = name_too_long(tenant)
    if too_long:
        return _decision(False, (False, "TenantNameTooLong", too_long), said, warn=True)
    reserved = name_reserved(tenant)
    if reserved:
        return _decision(False, (False, "TenantNameReserved", reserved), said, warn=True)
    if desired.problems:
        message = "spec.provisioning of the plan: " + "; ".join(desired.problems)
        return _decision(applied, (False, "ProvisioningInvalid", message), said, retry=PROBLEM_RETRY, warn=True)
    if seen.running is not None or not seen.settled:
        verb = seen.running or "run"
        again = SETTLE_GRACE if seen.running is None else None  # a run that ends touches the tenant; a write may not
        if applied:
            running = (True, "Applied", f"{_applied(record)}; terraform {verb} running")
            return _decision(True, running, said, drifted, retry=again)
        running = (False, _running_reason(verb), f"terraform {verb} of {desired.module} running")
        return _decision(False, running, said, retry=again)
    if record.retiring and not applied and desired.workspace != record.workspace:
        waiting = f"a model left earlier ({record.retiring}) is destroyed first, then {desired.module} is applied"
        return _decision(False, (False, "RetiringPrevious", waiting), said, drifted)
    remediate = applied and bool(record.drifted) and desired.auto_remediate
    if applied and not remediate:
        due = desired.drift_every > 0 and elapsed(record.driftCheckedAt, now) >= desired.drift_every
        actions: tuple[InfraAction, ...] = (CheckDrift(desired),) if due else ()
        ok = (True, "Applied", _applied(record))
        return _decision(True, ok, said, drifted, actions, events=_applied_notice(record, said))
    if record.lastResult == FAILED and record.configDigest == desired.digest:
        wait = retry_delay(record.failures - 1, base=FAILURE_BASE) - elapsed(record.lastRunAt, now)
        if wait > 0:
            failure = (False, f"{(record.lastRun or 'run').title()}Failed", record.message or "terraform failed")
            return InfraDecision(applied, failure, (), drifted, _warn_if_new(failure, said), wait, failed=True)
    # an apply that stopped before deleting or replacing a resource with the tenant's data waits for a person even
    # under approval auto (the runner's DataAtRisk); a changed configuration plans again
    held = record.lastResult == AWAITING and record.lastRun == "apply" and record.configDigest == desired.digest
    if desired.approval == Approval.AUTO and not held:
        verb = "re-applying after drift" if remediate else f"applying {desired.module}"
        return _decision(applied, (applied, "Applying", verb), said, drifted, (ApplyInfrastructure(desired),))
    return _manual(seen, record, applied, drifted, said, tenant)


def _manual(
    seen: InfraSeen,
    record: InfrastructureStatus,
    applied: bool,
    drifted: tuple[bool, str, str] | None,
    said: Condition | None,
    tenant: str,
) -> InfraDecision:
    """Approval manual (or an apply held before deleting data): plan, stop with the plan in status; apply only the
    plan whose hash the annotation names."""
    desired = seen.desired
    pending = record.lastResult == AWAITING and record.configDigest == desired.digest and record.planHash
    if not pending:
        why = f"planning {desired.module}"
        if record.lastResult == AWAITING and record.planHash:
            why = f"the spec changed since plan {record.planHash[:12]}, which is not applied: {why}"
        elif record.lastResult == STALE:
            why = f"{record.message}: {why} again"
        return _decision(applied, (applied, "Planning", why), said, drifted, (PlanInfrastructure(desired),))
    plan_hash = str(record.planHash)
    if seen.approved == plan_hash:
        doing = (applied, "Applying", f"applying approved plan {plan_hash[:12]}")
        return _decision(applied, doing, said, drifted, (ApplyInfrastructure(desired, plan_hash),))
    if seen.approved and seen.approved != record.appliedHash:
        refused = (
            False,
            "ApprovalMismatch",
            f"{APPROVE_ANNOTATION}={seen.approved[:64]} does not name the pending plan {plan_hash}: nothing applied "
            "(a stale or wrong hash, or the spec changed since that plan)",
        )
        return _decision(applied, refused, said, drifted, warn=True)
    held_data = HOLDS_DATA in (record.message or "")
    waiting = (
        False,
        "AwaitingApproval",
        f"{record.message if held_data else f'plan {plan_hash}: {_counts(record)}'}; apply it with "
        f"kubectl annotate tenant/{tenant} {APPROVE_ANNOTATION}={plan_hash}",
    )
    if held_data:
        return _decision(applied, waiting, said, drifted, warn=True)
    return _decision(applied, waiting, said, drifted, events=_notice_if_new("PlanAwaitingApproval", waiting, said))


def decide_retirement(
    seen: InfraSeen, recorded: InfrastructureStatus | None, data_on: str, now: datetime.datetime
) -> tuple[InfraAction, ...]:
    """Once the tenant's data is no longer on the model it left (`data_on`: where it is after this reconcile's
    move), that model's infrastructure is destroyed; a failed destroy is tried again after its backoff."""
    if seen.retired is None or recorded is None or seen.running is not None or not seen.settled:
        return ()
    models = {str(isolation) for isolation in Isolation}
    # status is evidence: only another model's workspace, never the current one nor a name that is no model
    if recorded.retiring == data_on or recorded.retiring == recorded.workspace or recorded.retiring not in models:
        return ()
    failed = recorded.lastRun == "destroy" and recorded.lastResult == FAILED
    if failed and retry_delay(recorded.failures - 1, base=FAILURE_BASE) > elapsed(recorded.lastRunAt, now):
        return ()
    return (DestroyInfrastructure(seen.retired),)


# --- offboarding ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Teardown:
    done: bool  # nothing (more) to destroy: offboarding goes on
    actions: tuple[InfraAction, ...] = ()
    reason: str = ""
    message: str = ""
    events: tuple[Notice, ...] = ()
    retry: float | None = None


def decide_teardown(
    seen: InfraSeen | None,
    recorded: InfrastructureStatus | None,
    keep: bool,
    said: Condition | None,
    now: datetime.datetime,
    owns_name: bool = True,
) -> Teardown:
    """Offboarding destroys what Terraform built (unless the deletion policy keeps the data, and with it the
    infrastructure holding it): every workspace whose state in PostgreSQL holds resources, a model left earlier
    first, each with the inputs it was applied with. Status is evidence, not an order: what it says was destroyed
    is no reason to skip one, nor a plan that no longer has provisioning (`state_only`). A destroy that fails is
    said (OffboardFailed, Terraform's message, a Warning Event once) and retried with backoff: the finalizer never
    waits in silence. `owns_name`: False for a Tenant refused the name's retained data (its claim does not hold):
    the workspaces under the name are the earlier Tenant's, and nothing of them is destroyed."""
    if keep or not owns_name:
        return Teardown(True)
    if seen is None:  # no Terraform state observed at all (no runs in this operator): only a status saying so waits
        if recorded is None or recorded.runId is None or (recorded.destroyed and not recorded.retiring):
            return Teardown(True)
        return Teardown(
            False, (), "OffboardFailed", "the plan's provisioning is gone: cannot destroy", (), PROBLEM_RETRY
        )
    if seen.built is None:
        message = f"the tenant's Terraform state cannot be read, so what to destroy is unknown: {seen.state_error}"
        return Teardown(False, (), "OffboardFailed", message, _offboard_notice(message, said), PROBLEM_RETRY)
    if not seen.built:
        return Teardown(True)
    if seen.running is not None or not seen.settled:
        return Teardown(
            False, (), "DestroyingInfrastructure", f"terraform {seen.running or 'run'} running", (), DESTROY_POLL
        )
    target = next((built for built in seen.built if built.workspace != seen.desired.workspace), seen.built[0])
    if target.problems:
        message = f"cannot destroy workspace {target.workspace}: {'; '.join(target.problems)}"
        return Teardown(False, (), "OffboardFailed", message, _offboard_notice(message, said), PROBLEM_RETRY)
    destroy = (DestroyInfrastructure(target),)
    record = recorded or InfrastructureStatus()
    if record.lastRun == "destroy" and record.lastResult == FAILED:
        message = f"destroying the infrastructure failed: {record.message}"
        events = _offboard_notice(message, said)
        wait = retry_delay(record.failures - 1, base=FAILURE_BASE) - elapsed(record.lastRunAt, now)
        if wait > 0:
            return Teardown(False, (), "OffboardFailed", message, events, wait)
        return Teardown(False, destroy, "OffboardFailed", message, events, DESTROY_POLL)
    return Teardown(False, destroy, "DestroyingInfrastructure", f"destroying {target.module}", (), DESTROY_POLL)


def _offboard_notice(message: str, said: Condition | None) -> tuple[Notice, ...]:
    return () if said is not None and said.message == message else (Notice("OffboardFailed", message, True),)


# --- the outputs Secret ---------------------------------------------------------------------------------------------


def outputs_secret(tenant: Mapping[str, Any], namespace: str, data: Mapping[str, str]) -> dict[str, Any]:
    """Every output of the module (sensitive ones only here), base64 as a Secret's data, owned by the Tenant."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": OUTPUTS_SECRET,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "paybill", "paybill.dev/tenant": tenant["metadata"]["name"]},
            "ownerReferences": [owner_reference(dict(tenant))],
        },
        "data": {key: base64.b64encode(value.encode()).decode() for key, value in sorted(data.items())},
    }


# --- pieces --------------------------------------------------------------------------------------------------------


def _decision(
    ready: bool,
    provisioned: tuple[bool | None, str, str],
    said: Condition | None,
    drifted: tuple[bool, str, str] | None = None,
    actions: tuple[InfraAction, ...] = (),
    events: tuple[Notice, ...] = (),
    retry: float | None = None,
    warn: bool = False,
) -> InfraDecision:
    notices = events + (_warn_if_new(provisioned, said) if warn else ())
    return InfraDecision(ready, provisioned, actions, drifted, notices, retry)


def _warn_if_new(provisioned: tuple[bool | None, str, str], said: Condition | None) -> tuple[Notice, ...]:
    _, reason, message = provisioned
    if said is not None and said.reason == reason and said.message == message:
        return ()
    return (Notice(reason, message, warning=True),)


def _notice_if_new(
    reason: str, provisioned: tuple[bool | None, str, str], said: Condition | None
) -> tuple[Notice, ...]:
    _, said_reason, message = provisioned
    if said is not None and said.reason == said_reason and said.message == message:
        return ()
    return (Notice(reason, message),)


def _applied_notice(record: InfrastructureStatus, said: Condition | None) -> tuple[Notice, ...]:
    message = _applied(record)
    if said is not None and said.status == "True" and said.message == message:
        return ()
    return (Notice("InfrastructureApplied", message),)


def _applied(record: InfrastructureStatus) -> str:
    return f"{record.module} applied (plan {str(record.appliedHash)[:12]}: {_counts(record)})"


def _counts(record: InfrastructureStatus) -> str:
    return f"{record.adds} to add, {record.changes} to change, {record.destroys} to destroy"


def _drifted(record: InfrastructureStatus) -> tuple[bool, str, str] | None:
    if record.driftCheckedAt is None:
        return None
    if record.drifted:
        return True, "DriftFound", f"changed outside Terraform: {', '.join(record.drifted)}"
    return False, "NoDrift", f"no drift at {record.driftCheckedAt}"


def _running_reason(verb: str) -> str:
    return {"plan": "Planning", "apply": "Applying", "destroy": "Destroying", "drift": "CheckingDrift"}.get(
        verb, "Running"
    )


def elapsed(stamp: str | None, now: datetime.datetime) -> float:
    """Seconds since an RFC 3339 stamp (infinitely long ago when there is none)."""
    if not stamp:
        return float("inf")
    then = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return (now - then).total_seconds()
