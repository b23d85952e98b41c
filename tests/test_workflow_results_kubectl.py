"""A workflow's results through real kubectl, as the agent's ServiceAccount sees them: `kubectl wait
--for=condition=Complete` returns when the run ends, the agent reads its own results Secret and no other Secret of
the namespace, and the results are deleted once the operator's retention period is over."""

from __future__ import annotations

import base64
import datetime
import json
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from test_tenant_lifecycle import API, agent_policy, login, onboard, wait_phase, wait_policy

pytestmark = [
    pytest.mark.slow,
    pytest.mark.kubectl,
    pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed"),
]
AGENT = "tenant-agent"
RETENTION = 4  # seconds, in the short-retention test
Kubectl = Callable[..., subprocess.CompletedProcess[str]]
FIND = {"name": "find", "kind": "query", "sql": "SELECT id, status FROM orders WHERE status = $1", "params": ["open"]}


def kubectl_as(kubeconfig: Path, home: Path) -> Kubectl:
    env = {"KUBECONFIG": str(kubeconfig), "PATH": "/usr/bin:/bin:/usr/local/bin", "HOME": str(home)}

    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["kubectl", *args], env=env, input=stdin, capture_output=True, text=True, timeout=120)

    return run


def tenant_and_agent(cluster: Any, tmp_path: Path) -> tuple[str, Kubectl]:
    """An Active pooled tenant with one open order, the support policy Ready, and kubectl as its agent."""
    name = onboard(cluster, "pooled")
    namespace = f"tenant-{name}"
    wait_phase(cluster, name, "Active")
    with login(cluster, name) as conn:
        conn.execute("INSERT INTO customers (tenant_id, id, name) VALUES (%s, 1, 'c')", (name,))
        conn.execute(
            "INSERT INTO orders (tenant_id, id, customer_id, status, total) VALUES (%s, 1, 1, 'open', 5)", (name,)
        )
    cluster.kube.apply(agent_policy(namespace))
    wait_policy(cluster, namespace, "Ready")
    return namespace, kubectl_as(cluster.service_account_kubeconfig(namespace, AGENT), tmp_path)


def submit(agent: Kubectl, namespace: str, name: str) -> None:
    body = {
        "apiVersion": API,
        "kind": "AgentWorkflow",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"principal": "agent:support-bot", "policyRef": "support", "steps": [FIND]},
    }
    applied = agent("apply", "-f", "-", stdin=yaml.safe_dump(body))
    assert applied.returncode == 0, applied.stderr


def test_the_agent_waits_for_completion_and_reads_its_own_results_only(operator: Any, tmp_path: Path) -> None:
    namespace, agent = tenant_and_agent(operator, tmp_path)
    submit(agent, namespace, "lookup")
    waited = agent("wait", "--for=condition=Complete", "agentworkflow/lookup", "-n", namespace, "--timeout=90s")
    assert waited.returncode == 0, waited.stderr
    status = operator.kube.get(API, "agentworkflows", "lookup", namespace)["status"]
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions == {"Ready": "True", "Complete": "True", "Denied": "False", "Failed": "False"}

    secret = status["resultsSecret"]
    read = agent("get", "secret", secret, "-n", namespace, "-o", "jsonpath={.data.find\\.json}")
    assert read.returncode == 0, read.stderr
    assert json.loads(base64.b64decode(read.stdout))["rows"] == [[1, "open"]]
    for refused in (
        ("get", "secret", "paybill-database"),  # the tenant's credentials
        ("get", "secret", "agent-support"),  # its own login: the operator hands it to the run, never to the agent
        ("get", "secrets"),  # listing would show every Secret
        ("get", "configmaps"),
        ("delete", "secret", secret),  # reading is all it may do with its results
    ):
        answer = agent(*refused, "-n", namespace)
        assert answer.returncode != 0 and "forbidden" in answer.stderr.lower(), (refused, answer.stderr)
    assert agent("auth", "can-i", "get", "secrets", "-n", namespace).stdout.strip() == "no"
    assert agent("auth", "can-i", "get", f"secret/{secret}", "-n", namespace).stdout.strip() == "yes"
    assert agent("auth", "can-i", "patch", "agentworkflow/lookup", "-n", namespace).stdout.strip() == "no"

    # a second workflow's results are readable too, each by its own name
    submit(agent, namespace, "again")
    assert (
        agent("wait", "--for=condition=Complete", "agentworkflow/again", "-n", namespace, "--timeout=90s").returncode
        == 0
    )
    assert agent("get", "secret", "agentworkflow-again-results", "-n", namespace).returncode == 0


@pytest.fixture
def short_retention_operator(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Iterator[Any]:
    monkeypatch.setenv("PAYBILL_WORKFLOW_RESULTS_RETENTION", str(RETENTION))
    yield request.getfixturevalue("operator")


def test_results_are_deleted_when_their_retention_is_over(short_retention_operator: Any, tmp_path: Path) -> None:
    operator = short_retention_operator
    namespace, agent = tenant_and_agent(operator, tmp_path)
    submit(agent, namespace, "lookup")
    assert (
        agent("wait", "--for=condition=Complete", "agentworkflow/lookup", "-n", namespace, "--timeout=90s").returncode
        == 0
    )
    status = operator.kube.get(API, "agentworkflows", "lookup", namespace)["status"]
    finished = datetime.datetime.fromisoformat(
        next(c for c in status["conditions"] if c["type"] == "Complete")["lastTransitionTime"]
    )
    expire_at = datetime.datetime.fromisoformat(status["resultsExpireAt"])
    assert datetime.timedelta(0) <= expire_at - finished <= datetime.timedelta(seconds=RETENTION + 1)

    def deleted() -> dict[str, Any] | None:
        if operator.kube.get("v1", "secrets", "agentworkflow-lookup-results", namespace) is not None:
            return None
        current = operator.kube.get(API, "agentworkflows", "lookup", namespace)["status"]
        return current if "resultsSecret" not in current else None

    after = operator.eventually(deleted, timeout=60)
    assert after["phase"] == "Succeeded" and after["resultsExpireAt"] == status["resultsExpireAt"]

    def expired_events() -> list[dict[str, Any]] | None:  # posted after the Secret and status go (r18 race)
        found = [e for e in operator.kube.list("v1", "events", namespace) if e.get("reason") == "ResultsExpired"]
        return found or None

    reasons = operator.eventually(expired_events, timeout=30)
    assert len(reasons) == 1 and "retention period is over" in reasons[0]["message"]
    said = (
        reasons[0].get("eventTime") or reasons[0].get("firstTimestamp") or reasons[0]["metadata"]["creationTimestamp"]
    )
    assert datetime.datetime.fromisoformat(said.replace("Z", "+00:00")) >= expire_at.replace(microsecond=0)  # not early
