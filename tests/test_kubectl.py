"""Real kubectl against the emulated API server: the contract a person at a terminal relies on."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.kubectl, pytest.mark.slow,
              pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")]


@pytest.fixture
def kubectl(cluster: Any, tmp_path: Path) -> Any:
    env = {"KUBECONFIG": str(cluster.kubeconfig), "PATH": "/usr/bin:/bin:/usr/local/bin", "HOME": str(tmp_path)}

    def run(*args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(["kubectl", *args], env=env, input=stdin, capture_output=True, text=True,
                                timeout=60)
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
    held = ("apiVersion: paybill.dev/v1alpha1\nkind: Tenant\nmetadata: {name: held, finalizers: [paybill.dev/x]}\n"
            "spec: {planRef: pro}\n")
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
        assert (f'Error from server (Forbidden): namespaces "{namespace}" is forbidden: '
                "this namespace may not be deleted") in refused.stderr
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
    assert [row.split()[:2] for row in by_plan[1:]] == [["umbrella", "enterprise"], ["globex", "free"],
                                                        ["acme", "pro"], ["initech", "team"]]

    kubectl("create", "namespace", "tenant-acme")
    kubectl("apply", "-f", str(REPO / "manifests" / "samples" / "agents" / "support-policy.yaml"))
    crd = json.loads(kubectl("get", "crd", "agentpolicies.paybill.dev", "-o", "json").stdout)
    columns = crd["spec"]["versions"][0]["additionalPrinterColumns"]
    assert any(c.get("priority") for c in columns)
    for wide in (False, True):
        shown = kubectl("get", "agentpolicy", "support", "-n", "tenant-acme", *(["-o", "wide"] if wide else []))
        assert shown.stdout.splitlines()[0].split() == _headers(columns, wide)
        assert shown.stdout.splitlines()[1].split()[:2] == ["support", "enforce"]

