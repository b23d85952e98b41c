"""Real kubectl against the emulated API server: the contract a person at a terminal relies on."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = [
    pytest.mark.kubectl,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed"),
]


@pytest.fixture
def kubectl(cluster: Any, tmp_path: Path) -> Any:
    env = {"KUBECONFIG": str(cluster.kubeconfig), "PATH": "/usr/bin:/bin:/usr/local/bin", "HOME": str(tmp_path)}

    def run(*args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(["kubectl", *args], env=env, input=stdin, capture_output=True, text=True, timeout=60)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr}")
        return result

    return run


def test_apply_crds_and_samples_then_get_with_printer_columns(kubectl: Any) -> None:
    applied = kubectl("apply", "-f", str(REPO / "crds"), "-f", str(REPO / "manifests" / "samples"))
    assert "tenant.paybill.dev/acme created" in applied.stdout
    again = kubectl("apply", "-f", str(REPO / "manifests" / "samples"))
    assert "tenant.paybill.dev/acme unchanged" in again.stdout
    table = kubectl("get", "tenants").stdout.splitlines()
    assert table[0].split() == ["NAME", "PLAN", "ISOLATION", "PHASE", "READY", "AGE"]
    assert table[1].split()[:2] == ["acme", "pro"]
    assert "plan.paybill.dev/enterprise" in kubectl("get", "paybill").stdout
    assert kubectl("get", "tn", "acme", "-o", "jsonpath={.spec.deletionPolicy}").stdout == "snapshot"


def test_explain_documents_the_spec(kubectl: Any) -> None:
    kubectl("apply", "-f", str(REPO / "crds"))
    explained = kubectl("explain", "tenant.spec").stdout
    assert "planRef" in explained and "Name of the Plan the tenant is on." in explained
    assert "retain, snapshot, destroy" in explained or "enum" in explained


def test_an_invalid_tenant_is_refused_naming_the_field(kubectl: Any) -> None:
    kubectl("apply", "-f", str(REPO / "crds"))
    bad = "apiVersion: paybill.dev/v1alpha1\nkind: Tenant\nmetadata: {name: bad}\nspec: {planRef: Not_Valid}\n"
    refused = kubectl("apply", "-f", "-", stdin=bad, check=False)
    assert refused.returncode != 0
    assert "spec.planRef" in refused.stderr and "is invalid" in refused.stderr
    unknown = "apiVersion: paybill.dev/v1alpha1\nkind: Tenant\nmetadata: {name: u}\nspec: {planRef: pro, x: 1}\n"
    strict = kubectl("apply", "-f", "-", stdin=unknown, check=False)
    assert strict.returncode != 0 and 'unknown field "spec.x"' in strict.stderr


def test_delete_is_held_by_a_finalizer(kubectl: Any) -> None:
    kubectl("apply", "-f", str(REPO / "crds"))
    held = (
        "apiVersion: paybill.dev/v1alpha1\nkind: Tenant\nmetadata: {name: held, finalizers: [paybill.dev/x]}\n"
        "spec: {planRef: pro}\n"
    )
    kubectl("apply", "-f", "-", stdin=held)
    kubectl("delete", "tenant", "held", "--wait=false")
    assert kubectl("get", "tenant", "held", "-o", "jsonpath={.metadata.deletionTimestamp}").stdout
    kubectl("patch", "tenant", "held", "--type=merge", "-p", '{"metadata":{"finalizers":null}}')
    gone = kubectl("get", "tenant", "held", check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr


def test_server_dry_run_delete_deletes_nothing(kubectl: Any) -> None:
    kubectl("apply", "-f", str(REPO / "crds"), "-f", str(REPO / "manifests" / "samples"))
    kubectl("create", "namespace", "team-x")
    kubectl("create", "configmap", "settings", "-n", "team-x", "--from-literal=k=v")
    for target in (["tenant", "globex"], ["namespace", "team-x"], ["configmap", "settings", "-n", "team-x"]):
        assert "(server dry run)" in kubectl("delete", *target, "--dry-run=server").stdout
    assert kubectl("get", "tenant", "globex", "-o", "name").stdout.strip() == "tenant.paybill.dev/globex"
    assert kubectl("get", "namespace", "team-x", "-o", "jsonpath={.status.phase}").stdout == "Active"
    assert kubectl("get", "configmap", "settings", "-n", "team-x", "-o", "jsonpath={.data.k}").stdout == "v"
    kubectl("delete", "--raw", "/apis/paybill.dev/v1alpha1/tenants?dryRun=All")
    kubectl("delete", "--raw", "/api/v1/namespaces/team-x/configmaps?dryRun=All")
    assert len(kubectl("get", "tenants", "-o", "name").stdout.split()) == 4
    assert kubectl("get", "configmaps", "-n", "team-x", "-o", "name").stdout.split() == ["configmap/settings"]
    assert "deleted" in kubectl("delete", "tenant", "globex").stdout
    assert kubectl("get", "tenant", "globex", check=False).returncode != 0


@pytest.mark.parametrize("namespace", ["default", "kube-system", "kube-public", "kube-node-lease"])
def test_system_namespaces_cannot_be_deleted(kubectl: Any, namespace: str) -> None:
    if kubectl("get", "namespace", namespace, check=False).returncode != 0:
        kubectl("create", "namespace", namespace)
    for dry_run in ([], ["--dry-run=server"]):
        refused = kubectl("delete", "namespace", namespace, *dry_run, check=False)
        assert refused.returncode != 0
        assert (
            f'Error from server (Forbidden): namespaces "{namespace}" is forbidden: this namespace may not be deleted'
        ) in refused.stderr
    assert kubectl("get", "namespace", namespace, "-o", "jsonpath={.status.phase}").stdout == "Active"


def _headers(columns: list[dict[str, Any]], wide: bool) -> list[str]:
    shown = [c["name"] for c in columns if wide or not c.get("priority")]
    return ["NAME", *(name.upper() for name in shown)]


def test_get_by_name_sort_by_and_wide_keep_the_printer_columns(kubectl: Any) -> None:
    kubectl("apply", "-f", str(REPO / "crds"), "-f", str(REPO / "manifests" / "samples"))
    one = kubectl("get", "tenant", "acme").stdout.splitlines()
    assert one[0].split() == ["NAME", "PLAN", "ISOLATION", "PHASE", "READY", "AGE"]
    assert len(one) == 2 and one[1].split()[:2] == ["acme", "pro"]
    by_plan = kubectl("get", "tenants", "--sort-by=.spec.planRef").stdout.splitlines()
    assert by_plan[0].split()[:2] == ["NAME", "PLAN"]
    assert [row.split()[:2] for row in by_plan[1:]] == [
        ["umbrella", "enterprise"],
        ["globex", "free"],
        ["acme", "pro"],
        ["initech", "team"],
    ]

    kubectl("create", "namespace", "tenant-acme")
    kubectl("apply", "-f", str(REPO / "manifests" / "samples" / "agents" / "support-policy.yaml"))
    crd = json.loads(kubectl("get", "crd", "agentpolicies.paybill.dev", "-o", "json").stdout)
    columns = crd["spec"]["versions"][0]["additionalPrinterColumns"]
    assert any(c.get("priority") for c in columns)
    for wide in (False, True):
        shown = kubectl("get", "agentpolicy", "support", "-n", "tenant-acme", *(["-o", "wide"] if wide else []))
        assert shown.stdout.splitlines()[0].split() == _headers(columns, wide)
        assert shown.stdout.splitlines()[1].split()[:2] == ["support", "enforce"]


def _event(
    name: str,
    involved: dict[str, str],
    event_type: str,
    reason: str,
    message: str,
    component: str = "paybill",
    namespace: str = "default",
) -> str:
    """An Event as kopf posts one (core/v1, firstTimestamp/lastTimestamp/eventTime, source and reporting*)."""
    stamp = "2026-01-01T00:00:00.000000+00:00"
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "type": event_type,
            "reason": reason,
            "message": message,
            "action": "Action?",
            "reportingComponent": component,
            "reportingInstance": "dev",
            "source": {"component": component},
            "involvedObject": involved,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "eventTime": stamp,
        }
    )


def test_events_print_their_columns_and_select_by_field(kubectl: Any) -> None:
    kubectl("apply", "-f", str(REPO / "crds"), "-f", str(REPO / "manifests" / "samples"))
    tenants = json.loads(kubectl("get", "tenants", "-o", "json").stdout)["items"]
    ref = {
        t["metadata"]["name"]: {
            "apiVersion": "paybill.dev/v1alpha1",
            "kind": "Tenant",
            "name": t["metadata"]["name"],
            "uid": t["metadata"]["uid"],
        }
        for t in tenants
    }
    # kopf names the namespace it posts a cluster-scoped object's Event in; client-go's recorder leaves it empty
    kubectl(
        "create",
        "-f",
        "-",
        stdin=_event(
            "acme.1",
            {**ref["acme"], "namespace": "default"},
            "Normal",
            "NamespaceCreated",
            "namespace tenant-acme created",
        ),
    )
    kubectl(
        "create",
        "-f",
        "-",
        stdin=_event("acme.2", ref["acme"], "Warning", "PlanNotFound", "plan pro not found", component="other"),
    )
    kubectl("create", "-f", "-", stdin=_event("globex.1", ref["globex"], "Normal", "Active", "tenant is active"))
    stray_event = _event("stray", ref["acme"], "Normal", "R", "m", namespace="kube-public")
    stray = kubectl("create", "-f", "-", stdin=stray_event, check=False)
    assert stray.returncode != 0
    assert 'involvedObject.namespace: Invalid value: "": does not match event.namespace' in stray.stderr

    listed = kubectl("get", "events").stdout.splitlines()
    assert listed[0].split() == ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    assert any(row.split()[1:5] == ["Warning", "PlanNotFound", "tenant/acme", "plan"] for row in listed[1:])
    wide = kubectl("get", "events", "-o", "wide").stdout.splitlines()
    assert wide[0].split() == [
        "LAST",
        "SEEN",
        "TYPE",
        "REASON",
        "OBJECT",
        "SUBOBJECT",
        "SOURCE",
        "MESSAGE",
        "FIRST",
        "SEEN",
        "COUNT",
        "NAME",
    ]
    assert any(row.split()[-2:] == ["1", "globex.1"] and "paybill, dev" in row for row in wide[1:])

    def names(*selector: str) -> list[str]:
        found = kubectl("get", "events", "-A", "-o", "name", "--field-selector", ",".join(selector)).stdout
        return sorted(name.removeprefix("event/") for name in found.split())

    acme_uid = ref["acme"]["uid"]
    assert names("involvedObject.kind=Tenant", "involvedObject.name=acme") == ["acme.1", "acme.2"]
    assert names(f"involvedObject.uid={acme_uid}", "involvedObject.namespace=") == ["acme.2"]
    assert names("involvedObject.apiVersion=paybill.dev/v1alpha1", "type=Normal") == ["acme.1", "globex.1"]
    assert names("reason=PlanNotFound") == ["acme.2"]
    assert names("source=other") == ["acme.2"] and names("reportingComponent!=other") == ["acme.1", "globex.1"]
    assert names(
        "involvedObject.resourceVersion=",
        "involvedObject.fieldPath=",
        "metadata.name=globex.1",
        "metadata.namespace=default",
    ) == ["globex.1"]
    newer = kubectl("get", "events.events.k8s.io", "--field-selector", "regarding.name=acme", "-o", "name").stdout
    assert sorted(newer.split()) == ["event.events.k8s.io/acme.1", "event.events.k8s.io/acme.2"]
    refused = kubectl("get", "events", "--field-selector", "involvedObject.color=red", check=False)
    assert refused.returncode != 0 and "field label not supported: involvedObject.color" in refused.stderr

    for_acme = kubectl("events", "--for", "tenant/acme").stdout
    assert "NamespaceCreated" in for_acme and "PlanNotFound" in for_acme and "globex" not in for_acme
    warnings = kubectl("events", "-A", "--types=Warning").stdout
    assert "PlanNotFound" in warnings and "NamespaceCreated" not in warnings and "Active" not in warnings
    described = kubectl("describe", "tenant", "acme").stdout
    events_section = described[described.index("Events:") :]
    assert "Warning  PlanNotFound" in events_section and "plan pro not found" in events_section
    assert "tenant is active" not in events_section


def test_the_operators_events_reach_kubectl(operator: Any, kubectl: Any) -> None:
    kubectl("apply", "-f", str(REPO / "manifests" / "samples" / "plans.yaml"))
    kubectl(
        "apply",
        "-f",
        "-",
        stdin="apiVersion: paybill.dev/v1alpha1\nkind: Tenant\nmetadata: {name: acme}\nspec: {planRef: pro}\n",
    )
    operator.eventually(lambda: "NamespaceCreated" in kubectl("events", "--for", "tenant/acme").stdout, timeout=60)
    listed = kubectl("get", "events", "--field-selector", "involvedObject.name=acme,reason=NamespaceCreated")
    assert listed.stdout.splitlines()[0].split() == ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    assert "tenant/acme" in listed.stdout and "namespace tenant-acme created" in listed.stdout
    described = kubectl("describe", "tenant", "acme").stdout.split("Events:")[-1]  # a cluster-scoped object's
    assert "NamespaceCreated" in described and "paybill-operator" in described
    kubectl("apply", "-f", str(REPO / "manifests" / "samples" / "agents" / "support-policy.yaml"))

    def policy_events() -> str:
        return kubectl("describe", "agentpolicy", "support", "-n", "tenant-acme").stdout.split("Events:")[-1]

    operator.eventually(lambda: "<none>" not in policy_events(), timeout=60)
    assert {"Type", "Reason", "Age", "From", "Message"} <= set(policy_events().split())
    assert "paybill-operator" in policy_events()
