"""Admission of an AgentWorkflow: who asks, in whose namespace, under which policy and plan, for which steps. Pure.

The API server asks before it stores a workflow (handlers/admission.py reads the request and the operator's
indexes, builds the policy's engine, and calls `admit`). The agent is the ServiceAccount the API server
authenticated, never a name in the spec: `spec.principal` is only the display name the policy binds to that one
ServiceAccount. A created workflow is refused with every reason at once (each step's engine reasons, prefixed by
the step), or admitted with a stamp (requester, policy version, each step's plan hash) the mutating webhook writes
and the validating webhook checks. An update may not touch the spec or the stamp.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..api.agentpolicy import AgentPolicySpec
from ..api.agentworkflow import AgentWorkflowSpec, Step, StepKind
from ..api.plan import PlanSpec
from ..api.tenant import Access
from ..policy.decision import Decision
from .quota import StatementCharge
from .reconcile import PolicyView
from .run import STATEMENTS

STAMP_PREFIX = "admission.paybill.dev/"
REQUESTER = STAMP_PREFIX + "requester"
POLICY_VERSION = STAMP_PREFIX + "policy-version"
PLAN_HASHES = STAMP_PREFIX + "plan-hashes"
SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"
STEPS_LIMIT = "agentWorkflowSteps"  # Plan.spec.entitlements.limits key; absent: the CRD's 100
ADMITTED_PENDING = frozenset({"approval_required"})  # a step that waits for approval is admitted, not refused
LEAVING = ("Offboarding", "Offboarded")  # a tenant on its way out runs no agent


class Engine(Protocol):
    """What admission asks of the policy engine (paybill.policy.PolicyEngine)."""

    version: str

    def decide(
        self,
        principal: str,
        sql: str,
        params: list[Any] | None = None,
        tenant: str | None = None,
        approvals: frozenset[str] = frozenset(),
    ) -> Decision: ...


@dataclass(frozen=True)
class ServiceAccount:
    namespace: str
    name: str

    @classmethod
    def of(cls, username: str) -> ServiceAccount | None:
        """The ServiceAccount an authenticated username is, or None (a user, a node, anything else)."""
        if not username.startswith(SERVICE_ACCOUNT_PREFIX):
            return None
        namespace, _, name = username.removeprefix(SERVICE_ACCOUNT_PREFIX).partition(":")
        return cls(namespace, name) if namespace and name and ":" not in name else None


@dataclass(frozen=True)
class Request:
    """The write the API server asks about (userInfo.username is who asked)."""

    operation: str  # CREATE | UPDATE
    namespace: str
    username: str
    spec: AgentWorkflowSpec
    annotations: Mapping[str, str] = field(default_factory=dict)
    old_spec: AgentWorkflowSpec | None = None
    old_annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Tenancy:
    """The Tenant that controls the namespace (by uid), as the operator last saw it, and its plan."""

    tenant: str
    suspended: bool  # spec.suspended
    access: Access  # status.access; none when not recorded
    plan_name: str
    plan: PlanSpec | None  # None: the Plan does not exist
    phase: str | None = None  # status.phase


@dataclass(frozen=True)
class World:
    """What the operator knows when the request arrives."""

    tenancy: Tenancy | None  # None: the namespace is no tenant's
    policy: PolicyView | None  # the AgentPolicy spec.policyRef names; None: missing
    agents: frozenset[str] = frozenset()  # ServiceAccounts the namespace's AgentPolicies name
    policy_generation: int | None = None  # the policy's metadata.generation (its status must be of that spec)


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    reasons: tuple[str, ...] = ()
    stamp: Mapping[str, str] = field(default_factory=dict)  # the annotations an admitted create carries
    statements: StatementCharge | None = None  # what an admitted create adds to its tenant's day (workflows/quota.py)

    @property
    def message(self) -> str:
        return "; ".join(self.reasons)


def refuse(*reasons: str) -> Verdict:
    return Verdict(False, tuple(reasons))


def admit(request: Request, world: World, engine: Engine | None, engine_problem: str | None = None) -> Verdict:
    """Admit or refuse a create or an update of an AgentWorkflow."""
    if request.operation == "UPDATE":
        return _admit_update(request)
    if request.operation != "CREATE":
        return refuse(f"operation {request.operation} is not admitted")
    if problems := _who_and_where(request, world):
        return refuse(*problems)
    assert world.tenancy is not None and world.policy is not None  # checked by _who_and_where
    if problems := _entitlements(request.spec, world.tenancy, world):
        return refuse(*problems)
    if engine is None:
        return refuse(f"the policy engine is not available: {engine_problem or 'unknown'}")
    decisions, problems = _check_steps(request.spec, engine, world.tenancy.tenant)
    if problems:
        return refuse(*problems)
    tenancy, plan = world.tenancy, world.tenancy.plan
    assert plan is not None  # checked by _entitlements
    charge = StatementCharge(
        tenancy.tenant, len(request.spec.steps), plan.quotas.agentStatementsPerDay, tenancy.plan_name
    )
    return Verdict(True, stamp=stamp(request.username, engine.version, decisions), statements=charge)


def stamp(username: str, version: str, decisions: Mapping[str, Decision]) -> dict[str, str]:
    """Who asked, under which policy version, and each step's plan hash (compact JSON, in step order)."""
    hashes = {name: decision.plan_hash or "" for name, decision in decisions.items()}
    return {
        REQUESTER: username,
        POLICY_VERSION: version,
        PLAN_HASHES: json.dumps(hashes, separators=(",", ":")),
    }


def stamp_of(annotations: Mapping[str, str]) -> dict[str, str]:
    return {key: value for key, value in annotations.items() if key.startswith(STAMP_PREFIX)}


def stamp_matches(annotations: Mapping[str, str], verdict: Verdict) -> bool:
    """The object carries exactly the stamp admission computed (nothing added, changed or missing)."""
    return stamp_of(annotations) == dict(verdict.stamp)


def canonical_spec(spec: AgentWorkflowSpec) -> str:
    """The spec as canonical JSON: what is compared and signed (Python's == takes 1, 1.0 and True for one value)."""
    return json.dumps(spec.model_dump(mode="json", by_alias=True), sort_keys=True, separators=(",", ":"))


def _admit_update(request: Request) -> Verdict:
    reasons = []
    if request.old_spec is not None and canonical_spec(request.old_spec) != canonical_spec(request.spec):
        reasons.append(
            "an AgentWorkflow's spec (steps, principal, policyRef) is fixed once submitted: submit a new one"
        )
    if stamp_of(request.annotations) != stamp_of(request.old_annotations):
        reasons.append(f"the {STAMP_PREFIX}* annotations are written by admission only")
    return refuse(*reasons) if reasons else Verdict(True)


def _who_and_where(request: Request, world: World) -> list[str]:
    """The requester is a ServiceAccount of the namespace bound to the claimed principal; the namespace is a
    tenant's, the tenant may run its agents, and the policy is there and Ready."""
    account = ServiceAccount.of(request.username)
    if account is None or account.namespace != request.namespace:
        return [
            f"AgentWorkflows are submitted by an agent's ServiceAccount in namespace {request.namespace}; "
            f"{request.username} is not one"
        ]
    tenancy, policy, ref = world.tenancy, world.policy, request.spec.policyRef
    if tenancy is None:
        return [f"namespace {request.namespace} is not a tenant's"]
    if tenancy.phase in LEAVING:
        return [f"tenant {tenancy.tenant} is {tenancy.phase}: its agents cannot run"]
    if tenancy.suspended or tenancy.access == Access.NONE:
        return [f"tenant {tenancy.tenant} is suspended: its agents cannot run"]
    if policy is None:
        return [f"agentpolicy/{ref} does not exist in namespace {request.namespace}"]
    if policy.status.phase != "Ready":
        return [f"agentpolicy/{ref} is {policy.status.phase or 'not installed yet'}, not Ready"]
    if world.policy_generation is not None and policy.status.observedGeneration != world.policy_generation:
        return [f"agentpolicy/{ref} has changes the operator has not installed yet"]
    problems = _identity(request.spec.principal, account, policy.spec, ref)
    access = _least(tenancy.access, Access(policy.status.access or Access.NONE))
    if access == Access.NONE:
        problems.append(f"tenant {tenancy.tenant}'s agents have no access now")
    elif access == Access.READ_ONLY:
        problems += [
            f"step {step.name}: tenant {tenancy.tenant} is read-only; a mutation cannot run"
            for step in request.spec.steps
            if step.kind == StepKind.MUTATION
        ]
    return problems


def _identity(principal: str, account: ServiceAccount, policy: AgentPolicySpec, ref: str) -> list[str]:
    bound = next((subject.serviceAccount for subject in policy.subjects if subject.agent == principal), None)
    if bound is None:
        return [f"{principal} is not a subject of agentpolicy/{ref}"]
    if bound != account.name:
        return [f"{principal} is bound to serviceaccount {bound}; the request came from serviceaccount {account.name}"]
    return []


def _least(first: Access, second: Access) -> Access:
    order = (Access.NONE, Access.READ_ONLY, Access.FULL)
    return min(first, second, key=order.index)


def _entitlements(spec: AgentWorkflowSpec, tenancy: Tenancy, world: World) -> list[str]:
    plan = tenancy.plan
    if plan is None:
        return [f"plan {tenancy.plan_name} of tenant {tenancy.tenant} does not exist"]
    problems = []
    quotas, where = plan.quotas, f"plan {tenancy.plan_name}"
    if len(world.agents) > quotas.maxAgents:
        problems.append(
            f"the namespace's AgentPolicies name {len(world.agents)} agents; {where} allows {quotas.maxAgents}"
        )
    steps_limit = plan.entitlements.limits.get(STEPS_LIMIT)
    if steps_limit is not None and len(spec.steps) > steps_limit:
        problems.append(f"the workflow declares {len(spec.steps)} steps; {where} allows {steps_limit}")
    if len(spec.steps) > quotas.agentStatementsPerDay:  # the day's count is charged once admitted (quota.py)
        problems.append(
            f"the workflow declares {len(spec.steps)} statements; {where} allows {quotas.agentStatementsPerDay} a day"
        )
    per_run = world.policy.spec.limits.maxStatementsPerRun if world.policy is not None else None
    if per_run is not None and len(spec.steps) > per_run:  # the guard would stop the run there, part-way
        problems.append(
            f"the workflow declares {len(spec.steps)} statements; agentpolicy/{spec.policyRef} allows {per_run} a run"
        )
    return problems


def _check_steps(spec: AgentWorkflowSpec, engine: Engine, tenant: str) -> tuple[dict[str, Decision], list[str]]:
    """Every step through the engine with its parameters: the decisions and every step's reasons to refuse."""
    decisions: dict[str, Decision] = {}
    problems: list[str] = []
    for step in spec.steps:
        decision = engine.decide(spec.principal, step.sql, list(step.params), tenant)
        decisions[step.name] = decision
        problems += [f"step {step.name}: {reason}" for reason in step_problems(step, decision)]
    return decisions, problems


def step_problems(step: Step, decision: Decision) -> list[str]:
    """Why the engine's decision refuses the step (a step waiting only for approval is not refused), and whether
    its statement is the kind it declares."""
    blocking = [r for r in decision.refusing() if r.code not in ADMITTED_PENDING] if not decision.allowed else []
    problems = [_describe(r.code, r.message, r.rule, r.position) for r in blocking]
    if not decision.allowed and not blocking and not decision.reasons:
        problems.append("denied: the engine gave no reason")
    if not problems and decision.statement not in STATEMENTS[StepKind(step.kind)]:
        problems.append(f"kind_mismatch: declared a {step.kind} but its statement is {str(decision.statement).upper()}")
    return problems


def _describe(code: str, message: str, rule: str | None, position: int | None) -> str:
    where = "".join((f" (rule {rule})" if rule else "", f" at position {position}" if position is not None else ""))
    return f"{code}: {message}{where}"


def agents_named(policies: Sequence[AgentPolicySpec]) -> frozenset[str]:
    """The distinct ServiceAccounts a namespace's policies name: the tenant's agents."""
    return frozenset(subject.serviceAccount for policy in policies for subject in policy.subjects)
