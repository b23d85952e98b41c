"""The operator runs under the chart's own ClusterRole, through its ServiceAccount's token, and that role is
both enough (tenants go Active, agent workflows run, a suspension works, a tenant offboards, drift is
reverted, and the API server denied the operator nothing) and least (every verb the chart grants on every
resource was used: a grant nobody needs fails the test)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml
from kopf.testing import KopfRunner

from chart.rendering import template
from chart.webhooks import register_on_loopback, serve_webhooks_over_tls
from paybill.kube import write_kubeconfig, write_service_account_kubeconfig
from paybill.kube.rbac import Attributes
from paybill.kubeclient import Kube, KubeError
from paybill.lifecycle.conditions import is_true
from paybill.workflows.approvals import APPROVE_PREFIX, APPROVER_ROLE

REPO = Path(__file__).resolve().parents[1]
API = "paybill.dev/v1alpha1"
RELEASE, NAMESPACE = "paybill", "paybill-system"
OPERATOR = f"system:serviceaccount:{NAMESPACE}:{RELEASE}-operator"
MANAGED_BY = "app.kubernetes.io/managed-by"
DRIFTED = (
    ("v1", "namespaces", "tenant-acme"),
    ("v1", "serviceaccounts", "tenant-admin"),
    ("v1", "resourcequotas", "paybill-quota"),
    ("v1", "limitranges", "paybill-limits"),
    ("rbac.authorization.k8s.io/v1", "roles", "tenant-admin"),
    ("rbac.authorization.k8s.io/v1", "rolebindings", "tenant-admin"),
    ("networking.k8s.io/v1", "networkpolicies", "paybill-default-deny"),
)
pytestmark = pytest.mark.slow


def chart_rbac() -> list[dict[str, Any]]:
    """The operator's ServiceAccount, roles and bindings, as the real helm renders the chart for release `paybill`
    in `paybill-system` (charts/paybill/templates/rbac.yaml; the roles for people are in rbac-users.yaml)."""
    shown = ("--show-only", "templates/serviceaccount.yaml", "--show-only", "templates/rbac.yaml")
    return template(None, *shown, release=RELEASE, namespace=NAMESPACE)


def chart_rules() -> list[dict[str, Any]]:
    """The ClusterRole's rules and the Role's (in the release's namespace: the audit checkpoint)."""
    return [rule for doc in chart_rbac() if doc["kind"] in ("ClusterRole", "Role") for rule in doc["rules"]]


def grants(rule: dict[str, Any]) -> Iterator[tuple[str, str, str, str]]:
    """(verb, group, resource, name) for each grant of a rule ('' name: any)."""
    for group in rule.get("apiGroups") or []:
        for resource in rule.get("resources") or []:
            for verb in rule.get("verbs") or []:
                for name in rule.get("resourceNames") or [""]:
                    yield verb, group, resource, name


def used(grant: tuple[str, str, str, str], attributes: Attributes) -> bool:
    verb, group, resource, name = grant
    return (attributes.verb, attributes.api_group, attributes.combined_resource) == (verb, group, resource) and (
        not name or attributes.name == name
    )


@pytest.fixture
def chart_operator(cluster: Any, postgres: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The real operator (kopf in this process) authenticated as the chart's ServiceAccount."""
    kube = cluster.kube
    kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    for doc in chart_rbac():
        kube.apply(doc)
    crds = template(None, "--show-only", "templates/crds.yaml", release=RELEASE, namespace=NAMESPACE)
    for crd in crds:
        if crd["spec"]["group"] == "kopf.dev":  # leader election's peering object (the chart installs it)
            kube.apply(crd)
    kubeconfig = write_service_account_kubeconfig(
        cluster.kubeconfig, NAMESPACE, f"{RELEASE}-operator", tmp_path / "operator.kubeconfig"
    )
    # the chart registers the admission webhooks, the operator only serves them (HTTPS, here on loopback)
    port, certificate_authority = serve_webhooks_over_tls(tmp_path / "webhook", monkeypatch)
    webhooks = template(None, "--show-only", "templates/webhook.yaml", release=RELEASE, namespace=NAMESPACE)
    register_on_loopback(kube, webhooks, port, certificate_authority)
    cluster.api.access.recorder = []
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.setenv("PAYBILL_DATABASE_URL", postgres.dsn)
    monkeypatch.setenv("PAYBILL_BACKUP_DIR", str(tmp_path / "backups"))
    monkeypatch.setenv("PAYBILL_OPERATOR_NAMESPACE", NAMESPACE)  # as the chart sets it: the audit checkpoint's home
    monkeypatch.setenv("PAYBILL_PEERING", f"{RELEASE}-operator")  # as the chart sets it: leader election
    monkeypatch.setenv("POD_ID", f"{RELEASE}-operator-0")  # the Pod's name: kopf's and the election's identity
    with KopfRunner(["run", "--all-namespaces", "-m", "paybill.handlers"], timeout=120) as runner:
        yield cluster
    assert runner.exit_code == 0, runner.output


def _status(cluster: Any, plural: str, name: str, namespace: str | None = None) -> dict[str, Any]:
    return (cluster.kube.get(API, plural, name, namespace) or {}).get("status") or {}


def _phase(cluster: Any, name: str, phase: str) -> dict[str, Any] | None:
    status = _status(cluster, "tenants", name)
    return (
        status
        if status.get("phase") == phase and is_true(status.get("conditions", []), "Ready") == (phase == "Active")
        else None
    )


def _docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def test_the_chart_role_is_enough_and_least_for_the_operator(chart_operator: Any) -> None:
    try:
        exercise(chart_operator)
    finally:  # a refusal explains a timeout above: say it first
        denied = [
            message for attributes, message in chart_operator.api.access.denied if attributes.user.username == OPERATOR
        ]
        assert denied == [], "the chart's ClusterRole is not enough:\n" + "\n".join(sorted(set(denied)))
    recorded = list(chart_operator.api.access.recorder or [])
    allowed = [
        attributes for attributes, decision in recorded if attributes.user.username == OPERATOR and decision.allowed
    ]
    assert allowed, "the operator's requests were not made as its ServiceAccount"
    unused = [
        grant
        for rule in chart_rules()
        for grant in grants(rule)
        if not any(used(grant, attributes) for attributes in allowed)
    ]
    assert unused == [], "the chart grants what the operator never used (verb, group, resource, name):\n" + "\n".join(
        map(str, unused)
    )


def exercise(cluster: Any) -> None:
    """Everything the operator does: onboarding, agent policies and workflows, suspension, drift and loss
    repair, policy deletion, offboarding."""
    kube = cluster.kube
    samples = REPO / "manifests" / "samples"
    for path in sorted(samples.glob("*.yaml")):
        for doc in _docs(path):
            kube.apply(doc)
    for name in ("acme", "globex", "initech"):
        cluster.eventually(lambda n=name: _phase(cluster, n, "Active"), timeout=60)

    # agent workflows: the policy installs, one workflow runs, one is stopped by the policy; workflows are submitted
    # by the agent's ServiceAccount (the admission webhook refuses anyone else)
    for doc in _docs(samples / "agents" / "support-policy.yaml"):
        kube.apply(doc)
    cluster.eventually(
        lambda: _status(cluster, "agentpolicies", "support", "tenant-acme").get("phase") == "Ready", timeout=60
    )
    agent = Kube(
        kubernetes.config.new_client_from_config(
            config_file=str(
                write_service_account_kubeconfig(
                    cluster.kubeconfig, "tenant-acme", "tenant-agent", cluster.kubeconfig.parent / "agent.kubeconfig"
                )
            )
        )
    )
    workflows = {doc["metadata"]["name"]: doc for doc in _docs(samples / "agents" / "workflows.yaml")}
    agent.create(workflows["refund-order-13"])
    with pytest.raises(KubeError) as refused:  # the policy refuses it at admission, before it is stored
        agent.create(workflows["tidy-up"])
    assert refused.value.status == 403 and "denied_by_rule" in refused.value.message
    cluster.eventually(
        lambda: _status(cluster, "agentworkflows", "refund-order-13", "tenant-acme").get("phase") == "Succeeded",
        timeout=60,
    )
    approve(cluster, agent)

    # a suspension and its reversal
    kube.merge_patch(API, "tenants", "globex", {"spec": {"suspended": True}})
    cluster.eventually(lambda: _phase(cluster, "globex", "Suspended"), timeout=60)
    kube.merge_patch(API, "tenants", "globex", {"spec": {"suspended": False}})
    cluster.eventually(lambda: _phase(cluster, "globex", "Active"), timeout=60)

    # drift on every kind the operator owns is reverted (an update of each), a lost object comes back
    for api_version, plural, name in DRIFTED:
        kube.merge_patch(
            api_version,
            plural,
            name,
            {"metadata": {"labels": {MANAGED_BY: "by-hand"}}},
            None if plural == "namespaces" else "tenant-acme",
        )
    for api_version, plural, name in DRIFTED:
        cluster.eventually(
            lambda a=api_version, p=plural, n=name: (
                kube.get(a, p, n, None if p == "namespaces" else "tenant-acme")["metadata"]["labels"][MANAGED_BY]
                == "paybill"
            ),
            timeout=60,
        )
    kube.delete("v1", "limitranges", "paybill-limits", "tenant-acme")
    cluster.eventually(lambda: kube.get("v1", "limitranges", "paybill-limits", "tenant-acme"), timeout=60)

    # an AgentPolicy's deletion takes its login Secret; offboarding takes the tenant's namespace
    kube.delete(API, "agentpolicies", "support", "tenant-acme")
    cluster.eventually(lambda: kube.get(API, "agentpolicies", "support", "tenant-acme") is None, timeout=60)
    assert kube.get("v1", "secrets", "agent-support", "tenant-acme") is None
    kube.delete(API, "tenants", "initech")
    cluster.eventually(lambda: kube.get(API, "tenants", "initech") is None, timeout=60)
    assert kube.get("v1", "namespaces", "tenant-initech") is None


def approve(cluster: Any, agent: Kube) -> None:
    """A step that needs alice's approval runs once she, holding the chart's approver ClusterRole in the tenant's
    namespace, approves its plan hash (the webhook asks the API server whether she may: a SubjectAccessReview)."""
    kube = cluster.kube
    [policy] = _docs(REPO / "manifests" / "samples" / "agents" / "support-policy.yaml")
    for rule in policy["spec"]["rules"]:
        if rule["id"] == "fix-status":
            rule["approval"] = {"approvers": ["user:alice"], "minApprovals": 1}
    kube.apply(policy)

    def installed() -> bool:
        found = kube.get(API, "agentpolicies", "support", "tenant-acme") or {}
        status = found.get("status") or {}
        return status.get("phase") == "Ready" and status.get("observedGeneration") == found["metadata"]["generation"]

    cluster.eventually(installed, timeout=60)
    users = template(None, "--show-only", "templates/rbac-users.yaml", release=RELEASE, namespace=NAMESPACE)
    kube.apply(next(doc for doc in users if doc["metadata"]["name"] == APPROVER_ROLE))
    kube.apply(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "approver-alice", "namespace": "tenant-acme"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": APPROVER_ROLE},
            "subjects": [{"kind": "User", "name": "alice", "apiGroup": "rbac.authorization.k8s.io"}],
        }
    )
    token = cluster.api.access.tokens.add_user("alice")
    alice_config = write_kubeconfig(
        cluster.kubeconfig.parent / "alice.kubeconfig",
        cluster.url,
        cluster.api.access.certificate.certificate_authority,
        token,
    )
    alice = Kube(kubernetes.config.new_client_from_config(config_file=str(alice_config)))
    step = {
        "name": "refund",
        "kind": "mutation",
        "sql": "UPDATE orders SET status = 'refunded' WHERE id = $1",
        "params": [13],
    }
    agent.create(
        {
            "apiVersion": API,
            "kind": "AgentWorkflow",
            "metadata": {"name": "refund-approved", "namespace": "tenant-acme"},
            "spec": {"principal": "agent:support-bot", "policyRef": "support", "steps": [step]},
        }
    )
    waiting = cluster.eventually(
        lambda: (
            lambda s: s if s.get("phase") == "AwaitingApproval" and (s.get("approval") or {}).get("planHash") else None
        )(_status(cluster, "agentworkflows", "refund-approved", "tenant-acme")),
        timeout=60,
    )
    annotation = {APPROVE_PREFIX + "refund": waiting["approval"]["planHash"]}
    alice.merge_patch(
        API, "agentworkflows", "refund-approved", {"metadata": {"annotations": annotation}}, "tenant-acme"
    )
    cluster.eventually(
        lambda: _status(cluster, "agentworkflows", "refund-approved", "tenant-acme").get("phase") == "Succeeded",
        timeout=60,
    )


def test_the_operator_token_cannot_reach_beyond_the_chart(cluster: Any, tmp_path: Path) -> None:
    """What a stolen operator token can do is what the chart says: no cluster-wide grants, no binding of roles
    other than the two tenant roles, no workloads, no ConfigMaps."""
    kube = cluster.kube
    kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    for doc in chart_rbac():
        kube.apply(doc)
    stolen = Kube(
        kubernetes.config.new_client_from_config(
            config_file=str(
                write_service_account_kubeconfig(
                    cluster.kubeconfig, NAMESPACE, f"{RELEASE}-operator", tmp_path / "operator.kubeconfig"
                )
            )
        )
    )
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "mine", "namespace": "kube-system"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
        "subjects": [{"kind": "ServiceAccount", "name": f"{RELEASE}-operator", "namespace": NAMESPACE}],
    }
    with pytest.raises(KubeError) as refused:
        stolen.create(binding)
    assert (
        refused.value.status == 403
        and f'rolebindings.rbac.authorization.k8s.io "mine" is forbidden: user "{OPERATOR}"' in refused.value.message
        and "is attempting to grant RBAC permissions not currently held" in refused.value.message
    )
    for verb, path in (
        ("POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings"),
        ("GET", "/api/v1/namespaces/kube-system/configmaps"),
        ("POST", "/api/v1/namespaces/kube-system/pods"),
        ("GET", "/apis/paybill.dev/v1alpha1/tenants/x/status"),
    ):
        with pytest.raises(KubeError) as denied:
            stolen.request(
                verb, path, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}} if verb == "POST" else None
            )
        assert denied.value.status == 403, (verb, path)
