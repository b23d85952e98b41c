"""AgentWorkflow admission end to end: the operator's webhooks, called by the emulated API server, through real
kubectl acting as the agent's ServiceAccount (a bound token), a real PostgreSQL behind the policy engine."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kopf
import pytest
import yaml
from kopf.testing import KopfRunner

from chart.webhooks import serve_webhooks_over_tls
from paybill.api.agentworkflow import AgentWorkflowSpec
from paybill.api.tenant import Access
from paybill.database.server import LocalPostgres
from paybill.handlers.admission import (
    CONFIGURATION,
    STAMP_ID,
    VALIDATE_ID,
    EngineCache,
    observe,
    read_world,
    reviewed,
    webhook_name,
)
from paybill.workflows.admission import PLAN_HASHES, POLICY_VERSION, REQUESTER
from test_tenant_lifecycle import API, agent_policy, login, onboard, wait_phase, wait_policy, wait_workflow

pytestmark = [
    pytest.mark.slow,
    pytest.mark.kubectl,
    pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed"),
]
AGENT = "tenant-agent"
Kubectl = Callable[..., subprocess.CompletedProcess[str]]


def kubectl_as(kubeconfig: Path, home: Path) -> Kubectl:
    env = {"KUBECONFIG": str(kubeconfig), "PATH": "/usr/bin:/bin:/usr/local/bin", "HOME": str(home)}

    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["kubectl", *args], env=env, input=stdin, capture_output=True, text=True, timeout=60)

    return run


def workflow(namespace: str, name: str, steps: list[dict[str, Any]], principal: str = "agent:support-bot") -> str:
    body = {
        "apiVersion": API,
        "kind": "AgentWorkflow",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"principal": principal, "policyRef": "support", "steps": steps},
    }
    return yaml.safe_dump(body)


READ: dict[str, Any] = {
    "name": "find",
    "kind": "query",
    "sql": "SELECT id, status FROM orders WHERE status = $1",
    "params": ["open"],
}
FIX: dict[str, Any] = {
    "name": "fix",
    "kind": "mutation",
    "sql": "UPDATE orders SET status = 'refunded' WHERE id = $1",
    "params": [1],
}
HOSTILE: list[dict[str, Any]] = [
    READ,
    {"name": "wipe", "kind": "mutation", "sql": "DELETE FROM orders"},
    {"name": "peek", "kind": "query", "sql": "SELECT usename, passwd FROM pg_shadow"},
    {"name": "sneak", "kind": "query", "sql": "UPDATE orders SET status = 'x' WHERE id = 1"},
]


def tenant_with_policy(operator: Any) -> tuple[str, str]:
    """An Active pooled tenant with one open order and the support policy Ready (tenant-agent is agent:support-bot)."""
    name = onboard(operator, "pooled")
    namespace = f"tenant-{name}"
    wait_phase(operator, name, "Active")
    with login(operator, name) as conn:
        conn.execute("INSERT INTO customers (tenant_id, id, name) VALUES (%s, 1, 'c')", (name,))
        conn.execute(
            "INSERT INTO orders (tenant_id, id, customer_id, status, total) VALUES (%s, 1, 1, 'open', 5)", (name,)
        )
    operator.kube.apply(agent_policy(namespace))
    wait_policy(operator, namespace, "Ready")
    return name, namespace


def test_the_operator_registers_fail_closed_webhooks(operator: Any) -> None:
    def registered() -> list[dict[str, Any]] | None:
        found = [
            operator.kube.get("admissionregistration.k8s.io/v1", plural, CONFIGURATION)
            for plural in ("mutatingwebhookconfigurations", "validatingwebhookconfigurations")
        ]
        hooks = [hook for config in found if config for hook in config.get("webhooks") or []]
        return hooks if len(hooks) == 2 else None

    hooks = operator.eventually(registered, timeout=30)
    assert sorted(hook["name"] for hook in hooks) == sorted([webhook_name(STAMP_ID), webhook_name(VALIDATE_ID)])
    assert {hook["failurePolicy"] for hook in hooks} == {"Fail"}
    assert all(hook["clientConfig"]["url"].startswith("http://127.0.0.1:") for hook in hooks)
    effects = {hook["name"]: hook["sideEffects"] for hook in hooks}  # approvals and charges: never on a dry run
    assert effects == {webhook_name(STAMP_ID): "None", webhook_name(VALIDATE_ID): "NoneOnDryRun"}


def test_a_valid_workflow_is_admitted_stamped_and_runs(
    operator: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    name, namespace = tenant_with_policy(operator)
    agent = kubectl_as(operator.service_account_kubeconfig(namespace, AGENT), tmp_path)
    applied = agent("apply", "-f", "-", stdin=workflow(namespace, "refund", [READ, FIX]))
    assert applied.returncode == 0, applied.stderr
    done = wait_workflow(operator, namespace, "refund", "Succeeded")
    annotations = operator.kube.get(API, "agentworkflows", "refund", namespace)["metadata"]["annotations"]
    assert annotations[REQUESTER] == f"system:serviceaccount:{namespace}:{AGENT}"
    assert annotations[POLICY_VERSION] == done["policyVersion"]
    assert json.loads(annotations[PLAN_HASHES]) == {step["name"]: step["planHash"] for step in done["steps"]}
    with login(operator, name) as conn:
        assert conn.execute("SELECT status FROM orders WHERE id = 1").fetchone() == ("refunded",)
    said = [r.getMessage() for r in caplog.records]
    assert not [line for line in said if "agentworkflow' succeeded" in line or '"POST /admission/' in line]


def test_a_hostile_workflow_is_refused_at_apply_time_with_each_steps_reasons(
    operator: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    name, namespace = tenant_with_policy(operator)
    agent = kubectl_as(operator.service_account_kubeconfig(namespace, AGENT), tmp_path)
    refused = agent("apply", "-f", "-", stdin=workflow(namespace, "hostile", HOSTILE))
    assert refused.returncode != 0
    message = refused.stderr
    assert f'admission webhook "{webhook_name(STAMP_ID)}" denied the request' in message
    assert "step wipe: no_allow_rule" in message
    assert "step peek: " in message and "pg_shadow" in message
    assert "step sneak: kind_mismatch" in message
    assert "step find" not in message  # the legitimate step has nothing to say
    assert operator.kube.get(API, "agentworkflows", "hostile", namespace) is None
    with login(operator, name) as conn:
        assert conn.execute("SELECT status FROM orders WHERE id = 1").fetchone() == ("open",)
    refusals = [r for r in caplog.records if "step wipe: no_allow_rule" in r.getMessage()]
    assert refusals and {r.levelname for r in refusals} == {"INFO"}  # an answer, not an operator error


def test_a_service_account_claiming_another_agent_is_refused(operator: Any, tmp_path: Path) -> None:
    _, namespace = tenant_with_policy(operator)
    admin_sa = kubectl_as(operator.service_account_kubeconfig(namespace, "tenant-admin"), tmp_path)
    claimed = admin_sa("apply", "-f", "-", stdin=workflow(namespace, "claimed", [READ]))
    assert claimed.returncode != 0
    assert (
        "agent:support-bot is bound to serviceaccount tenant-agent; the request came from serviceaccount tenant-admin"
        in claimed.stderr
    )
    agent = kubectl_as(operator.service_account_kubeconfig(namespace, AGENT), tmp_path)
    unknown = agent("apply", "-f", "-", stdin=workflow(namespace, "other", [READ], principal="agent:billing-bot"))
    assert unknown.returncode != 0 and "agent:billing-bot is not a subject of agentpolicy/support" in unknown.stderr
    cluster_admin = kubectl_as(operator.kubeconfig, tmp_path)
    human = cluster_admin("apply", "-f", "-", stdin=workflow(namespace, "human", [READ]))
    assert human.returncode != 0 and "is not one" in human.stderr
    assert not operator.kube.list(API, "agentworkflows", namespace)


def test_steps_cannot_be_edited_after_submission(operator: Any, tmp_path: Path) -> None:
    _, namespace = tenant_with_policy(operator)
    agent = kubectl_as(operator.service_account_kubeconfig(namespace, AGENT), tmp_path)
    assert agent("apply", "-f", "-", stdin=workflow(namespace, "fixed", [READ])).returncode == 0
    admin = kubectl_as(operator.kubeconfig, tmp_path)
    steps = json.dumps({"spec": {"steps": [FIX]}})
    edited = admin("patch", "agentworkflow", "fixed", "-n", namespace, "--type=merge", "-p", steps)
    assert edited.returncode != 0 and "fixed once submitted" in edited.stderr
    forged = json.dumps({"metadata": {"annotations": {REQUESTER: "system:serviceaccount:x:y"}}})
    restamped = admin("patch", "agentworkflow", "fixed", "-n", namespace, "--type=merge", "-p", forged)
    assert restamped.returncode != 0 and "written by admission only" in restamped.stderr
    labelled = admin("label", "agentworkflow", "fixed", "-n", namespace, "team=support")
    assert labelled.returncode == 0, labelled.stderr  # metadata stays editable
    stored = operator.kube.get(API, "agentworkflows", "fixed", namespace)
    assert [step["name"] for step in stored["spec"]["steps"]] == ["find"]


def test_a_suspended_or_read_only_tenants_mutation_is_refused(operator: Any, tmp_path: Path) -> None:
    name, namespace = tenant_with_policy(operator)
    agent = kubectl_as(operator.service_account_kubeconfig(namespace, AGENT), tmp_path)
    operator.kube.merge_patch(API, "tenants", name, {"spec": {"suspended": True}})
    wait_phase(operator, name, "Suspended")
    refused = agent("apply", "-f", "-", stdin=workflow(namespace, "while-suspended", [FIX]))
    assert refused.returncode != 0 and f"tenant {name} is suspended" in refused.stderr
    assert operator.kube.get(API, "agentworkflows", "while-suspended", namespace) is None


def test_over_tls_the_operator_registers_https_webhooks_trusting_its_ca(
    cluster: Any, postgres: LocalPostgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port, certificate_authority = serve_webhooks_over_tls(tmp_path / "webhook", monkeypatch)
    monkeypatch.setenv("PAYBILL_WEBHOOK_HOST", "127.0.0.1")  # the operator registers https://HOST:PORT itself
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    monkeypatch.setenv("PAYBILL_DATABASE_URL", postgres.dsn)
    monkeypatch.setenv("PAYBILL_BACKUP_DIR", str(tmp_path / "backups"))
    monkeypatch.setenv("PAYBILL_STATE_DIR", str(tmp_path / "state"))
    with KopfRunner(["run", "--all-namespaces", "--standalone", "-m", "paybill.handlers"], timeout=90) as runner:
        _, namespace = tenant_with_policy(cluster)
        found = cluster.kube.get("admissionregistration.k8s.io/v1", "validatingwebhookconfigurations", CONFIGURATION)
        (hook,) = found["webhooks"]
        assert hook["clientConfig"]["url"] == f"https://127.0.0.1:{port}/admission/{VALIDATE_ID}"
        assert base64.b64decode(hook["clientConfig"]["caBundle"]) == certificate_authority
        agent = kubectl_as(cluster.service_account_kubeconfig(namespace, AGENT), tmp_path)
        assert agent("apply", "-f", "-", stdin=workflow(namespace, "over-tls", [READ])).returncode == 0
        refused = agent("apply", "-f", "-", stdin=workflow(namespace, "hostile", HOSTILE))
        assert refused.returncode != 0 and "step wipe: no_allow_rule" in refused.stderr
    assert runner.exit_code == 0, runner.output


def test_with_the_webhook_stopped_nothing_is_admitted(
    cluster: Any, postgres: LocalPostgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    monkeypatch.setenv("PAYBILL_DATABASE_URL", postgres.dsn)
    monkeypatch.setenv("PAYBILL_BACKUP_DIR", str(tmp_path / "backups"))
    monkeypatch.setenv("PAYBILL_STATE_DIR", str(tmp_path / "state"))
    with KopfRunner(["run", "--all-namespaces", "--standalone", "-m", "paybill.handlers"], timeout=90) as runner:
        _, namespace = tenant_with_policy(cluster)
        agent = kubectl_as(cluster.service_account_kubeconfig(namespace, AGENT), tmp_path)
        assert agent("apply", "-f", "-", stdin=workflow(namespace, "before", [READ])).returncode == 0
    assert runner.exit_code == 0, runner.output
    after = agent("apply", "-f", "-", stdin=workflow(namespace, "after", [READ]))
    assert after.returncode != 0
    assert f'failed calling webhook "{webhook_name(STAMP_ID)}"' in after.stderr
    assert cluster.kube.get(API, "agentworkflows", "after", namespace) is None


def acme_with_policy(kube: Any, phase: str) -> AgentWorkflowSpec:
    """Tenant acme (pooled, read-only) with namespace tenant-acme, a namespace `squat` that only claims it by label,
    and AgentPolicy support in phase `phase`; returns a workflow spec naming that policy."""
    kube.apply(
        {"apiVersion": API, "kind": "Plan", "metadata": {"name": "p"}, "spec": {"tier": "p", "isolation": "pooled"}}
    )
    tenant = kube.create({"apiVersion": API, "kind": "Tenant", "metadata": {"name": "acme"}, "spec": {"planRef": "p"}})
    placement = {"isolation": "pooled", "database": "paybill_pooled", "schema": "app", "role": "r"}
    kube.merge_patch(
        API, "tenants", "acme", {"status": {"access": "read_only", "database": placement}}, subresource="status"
    )
    owner = {"apiVersion": API, "kind": "Tenant", "name": "acme", "uid": tenant["metadata"]["uid"], "controller": True}
    meta = {"name": "tenant-acme", "labels": {"paybill.dev/tenant": "acme"}, "ownerReferences": [owner]}
    kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": meta})
    kube.create(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": "squat", "labels": {"paybill.dev/tenant": "acme"}},
        }
    )
    kube.create(
        {
            "apiVersion": API,
            "kind": "AgentPolicy",
            "metadata": {"name": "support", "namespace": "tenant-acme"},
            "spec": {"subjects": [{"serviceAccount": AGENT, "agent": "agent:support-bot"}], "rules": []},
        }
    )
    kube.merge_patch(API, "agentpolicies", "support", {"status": {"phase": phase}}, "tenant-acme", subresource="status")
    return AgentWorkflowSpec.model_validate(yaml.safe_load(workflow("tenant-acme", "x", [READ]))["spec"])


def test_a_standby_replica_reads_the_world_from_the_api_server(cluster: Any) -> None:
    """Under leader election kopf pauses a standby's watches, so its indexes are stale: its webhook reads the same
    facts from the API server (read_world) through the same entry functions."""
    kube = cluster.kube
    spec = acme_with_policy(kube, "Ready")
    world, _, _ = observe("tenant-acme", spec, read_world(kube, "tenant-acme"))
    assert world.tenancy is not None and (world.tenancy.tenant, world.tenancy.access) == ("acme", Access.READ_ONLY)
    assert world.tenancy.plan is not None and world.policy is not None and world.policy.status.phase == "Ready"
    assert world.agents == frozenset({AGENT})
    squatted, _, _ = observe("squat", spec, read_world(kube, "squat"))  # the label alone names no tenant
    assert squatted.tenancy is None
    assert observe("nowhere", spec, read_world(kube, "nowhere"))[0].tenancy is None


def test_a_refusal_on_the_indexes_is_decided_again_on_the_api_servers_view(cluster: Any) -> None:
    """A fresh clone's run saw a workflow refused ("agentpolicy/support is Pending, not Ready") right after the
    policy's Ready status was written: kopf's indexes follow the watch a moment behind. A refusal is decided again on
    what the API server says now; what it still refuses stays refused."""
    kube = cluster.kube
    spec = acme_with_policy(kube, "Pending")
    stale = read_world(kube, "tenant-acme")  # what the indexes held before the status write reached them
    body = {"metadata": {"name": "x", "namespace": "tenant-acme"}, "spec": spec.model_dump(mode="json")}
    userinfo = {"username": f"system:serviceaccount:tenant-acme:{AGENT}"}

    memo = kopf.Memo(kube=kube, admission_engines=EngineCache(), databases=None)

    def verdict() -> Any:
        return asyncio.run(reviewed("CREATE", body, None, userinfo, memo, stale, ""))

    pending = verdict()
    assert not pending.allowed and "agentpolicy/support is Pending, not Ready" in pending.message, pending
    status = {"phase": "Ready", "observedGeneration": 1, "access": "read_only"}
    kube.merge_patch(API, "agentpolicies", "support", {"status": status}, "tenant-acme", subresource="status")
    ready = verdict()  # past the policy's phase, to the engine, which this operator without a database cannot build
    assert not ready.allowed and ready.message.endswith("no tenant database configured"), ready
