"""Approvals bound to plan hashes, end to end through real kubectl: the agent submits as its ServiceAccount, a
person with the approver ClusterRole (bound in the tenant's namespace) annotates the workflow, the operator's
admission webhook checks who that is (the API server's userInfo) and records it, and the step runs only for exactly
the hash approved, under the policy version it was computed for."""

from __future__ import annotations

import datetime
import io
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from paybill.audit import AuditLog
from paybill.audit.commands import export as audit_export
from paybill.database.server import LocalPostgres
from paybill.kube import write_kubeconfig
from paybill.workflows.approvals import APPROVE_PREFIX, REJECT_PREFIX, approver_cluster_role
from test_tenant_lifecycle import API, agent_policy, login, onboard, wait_phase, wait_policy

pytestmark = [
    pytest.mark.slow,
    pytest.mark.kubectl,
    pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed"),
]
AGENT = "tenant-agent"
Kubectl = Callable[..., subprocess.CompletedProcess[str]]
FIND = {"name": "find", "kind": "query", "sql": "SELECT id, status FROM orders WHERE status = $1", "params": ["open"]}
FIX = {"name": "fix", "kind": "mutation", "sql": "UPDATE orders SET status = 'refunded' WHERE id = $1", "params": [1]}
NEEDS_ALICE = {"approvers": ["user:alice"], "minApprovals": 1}


def kubectl_as(kubeconfig: Path, home: Path) -> Kubectl:
    env = {"KUBECONFIG": str(kubeconfig), "PATH": "/usr/bin:/bin:/usr/local/bin", "HOME": str(home)}

    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["kubectl", *args], env=env, input=stdin, capture_output=True, text=True, timeout=90)

    return run


def user_kubeconfig(cluster: Any, username: str) -> Path:
    """A person's kubeconfig: a static token the emulated API server maps to `username`."""
    token = cluster.api.access.tokens.add_user(username)
    authority = cluster.api.access.certificate.certificate_authority
    return write_kubeconfig(cluster.kubeconfig.with_name(f"user-{username}.conf"), cluster.url, authority, token)


def approval_policy(namespace: str, **changes: Any) -> dict[str, Any]:
    """The support policy, its status fix needing alice's approval."""
    rules = [
        {"id": "read-orders", "effect": "allow", "actions": ["select"], "tables": ["orders"]},
        {
            "id": "fix-status",
            "effect": "allow",
            "actions": ["update"],
            "tables": ["orders"],
            "columns": ["status"],
            "requireWhere": True,
            "approval": NEEDS_ALICE,
        },
    ]
    return agent_policy(namespace, rules=rules, **changes)


def bind_approver(cluster: Any, namespace: str, subject: dict[str, str]) -> None:
    """The approver ClusterRole (as the chart ships it), bound in the tenant's namespace."""
    cluster.kube.apply(approver_cluster_role())
    cluster.kube.apply(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": f"approver-{subject['name']}", "namespace": namespace},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "paybill-agentworkflow-approver",
            },
            "subjects": [subject],
        }
    )


def bind_user(cluster: Any, namespace: str, role_kind: str, role: str, user: str) -> None:
    """A RoleBinding in `namespace` of the Role or ClusterRole `role` to the person `user`."""
    cluster.kube.apply(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": f"{role}-{user}", "namespace": namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role},
            "subjects": [{"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}],
        }
    )


def submit(agent: Kubectl, namespace: str, name: str) -> None:
    body = {
        "apiVersion": API,
        "kind": "AgentWorkflow",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"principal": "agent:support-bot", "policyRef": "support", "steps": [FIND, FIX]},
    }
    applied = agent("apply", "-f", "-", stdin=yaml.safe_dump(body))
    assert applied.returncode == 0, applied.stderr


def workflow_status(cluster: Any, namespace: str, name: str) -> dict[str, Any]:
    return (cluster.kube.get(API, "agentworkflows", name, namespace) or {}).get("status") or {}


def awaiting(cluster: Any, namespace: str, name: str, other_than: str | None = None) -> dict[str, Any]:
    """The workflow waiting for approval (of a plan hash other than `other_than`, if given)."""

    def check() -> dict[str, Any] | None:
        current = workflow_status(cluster, namespace, name)
        approval = current.get("approval") or {}
        if current.get("phase") == "AwaitingApproval" and approval.get("planHash") not in (None, other_than):
            return current
        return None

    try:
        return cluster.eventually(check, timeout=60)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; status: {workflow_status(cluster, namespace, name)}") from None


def looked_again(cluster: Any, namespace: str, name: str, times: int = 2) -> None:
    """Wait until the operator has looked at the workflow `times` more times (kopf counts each retry)."""
    start = cluster.kopf_retries("agentworkflows", name, namespace)
    cluster.eventually(lambda: cluster.kopf_retries("agentworkflows", name, namespace) >= start + times, timeout=60)


def order_status(cluster: Any, tenant: str) -> str:
    with login(cluster, tenant) as conn:
        row = conn.execute("SELECT status FROM orders WHERE id = 1").fetchone()
    assert row is not None
    return str(row[0])


def records(postgres: LocalPostgres, namespace: str, name: str) -> list[Any]:
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        return AuditLog(lambda: conn).records("AgentWorkflow", f"{namespace}/{name}")


def audited(postgres: LocalPostgres, namespace: str, name: str, event: str) -> int:
    return sum(r.event == event for r in records(postgres, namespace, name))


def annotate(who: Kubectl, namespace: str, name: str, key: str, value: str) -> subprocess.CompletedProcess[str]:
    return who("annotate", f"agentworkflow/{name}", "-n", namespace, f"{key}={value}", "--overwrite")


@pytest.fixture
def tenant(operator: Any) -> tuple[str, str]:
    """An Active pooled tenant with one open order and the support policy Ready, its fix needing approval."""
    name = onboard(operator, "pooled")
    namespace = f"tenant-{name}"
    wait_phase(operator, name, "Active")
    with login(operator, name) as conn:
        conn.execute("INSERT INTO customers (tenant_id, id, name) VALUES (%s, 1, 'c')", (name,))
        conn.execute(
            "INSERT INTO orders (tenant_id, id, customer_id, status, total) VALUES (%s, 1, 1, 'open', 5)", (name,)
        )
    operator.kube.apply(approval_policy(namespace))
    wait_policy(operator, namespace, "Ready")
    return name, namespace


def test_only_the_approver_approving_exactly_the_hash_runs_the_step(
    operator: Any, tenant: tuple[str, str], tmp_path: Path, postgres: LocalPostgres
) -> None:
    name, namespace = tenant
    agent = kubectl_as(operator.service_account_kubeconfig(namespace, AGENT), tmp_path)
    alice = kubectl_as(user_kubeconfig(operator, "alice"), tmp_path)
    bind_approver(operator, namespace, {"kind": "User", "name": "alice", "apiGroup": "rbac.authorization.k8s.io"})
    submit(agent, namespace, "refund")
    waiting = awaiting(operator, namespace, "refund")
    plan_hash = waiting["approval"]["planHash"]
    assert waiting["steps"][1]["planHash"] == plan_hash and waiting["completedSteps"] == 1
    assert f"paybill.dev/approve-fix={plan_hash}" in waiting["approval"]["message"]
    key = APPROVE_PREFIX + "fix"

    # the agent approving itself: its Role cannot even patch the workflow ...
    itself = annotate(agent, namespace, "refund", key, plan_hash)
    assert itself.returncode != 0 and "forbidden" in itself.stderr.lower()
    # ... and bound to the approver role by mistake, the webhook still refuses it: it is a ServiceAccount
    bind_approver(operator, namespace, {"kind": "ServiceAccount", "name": AGENT, "namespace": namespace})
    bound = annotate(agent, namespace, "refund", key, plan_hash)
    assert bound.returncode != 0 and "is a ServiceAccount" in bound.stderr, bound.stderr
    # a person without the role is refused by RBAC (no patch), one with only patch by the webhook (no approve verb)
    mallory = kubectl_as(user_kubeconfig(operator, "mallory"), tmp_path)
    assert annotate(mallory, namespace, "refund", key, plan_hash).returncode != 0
    operator.kube.apply(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "workflow-editor"},
            "rules": [{"apiGroups": ["paybill.dev"], "resources": ["agentworkflows"], "verbs": ["get", "patch"]}],
        }
    )
    bind_user(operator, namespace, "ClusterRole", "workflow-editor", "mallory")
    editor = annotate(mallory, namespace, "refund", key, plan_hash)
    assert editor.returncode != 0 and "may not approve agentworkflows" in editor.stderr, editor.stderr
    annotations = operator.kube.get(API, "agentworkflows", "refund", namespace)["metadata"].get("annotations") or {}
    assert key not in annotations

    # the approver with a wrong hash: admitted (she may approve), recorded, and nothing runs
    wrong = "0" * 32
    assert annotate(alice, namespace, "refund", key, wrong).returncode == 0
    looked_again(operator, namespace, "refund")
    assert workflow_status(operator, namespace, "refund")["phase"] == "AwaitingApproval"
    assert order_status(operator, name) == "open"
    assert audited(postgres, namespace, "refund", "StepDenied") == 1  # looked at, never run again

    # the right hash: the step runs, once
    approved = annotate(alice, namespace, "refund", key, plan_hash)
    assert approved.returncode == 0, approved.stderr
    admin = kubectl_as(operator.kubeconfig, tmp_path)
    waited = admin("wait", "--for=condition=Complete", "agentworkflow/refund", "-n", namespace, "--timeout=90s")
    assert waited.returncode == 0, waited.stderr
    done = workflow_status(operator, namespace, "refund")
    assert done["phase"] == "Succeeded" and "approval" not in done
    assert [(s["name"], s["executed"]) for s in done["steps"]] == [("find", True), ("fix", True)]
    assert order_status(operator, name) == "refunded"
    grants = [r.details for r in records(postgres, namespace, "refund") if r.event == "ApprovalGranted"]
    assert [(g["planHash"], g["approver"]) for g in grants] == [(wrong, "user:alice"), (plan_hash, "user:alice")]
    exported = io.StringIO()  # the reviewer's view of the tenant holds who approved
    assert (
        audit_export(
            postgres.dsn, name, datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1), None, exported
        )
        == 0
    )
    lines = [json.loads(line) for line in exported.getvalue().splitlines()]
    assert [line["details"]["planHash"] for line in lines if line["event"] == "ApprovalGranted"] == [wrong, plan_hash]


def test_a_policy_change_voids_a_pending_approval_and_a_rejection_ends_the_step(
    operator: Any, tenant: tuple[str, str], tmp_path: Path
) -> None:
    name, namespace = tenant
    agent = kubectl_as(operator.service_account_kubeconfig(namespace, AGENT), tmp_path)
    alice = kubectl_as(user_kubeconfig(operator, "alice"), tmp_path)
    bind_approver(operator, namespace, {"kind": "User", "name": "alice", "apiGroup": "rbac.authorization.k8s.io"})
    submit(agent, namespace, "refund")
    before = awaiting(operator, namespace, "refund")
    first = before["approval"]["planHash"]

    # a new policy version: the awaited hash is void, status says so, and approving it does nothing
    operator.kube.apply(approval_policy(namespace, limits={"maxRowsRead": 500}))
    after = awaiting(operator, namespace, "refund", other_than=first)
    second = after["approval"]["planHash"]
    assert (
        after["approval"]["voided"] == [first]
        and after["approval"]["policyVersion"] != before["approval"]["policyVersion"]
    )
    assert f"approvals of {first} are void" in after["approval"]["message"]
    assert annotate(alice, namespace, "refund", APPROVE_PREFIX + "fix", first).returncode == 0
    looked_again(operator, namespace, "refund")
    assert workflow_status(operator, namespace, "refund")["approval"]["planHash"] == second
    assert order_status(operator, name) == "open"

    # rejected: the run ends Denied, the step never runs
    assert annotate(alice, namespace, "refund", REJECT_PREFIX + "fix", second).returncode == 0
    admin = kubectl_as(operator.kubeconfig, tmp_path)
    waited = admin("wait", "--for=condition=Denied", "agentworkflow/refund", "-n", namespace, "--timeout=90s")
    assert waited.returncode == 0, waited.stderr
    denied = workflow_status(operator, namespace, "refund")
    ready = next(c for c in denied["conditions"] if c["type"] == "Ready")
    assert (
        denied["phase"] == "Denied" and ready["reason"] == "Rejected" and "rejected by user:alice" in ready["message"]
    )
    assert order_status(operator, name) == "open"
    events = operator.kube.list("v1", "events", namespace)
    assert {"AwaitingApproval", "ApprovalVoided", "Rejected"} <= {e.get("reason") for e in events}


def test_two_approvals_each_under_its_own_key_run_the_step(
    operator: Any, tenant: tuple[str, str], tmp_path: Path, postgres: LocalPostgres
) -> None:
    """minApprovals 2: alice approves, bob rewriting her key with the same value changes nothing (no approval),
    bob under a key of his own is the second approval, and the step runs."""
    name, namespace = tenant
    needs_two = {"approvers": ["user:alice", "user:bob"], "minApprovals": 2}
    policy = approval_policy(namespace)
    policy["spec"]["rules"][1]["approval"] = needs_two
    operator.kube.apply(policy)
    wait_policy(operator, namespace, "Ready")
    agent = kubectl_as(operator.service_account_kubeconfig(namespace, AGENT), tmp_path)
    alice = kubectl_as(user_kubeconfig(operator, "alice"), tmp_path)
    bob = kubectl_as(user_kubeconfig(operator, "bob"), tmp_path)
    for person in ("alice", "bob"):
        bind_approver(operator, namespace, {"kind": "User", "name": person, "apiGroup": "rbac.authorization.k8s.io"})
    submit(agent, namespace, "refund")
    plan_hash = awaiting(operator, namespace, "refund")["approval"]["planHash"]
    key = APPROVE_PREFIX + "fix"

    assert annotate(alice, namespace, "refund", key, plan_hash).returncode == 0
    assert annotate(bob, namespace, "refund", key, plan_hash).returncode == 0  # the same value: no change
    looked_again(operator, namespace, "refund")
    assert workflow_status(operator, namespace, "refund")["phase"] == "AwaitingApproval"
    assert order_status(operator, name) == "open"
    denied = audited(postgres, namespace, "refund", "StepDenied")
    looked_again(operator, namespace, "refund", times=3)  # one approval of two is no news at every look
    assert audited(postgres, namespace, "refund", "StepDenied") == denied

    assert annotate(bob, namespace, "refund", key + ".bob", plan_hash).returncode == 0
    admin = kubectl_as(operator.kubeconfig, tmp_path)
    waited = admin("wait", "--for=condition=Complete", "agentworkflow/refund", "-n", namespace, "--timeout=90s")
    assert waited.returncode == 0, waited.stderr
    assert order_status(operator, name) == "refunded"
    grants = [r.details for r in records(postgres, namespace, "refund") if r.event == "ApprovalGranted"]
    assert [(g["approver"], g["annotation"]) for g in grants] == [("user:alice", key), ("user:bob", key + ".bob")]


@pytest.mark.parametrize(
    "rule",
    [
        pytest.param(
            {"apiGroups": [""], "resources": ["serviceaccounts/token"], "verbs": ["create"], "resourceNames": [AGENT]},
            id="mints-its-tokens",
        ),
        pytest.param({"apiGroups": [""], "resources": ["pods"], "verbs": ["create"]}, id="runs-a-pod-as-it"),
        pytest.param({"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["patch"]}, id="changes-a-job's-account"),
    ],
)
def test_a_person_who_can_act_as_the_agent_may_not_approve_its_steps(
    operator: Any, tenant: tuple[str, str], tmp_path: Path, rule: dict[str, Any]
) -> None:
    """alice, an approver who may also mint the agent ServiceAccount's tokens, or run a workload (a Pod may name any
    ServiceAccount of its namespace) as it, could submit as the agent and approve as herself: the webhook refuses
    her approval (outside reviews: one person both submitting and approving)."""
    _, namespace = tenant
    agent = kubectl_as(operator.service_account_kubeconfig(namespace, AGENT), tmp_path)
    alice = kubectl_as(user_kubeconfig(operator, "alice"), tmp_path)
    bind_approver(operator, namespace, {"kind": "User", "name": "alice", "apiGroup": "rbac.authorization.k8s.io"})
    operator.kube.apply(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "act-as-agent", "namespace": namespace},
            "rules": [rule],
        }
    )
    bind_user(operator, namespace, "Role", "act-as-agent", "alice")
    submit(agent, namespace, "refund")
    plan_hash = awaiting(operator, namespace, "refund")["approval"]["planHash"]
    refused = annotate(alice, namespace, "refund", APPROVE_PREFIX + "fix", plan_hash)
    assert refused.returncode != 0 and "which submitted this workflow" in refused.stderr, refused.stderr
    assert workflow_status(operator, namespace, "refund")["phase"] == "AwaitingApproval"
