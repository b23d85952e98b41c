"""A Tenant's namespace: only one it owns is ever deleted; system namespaces are refused at admission and in
the handler (issue 10, finding 8)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes
import pytest

from paybill.kube import write_service_account_kubeconfig
from paybill.kubeclient import Kube, KubeError
from paybill.lifecycle.tenant import (
    check_namespace,
    may_delete_namespace,
    namespace_manifest,
    protected_namespace,
    tenant_resources,
)

API = "paybill.dev/v1alpha1"
UID = "0f6c1c52-uid-of-the-tenant"


def namespace(
    name: str, labels: dict[str, str] | None = None, owners: list[dict[str, Any]] | None = None, **meta: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": labels or {}, "ownerReferences": owners or [], **meta},
    }


def owner(uid: str = UID, controller: bool = True, kind: str = "Tenant") -> dict[str, Any]:
    return {"apiVersion": API, "kind": kind, "name": "acme", "uid": uid, "controller": controller}


@pytest.mark.parametrize(
    "name", ["kube-system", "kube-public", "kube-node-lease", "kube-foo", "default", "paybill-operator"]
)
def test_system_and_operator_namespaces_are_protected(name: str) -> None:
    assert protected_namespace(name, operator_namespace="paybill-operator")


@pytest.mark.parametrize("name", ["tenant-acme", "precious", "kubernetes", "defaults"])
def test_ordinary_namespaces_are_not_protected(name: str) -> None:
    assert not protected_namespace(name, operator_namespace="paybill-operator")


def test_only_a_namespace_the_tenant_controls_may_be_deleted() -> None:
    assert may_delete_namespace(namespace("tenant-acme", owners=[owner()]), UID, "paybill")
    assert not may_delete_namespace(None, UID, "paybill")
    assert not may_delete_namespace(namespace("precious"), UID, "paybill")
    # the label is a name anyone can write: it proves nothing
    assert not may_delete_namespace(namespace("precious", labels={"paybill.dev/tenant": "acme"}), UID, "paybill")
    assert not may_delete_namespace(namespace("tenant-acme", owners=[owner(uid="other")]), UID, "paybill")
    assert not may_delete_namespace(namespace("tenant-acme", owners=[owner(controller=False)]), UID, "paybill")
    assert not may_delete_namespace(namespace("tenant-acme", owners=[owner(kind="Plan")]), UID, "paybill")
    assert not may_delete_namespace(namespace("kube-system", owners=[owner()]), UID, "paybill")
    assert not may_delete_namespace(namespace("paybill", owners=[owner()]), UID, "paybill")


def test_only_a_namespace_the_tenant_controls_is_adopted() -> None:
    assert check_namespace(None, "tenant-acme", UID, "paybill").reason == "Missing"
    assert check_namespace(namespace("tenant-acme", owners=[owner()]), "tenant-acme", UID, "paybill").ok
    labelled = namespace("tenant-acme", labels={"paybill.dev/tenant": "acme"})
    assert check_namespace(labelled, "tenant-acme", UID, "paybill").reason == "NamespaceConflict"
    assert check_namespace(None, "kube-system", UID, "paybill").reason == "NamespaceProtected"
    assert check_namespace(None, "paybill", UID, "paybill").reason == "NamespaceProtected"
    terminating = namespace("tenant-acme", owners=[owner()], deletionTimestamp="2026-01-01T00:00:00Z")
    assert check_namespace(terminating, "tenant-acme", UID, "paybill").reason == "NamespaceTerminating"


@pytest.mark.parametrize("name", ["kube-system", "default", "kube-foo"])
def test_system_namespaces_are_refused_at_admission(cluster: Any, name: str) -> None:
    with pytest.raises(KubeError) as refused:
        cluster.kube.create(
            {
                "apiVersion": API,
                "kind": "Tenant",
                "metadata": {"name": f"t-{name}"},
                "spec": {"planRef": "free", "namespace": name},
            }
        )
    assert refused.value.status == 422 and "system namespace" in refused.value.message
    assert cluster.kube.get(API, "tenants", f"t-{name}") is None
    cluster.kube.create(
        {
            "apiVersion": API,
            "kind": "Tenant",
            "metadata": {"name": "fine"},
            "spec": {"planRef": "free", "namespace": "kubernetes-apps"},
        }
    )


def _phase(cluster: Any, name: str) -> str | None:
    return ((cluster.kube.get(API, "tenants", name) or {}).get("status") or {}).get("phase")


@pytest.mark.slow
@pytest.mark.parametrize("how", ["delete", "offboard"])
def test_a_foreign_namespace_survives_the_tenant_aimed_at_it(operator: Any, how: str) -> None:
    kube = operator.kube
    kube.create(namespace("precious"))
    kube.create(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "crown-jewels", "namespace": "precious"},
            "data": {"keep": "me"},
        }
    )
    kube.apply(
        {
            "apiVersion": API,
            "kind": "Plan",
            "metadata": {"name": "free"},
            "spec": {"tier": "free", "isolation": "pooled"},
        }
    )
    kube.apply(
        {
            "apiVersion": API,
            "kind": "Tenant",
            "metadata": {"name": "grabber"},
            "spec": {"planRef": "free", "namespace": "precious"},
        }
    )
    operator.eventually(lambda: _phase(operator, "grabber") == "Failed")
    if how == "delete":
        kube.delete(API, "tenants", "grabber")
        operator.eventually(lambda: kube.get(API, "tenants", "grabber") is None)
    else:
        kube.merge_patch(API, "tenants", "grabber", {"spec": {"offboard": True}})
        operator.eventually(lambda: _phase(operator, "grabber") == "Offboarded")
    survivor = kube.get("v1", "namespaces", "precious")
    assert survivor is not None and not survivor["metadata"].get("deletionTimestamp")
    assert kube.get("v1", "configmaps", "crown-jewels", "precious")["data"] == {"keep": "me"}
    events = [e for e in kube.list("v1", "events") if e["involvedObject"]["name"] == "grabber"]
    assert any(e["reason"] == "NamespaceKept" for e in events)


# --- least privilege in the tenant namespace (issue 11, item 12) ----------------------------------------------------

TENANT = {"apiVersion": API, "kind": "Tenant", "metadata": {"name": "acme", "uid": UID}, "spec": {"planRef": "free"}}
PLAN = {"metadata": {"name": "free"}, "spec": {"isolation": "pooled"}}
READ = ["get", "list", "watch"]
WRITE = ["get", "list", "watch", "create", "update", "patch", "delete"]


def _role(name: str) -> list[dict[str, Any]]:
    return next(r for r in tenant_resources(TENANT, PLAN) if r["kind"] == "Role" and r["metadata"]["name"] == name)[
        "rules"
    ]


def _grants(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_the_tenant_admin_role_names_every_resource_and_verb() -> None:
    """Pinned: a change to what a tenant admin may do is a change to this test."""
    assert _role("tenant-admin") == [
        {"apiGroups": [""], "resources": ["pods", "services", "configmaps", "persistentvolumeclaims"], "verbs": WRITE},
        {
            "apiGroups": [""],
            "resources": [
                "pods/log",
                "secrets",
                "serviceaccounts",
                "endpoints",
                "events",
                "resourcequotas",
                "limitranges",
            ],
            "verbs": READ,
        },
        {"apiGroups": ["apps"], "resources": ["deployments", "statefulsets"], "verbs": WRITE},
        {
            "apiGroups": ["apps"],
            "resources": ["deployments/scale", "statefulsets/scale"],
            "verbs": ["get", "update", "patch"],
        },
        {"apiGroups": ["apps"], "resources": ["replicasets"], "verbs": READ},
        {"apiGroups": ["batch"], "resources": ["jobs", "cronjobs"], "verbs": WRITE},
        {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": READ},
        {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles", "rolebindings"], "verbs": READ},
        {"apiGroups": ["paybill.dev"], "resources": ["agentpolicies", "agentworkflows"], "verbs": WRITE},
    ]
    assert _role("tenant-agent") == [
        {"apiGroups": ["paybill.dev"], "resources": ["agentworkflows"], "verbs": ["get", "list", "watch", "create"]},
        {"apiGroups": ["paybill.dev"], "resources": ["agentpolicies"], "verbs": READ},
    ]


@pytest.mark.parametrize("account", ["tenant-admin", "tenant-agent"])
def test_no_tenant_role_can_escalate_write_secrets_or_enter_pods(account: str) -> None:
    grants = _grants(_role(account))
    assert not any("*" in grant for grant in grants)
    assert not {verb for _, _, verb in grants} & {"escalate", "bind", "impersonate", "deletecollection", "*"}
    assert not {(g, r, v) for g, r, v in grants if r == "secrets" and v not in READ}
    assert not {r for _, r, _ in grants} & {
        "pods/exec",
        "pods/attach",
        "pods/portforward",
        "pods/proxy",
        "services/proxy",
        "nodes",
        "namespaces",
    }
    assert not {(g, r, v) for g, r, v in grants if g == "rbac.authorization.k8s.io" and v not in READ}
    assert not {
        (r, v)
        for _, r, v in grants
        if r in ("serviceaccounts", "serviceaccounts/token", "resourcequotas", "limitranges", "networkpolicies")
        and v not in READ
    }
    assert not {r for _, r, _ in grants if r.endswith("/status")}


def test_tenant_pods_run_under_the_restricted_pod_security_standard() -> None:
    labels = namespace_manifest(TENANT, PLAN)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def _as(cluster: Any, tmp_path: Path, namespace: str, account: str) -> Kube:
    kubeconfig = write_service_account_kubeconfig(cluster.kubeconfig, namespace, account, tmp_path / f"{account}.conf")
    return Kube(kubernetes.config.new_client_from_config(config_file=str(kubeconfig)))


def _refused(call: Any) -> int:
    try:
        call()
    except KubeError as exc:
        return exc.status
    return 200


def _admitted(call: Any) -> bool:
    """False while admission refuses because the operator has not seen the policy Ready yet; other errors raise."""
    try:
        call()
    except KubeError as exc:
        if exc.status == 403 and "not Ready" in str(exc):
            return False
        raise
    return True


@pytest.mark.slow
def test_a_tenant_admin_runs_workloads_but_cannot_escalate_write_secrets_or_exec(operator: Any, tmp_path: Path) -> None:
    """Through the emulated API server's RBAC, as the tenant's own ServiceAccounts."""
    kube = operator.kube
    kube.apply(
        {
            "apiVersion": API,
            "kind": "Plan",
            "metadata": {"name": "free"},
            "spec": {"tier": "free", "isolation": "pooled"},
        }
    )
    kube.apply({"apiVersion": API, "kind": "Tenant", "metadata": {"name": "acme"}, "spec": {"planRef": "free"}})
    operator.eventually(lambda: _phase(operator, "acme") == "Active", timeout=40)
    ns = "tenant-acme"
    admin, agent = _as(operator, tmp_path, ns, "tenant-admin"), _as(operator, tmp_path, ns, "tenant-agent")
    meta = {"namespace": ns}

    admin.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app", **meta}, "data": {"a": "1"}})
    admin.create(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "app", **meta},
            "spec": {
                "selector": {"matchLabels": {"app": "a"}},
                "template": {
                    "metadata": {"labels": {"app": "a"}},
                    "spec": {"containers": [{"name": "a", "image": "a"}]},
                },
            },
        }
    )
    assert admin.get("v1", "secrets", "paybill-database", ns) is not None  # its database login: readable
    admin.create(
        {
            "apiVersion": API,
            "kind": "AgentPolicy",
            "metadata": {"name": "p", **meta},
            "spec": {"subjects": [{"serviceAccount": "tenant-agent", "agent": "agent:bot"}], "rules": []},
        }
    )

    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "mine", **meta},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["*"]}],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "mine", **meta},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "tenant-admin"},
        "subjects": [{"kind": "User", "name": "mallory"}],
    }
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", **meta}}
    refused = {
        "create secret": lambda: admin.create(secret),
        "patch the credentials": lambda: admin.merge_patch("v1", "secrets", "paybill-database", {"data": {}}, ns),
        "create role": lambda: admin.create(role),
        "create rolebinding": lambda: admin.create(binding),
        "raise the quota": lambda: admin.merge_patch(
            "v1", "resourcequotas", "paybill-quota", {"spec": {"hard": {"limits.cpu": "100"}}}, ns
        ),
        "drop the network policy": lambda: admin.delete(
            "networking.k8s.io/v1", "networkpolicies", "paybill-default-deny", ns
        ),
        "exec into a pod": lambda: admin.request("POST", f"/api/v1/namespaces/{ns}/pods/app/exec"),
        "another namespace": lambda: admin.list("v1", "configmaps", "default"),
        "its own tenant": lambda: admin.merge_patch(API, "tenants", "acme", {"spec": {"suspended": True}}),
        "agent writes a policy": lambda: agent.merge_patch(API, "agentpolicies", "p", {"spec": {"rules": []}}, ns),
    }
    assert {what: _refused(call) for what, call in refused.items()} == {what: 403 for what in refused}
    # admission refuses a workflow under a policy the operator has not installed yet: wait for it, as an agent would
    policy_phase = lambda: (kube.get(API, "agentpolicies", "p", ns) or {}).get("status", {}).get("phase")  # noqa: E731
    operator.eventually(lambda: policy_phase() == "Ready")
    workflow = {
        "apiVersion": API,
        "kind": "AgentWorkflow",
        "metadata": {"name": "w", **meta},
        "spec": {
            "principal": "agent:bot",
            "policyRef": "p",
            "steps": [{"name": "read", "kind": "query", "sql": "SELECT 1"}],
        },
    }
    # the webhook reads the policy from the operator's watch, which may not have seen Ready yet: retry, as an agent
    operator.eventually(lambda: _admitted(lambda: agent.create(workflow)), timeout=30)
