"""AgentWorkflow admission decisions (workflows/admission.py), table-tested without a cluster: the real policy
engine on a schema from DDL, the request and the world as typed inputs."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from paybill.api.agentpolicy import AgentPolicySpec, AgentPolicyStatus
from paybill.api.agentworkflow import AgentWorkflowSpec
from paybill.api.plan import PlanSpec
from paybill.api.tenant import Access
from paybill.handlers.admission import Listening, listening
from paybill.policy import PolicyEngine
from paybill.policy.schema import Schema
from paybill.workflows.admission import (
    PLAN_HASHES,
    POLICY_VERSION,
    REQUESTER,
    Request,
    ServiceAccount,
    Tenancy,
    World,
    admit,
    agents_named,
    stamp_matches,
)
from paybill.workflows.reconcile import PolicyView

NAMESPACE = "tenant-acme"
AGENT = f"system:serviceaccount:{NAMESPACE}:tenant-agent"
DDL = """
CREATE TABLE orders (id int PRIMARY KEY, customer_id int, status text, total numeric);
CREATE TABLE customers (id int PRIMARY KEY, name text, email text);
"""
POLICY = AgentPolicySpec.model_validate(
    {
        "subjects": [
            {"serviceAccount": "tenant-agent", "agent": "agent:support-bot"},
            {"serviceAccount": "billing", "agent": "agent:billing-bot"},
        ],
        "rules": [
            {"id": "read-orders", "effect": "allow", "actions": ["select"], "tables": ["orders"]},
            {
                "id": "fix-status",
                "effect": "allow",
                "actions": ["update"],
                "tables": ["orders"],
                "columns": ["status"],
                "requireWhere": True,
            },
            {
                "id": "refunds",
                "effect": "allow",
                "actions": ["update"],
                "tables": ["orders"],
                "columns": ["total"],
                "requireWhere": True,
                "approval": {"approvers": ["user:alice"]},
            },
        ],
        "functions": ["count"],
    }
)
ENGINE = PolicyEngine(POLICY, Schema.from_ddl(DDL))
READ = {"name": "find", "kind": "query", "sql": "SELECT id FROM orders WHERE status = $1", "params": ["open"]}
FIX = {"name": "fix", "kind": "mutation", "sql": "UPDATE orders SET status = 'refunded' WHERE id = $1", "params": [1]}
PLAN = PlanSpec.model_validate({"tier": "pro", "isolation": "pooled", "quotas": {"maxAgents": 2}})


def spec(*steps: dict[str, Any], principal: str = "agent:support-bot") -> AgentWorkflowSpec:
    return AgentWorkflowSpec.model_validate({"principal": principal, "policyRef": "support", "steps": list(steps)})


def create(workflow: AgentWorkflowSpec, username: str = AGENT) -> Request:
    return Request("CREATE", NAMESPACE, username, workflow)


def world(
    access: Access = Access.FULL,
    suspended: bool = False,
    plan: PlanSpec | None = PLAN,
    policy_phase: str | None = "Ready",
    policy_access: Access = Access.FULL,
    agents: frozenset[str] = frozenset({"tenant-agent", "billing"}),
    phase: str = "Active",
    installed: int = 3,
) -> World:
    tenancy = Tenancy("acme", suspended, access, "pro", plan, phase)
    status = AgentPolicyStatus(phase=policy_phase, access=policy_access, observedGeneration=installed)
    return World(tenancy, PolicyView(POLICY, status), agents, policy_generation=3)


def test_a_legitimate_workflow_is_admitted_with_its_stamp() -> None:
    verdict = admit(create(spec(READ, FIX)), world(), ENGINE)
    assert verdict.allowed and verdict.reasons == ()
    hashes = json.loads(verdict.stamp[PLAN_HASHES])
    assert list(hashes) == ["find", "fix"] and all(len(h) > 8 for h in hashes.values())
    assert verdict.stamp[REQUESTER] == AGENT and verdict.stamp[POLICY_VERSION] == ENGINE.version
    assert stamp_matches(dict(verdict.stamp), verdict)
    assert not stamp_matches({**verdict.stamp, REQUESTER: "system:serviceaccount:tenant-acme:x"}, verdict)
    assert not stamp_matches({k: v for k, v in verdict.stamp.items() if k != PLAN_HASHES}, verdict)


def test_each_refused_step_is_named_with_the_engines_reasons() -> None:
    hostile = spec(
        READ,
        {"name": "wipe", "kind": "mutation", "sql": "DELETE FROM orders"},
        {"name": "who", "kind": "query", "sql": "SELECT name FROM customers"},
        {"name": "sneak", "kind": "query", "sql": "UPDATE orders SET status = 'x' WHERE id = 1"},
        {"name": "typed", "kind": "mutation", "sql": "UPDATE orders SET status = 'x' WHERE id = $1", "params": ["z"]},
    )
    verdict = admit(create(hostile), world(), ENGINE)
    assert not verdict.allowed
    by_step = {reason.split(":")[0] for reason in verdict.reasons}
    assert by_step == {"step wipe", "step who", "step sneak", "step typed"}
    assert any(r.startswith("step wipe: no_allow_rule") for r in verdict.reasons)
    assert any(r.startswith("step sneak: kind_mismatch") for r in verdict.reasons)
    assert any(r.startswith("step typed: param_type") for r in verdict.reasons)


def test_a_step_waiting_only_for_approval_is_admitted() -> None:
    refund = {"name": "refund", "kind": "mutation", "sql": "UPDATE orders SET total = 0 WHERE id = $1", "params": [3]}
    verdict = admit(create(spec(refund)), world(), ENGINE)
    assert verdict.allowed, verdict.reasons


@pytest.mark.parametrize(
    ("username", "expected"),
    [
        ("admin", "admin is not one"),
        ("system:serviceaccount:tenant-other:tenant-agent", "is not one"),
        ("system:serviceaccount:tenant-acme:billing", "bound to serviceaccount tenant-agent; the request came from"),
        ("system:serviceaccount:tenant-acme:tenant-admin", "the request came from serviceaccount tenant-admin"),
    ],
)
def test_the_requester_must_be_the_service_account_the_principal_is_bound_to(username: str, expected: str) -> None:
    verdict = admit(create(spec(READ), username), world(), ENGINE)
    assert not verdict.allowed and expected in verdict.message


def test_a_principal_the_policy_does_not_name_is_refused() -> None:
    verdict = admit(create(spec(READ, principal="agent:nobody")), world(), ENGINE)
    assert not verdict.allowed and verdict.message == "agent:nobody is not a subject of agentpolicy/support"


@pytest.mark.parametrize(
    ("seen", "expected"),
    [
        (World(None, None), "namespace tenant-acme is not a tenant's"),
        (world(suspended=True), "tenant acme is suspended"),
        (world(access=Access.NONE), "tenant acme is suspended"),
        (World(world().tenancy, None), "agentpolicy/support does not exist"),
        (world(policy_phase="Invalid"), "agentpolicy/support is Invalid, not Ready"),
        (world(policy_phase=None), "agentpolicy/support is not installed yet, not Ready"),
        (world(policy_access=Access.NONE), "tenant acme's agents have no access now"),
        (world(installed=2), "agentpolicy/support has changes the operator has not installed yet"),
        (world(phase="Offboarding"), "tenant acme is Offboarding"),
        (world(phase="Offboarded"), "tenant acme is Offboarded"),
        (world(plan=None), "plan pro of tenant acme does not exist"),
        (world(agents=frozenset({"a", "b", "c"})), "name 3 agents; plan pro allows 2"),
        (
            world(plan=PLAN.model_copy(update={"quotas": PLAN.quotas.model_copy(update={"agentStatementsPerDay": 1})})),
            "the workflow declares 2 statements; plan pro allows 1 a day",
        ),
    ],
)
def test_the_tenant_the_policy_and_the_plan_must_allow_it(seen: World, expected: str) -> None:
    verdict = admit(create(spec(READ, FIX)), seen, ENGINE)
    assert not verdict.allowed and expected in verdict.message


@pytest.mark.parametrize("seen", [world(access=Access.READ_ONLY), world(policy_access=Access.READ_ONLY)])
def test_a_read_only_tenant_refuses_mutations_not_queries(seen: World) -> None:
    refused = admit(create(spec(READ, FIX)), seen, ENGINE)
    assert not refused.allowed and refused.reasons == ("step fix: tenant acme is read-only; a mutation cannot run",)
    assert admit(create(spec(READ)), seen, ENGINE).allowed


def test_the_plans_step_entitlement_counts() -> None:
    limited = PlanSpec.model_validate(
        {**PLAN.model_dump(mode="json"), "entitlements": {"limits": {"agentWorkflowSteps": 1}}}
    )
    verdict = admit(create(spec(READ, FIX)), world(plan=limited), ENGINE)
    assert not verdict.allowed and "declares 2 steps; plan pro allows 1" in verdict.message


def test_a_workflow_the_policys_run_limit_would_stop_part_way_is_refused() -> None:
    """Each step is a statement: a run of more than maxStatementsPerRun would be stopped part-way, its earlier
    mutations committed; refused at apply time instead."""
    seen = world()
    assert seen.policy is not None
    limited = POLICY.model_copy(update={"limits": POLICY.limits.model_copy(update={"maxStatementsPerRun": 1})})
    verdict = admit(
        create(spec(READ, FIX)), dataclasses.replace(seen, policy=PolicyView(limited, seen.policy.status)), ENGINE
    )
    assert not verdict.allowed and "declares 2 statements; agentpolicy/support allows 1 a run" in verdict.message
    assert admit(create(spec(READ, FIX)), seen, ENGINE).allowed


def test_no_engine_no_admission() -> None:
    verdict = admit(create(spec(READ)), world(), None, "database unavailable")
    assert not verdict.allowed and verdict.message == "the policy engine is not available: database unavailable"


def test_updates_may_not_touch_the_spec_or_the_stamp() -> None:
    admitted = admit(create(spec(READ)), world(), ENGINE)
    stamp = dict(admitted.stamp)
    same = Request("UPDATE", NAMESPACE, "system:serviceaccount:paybill:operator", spec(READ), stamp, spec(READ), stamp)
    assert admit(same, World(None, None), None).allowed  # metadata only: kopf's own annotations, labels
    edited = Request("UPDATE", NAMESPACE, "admin", spec(READ, FIX), stamp, spec(READ), stamp)
    assert "fixed once submitted" in admit(edited, world(), ENGINE).message
    forged = Request("UPDATE", NAMESPACE, "admin", spec(READ), {**stamp, REQUESTER: "x"}, spec(READ), stamp)
    assert "written by admission only" in admit(forged, world(), ENGINE).message
    removed = Request("UPDATE", NAMESPACE, "admin", spec(READ), {}, spec(READ), stamp)
    assert not admit(removed, world(), ENGINE).allowed
    # a parameter 1 made true (or 1.0): equal in Python, another statement to run; the spec is compared as JSON
    for other in (True, 1.0):
        changed = Request("UPDATE", NAMESPACE, "admin", spec({**FIX, "params": [other]}), stamp, spec(FIX), stamp)
        assert "fixed once submitted" in admit(changed, world(), ENGINE).message, other


def test_service_accounts_are_parsed_strictly() -> None:
    assert ServiceAccount.of("system:serviceaccount:ns:name") == ServiceAccount("ns", "name")
    for other in ("system:serviceaccount:ns", "system:serviceaccount::name", "system:serviceaccount:a:b:c", "ns:name"):
        assert ServiceAccount.of(other) is None


def test_the_tenants_agents() -> None:
    assert agents_named([POLICY, POLICY]) == frozenset({"tenant-agent", "billing"})


def test_plain_http_is_served_on_loopback_only() -> None:
    assert listening({}) == Listening("127.0.0.1", None, None, "127.0.0.1", managed=True)
    with pytest.raises(ValueError, match="plain HTTP is served on loopback only"):
        listening({"PAYBILL_WEBHOOK_ADDR": "0.0.0.0"})
    tls = listening({"PAYBILL_WEBHOOK_CERT_DIR": "/certs"})
    assert (tls.addr, tls.port, tls.managed) == ("0.0.0.0", 9443, False)  # the chart registers it
    assert listening({"PAYBILL_WEBHOOK_CERT_DIR": "/certs", "PAYBILL_WEBHOOK_HOST": "paybill.example"}).managed
