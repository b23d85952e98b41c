"""helm install / upgrade / uninstall into the emulated API server (authentication and RBAC on), with the real helm
3.17; then the operator runs here with the installed ServiceAccount's token and brings a Tenant to Active."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml
from kopf.testing import KopfRunner

from paybill.api.crdgen import all_crds
from paybill.kube import SYSTEM_NAMESPACES, serve_in_thread, write_admin_kubeconfig, write_service_account_kubeconfig
from paybill.kubeclient import Kube
from paybill.lifecycle.conditions import is_true

from .rendering import CHART, NAMESPACE, RELEASE, run_helm
from .webhooks import serve_webhooks_over_tls

pytestmark = pytest.mark.slow
API = "paybill.dev/v1alpha1"
OPERATOR = f"system:serviceaccount:{NAMESPACE}:{RELEASE}-operator"
SAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "samples"


class Bare:
    """An emulated API server as a new cluster is: no Paybill CRDs, no roles but the defaults."""

    def __init__(self, api: Any, kubeconfig: Path) -> None:
        self.api, self.kubeconfig = api, kubeconfig
        self.kube = Kube(kubernetes.config.new_client_from_config(config_file=str(kubeconfig)))


@pytest.fixture
def bare(tmp_path: Path) -> Iterator[Bare]:
    with serve_in_thread(seed=SYSTEM_NAMESPACES) as (api, url):
        yield Bare(api, write_admin_kubeconfig(tmp_path / "kubeconfig", url, api))


def wait_for(check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.2)


def older_chart(directory: Path) -> Path:
    """The chart as an earlier release shipped it: version 0.0.9, whose Tenant CRD lacked the Isolation column."""
    shutil.copytree(CHART, directory)
    chart = yaml.safe_load((directory / "Chart.yaml").read_text())
    (directory / "Chart.yaml").write_text(yaml.safe_dump({**chart, "version": "0.0.9"}))
    path = directory / "files" / "crds" / "tenants.paybill.dev.yaml"
    crd = yaml.safe_load(path.read_text())
    for version in crd["spec"]["versions"]:
        version["additionalPrinterColumns"] = [
            c for c in version["additionalPrinterColumns"] if c["name"] != "Isolation"
        ]
    path.write_text(yaml.safe_dump(crd))
    return directory


def columns(kube: Kube, name: str) -> list[str]:
    crd = kube.get("apiextensions.k8s.io/v1", "customresourcedefinitions", name) or {}
    return [c["name"] for c in crd["spec"]["versions"][0].get("additionalPrinterColumns") or []]


def helm(bare: Bare, *args: str) -> str:
    return run_helm(*args, "--namespace", NAMESPACE, kubeconfig=bare.kubeconfig).stdout


def active(kube: Kube, name: str) -> bool:
    status = (kube.get(API, "tenants", name) or {}).get("status") or {}
    return status.get("phase") == "Active" and is_true(status.get("conditions") or [], "Ready")


def test_helm_installs_upgrades_and_uninstalls_and_the_operator_runs_as_the_installed_account(
    bare: Bare, postgres: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kube = bare.kube
    # install an earlier release: the CRDs come with it
    notes = helm(bare, "install", RELEASE, str(older_chart(tmp_path / "old")), "--create-namespace")
    assert "STATUS: deployed" in notes and f"helm test {RELEASE} -n {NAMESPACE}" in notes
    generated = {crd["metadata"]["name"]: crd for crd in all_crds()}
    for name in generated:
        assert kube.get("apiextensions.k8s.io/v1", "customresourcedefinitions", name), name
    assert "Isolation" not in columns(kube, "tenants.paybill.dev")
    secret = kube.get("v1", "secrets", f"{RELEASE}-webhook-tls", NAMESPACE)
    assert secret and set(secret["data"]) == {"ca.crt", "tls.crt", "tls.key"}

    # upgrade to this chart: the CRDs are upgraded with it, the webhook's certificate is kept
    helm(bare, "upgrade", RELEASE, str(CHART), "--set", "replicaCount=3")
    for name, crd in generated.items():
        served = kube.get("apiextensions.k8s.io/v1", "customresourcedefinitions", name)
        assert served is not None
        expected = [(v["name"], v.get("additionalPrinterColumns"), v["schema"]) for v in crd["spec"]["versions"]]
        got = [(v["name"], v.get("additionalPrinterColumns"), v["schema"]) for v in served["spec"]["versions"]]
        assert got == expected, f"{name} was not upgraded"
    assert "Isolation" in columns(kube, "tenants.paybill.dev")
    kept = kube.get("v1", "secrets", f"{RELEASE}-webhook-tls", NAMESPACE)
    assert kept is not None and kept["data"] == secret["data"]
    for kind in ("validatingwebhookconfigurations", "mutatingwebhookconfigurations"):
        configuration = kube.get("admissionregistration.k8s.io/v1", kind, "admission.paybill.dev")
        assert configuration is not None
        assert [w["clientConfig"]["caBundle"] for w in configuration["webhooks"]] == [secret["data"]["ca.crt"]]
        assert [w["failurePolicy"] for w in configuration["webhooks"]] == ["Fail"]
    deployment = kube.get("apps/v1", "deployments", f"{RELEASE}-operator", NAMESPACE)
    assert deployment is not None and deployment["spec"]["replicas"] == 3
    history = helm(bare, "history", RELEASE, "-o", "yaml")
    assert [r["status"] for r in yaml.safe_load(history)] == ["superseded", "deployed"]

    # the operator, here, with the installed ServiceAccount's token (the chart's roles and nothing else)
    kubeconfig = write_service_account_kubeconfig(
        bare.kubeconfig, NAMESPACE, f"{RELEASE}-operator", tmp_path / "operator.kubeconfig"
    )
    serve_webhooks_over_tls(tmp_path / "webhook", monkeypatch)  # the chart's mode: served, registered by the chart
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.setenv("PAYBILL_DATABASE_URL", postgres.dsn)
    monkeypatch.setenv("PAYBILL_BACKUP_DIR", str(tmp_path / "backups"))
    monkeypatch.setenv("PAYBILL_OPERATOR_NAMESPACE", NAMESPACE)
    monkeypatch.setenv("PAYBILL_PEERING", f"{RELEASE}-operator")  # leader election, as the chart's Pods run
    monkeypatch.setenv("POD_ID", f"{RELEASE}-operator-0")
    with KopfRunner(["run", "--all-namespaces", "-m", "paybill.handlers"], timeout=120) as runner:
        for path in ("plans.yaml", "subscriptions.yaml", "tenants.yaml"):
            for doc in yaml.safe_load_all((SAMPLES / path).read_text()):
                if doc:
                    kube.apply(doc)
        wait_for(lambda: active(kube, "acme"), timeout=90)
    assert runner.exit_code == 0, runner.output
    denied = [message for attributes, message in bare.api.access.denied if attributes.user.username == OPERATOR]
    assert denied == [], "the installed roles are not enough:\n" + "\n".join(sorted(set(denied)))

    # uninstall: the release's objects go, the CRDs and so every Tenant stay (crds.keep)
    helm(bare, "uninstall", RELEASE)
    assert kube.get("apps/v1", "deployments", f"{RELEASE}-operator", NAMESPACE) is None
    assert kube.get("rbac.authorization.k8s.io/v1", "clusterroles", f"{RELEASE}-operator") is None
    assert kube.get("rbac.authorization.k8s.io/v1", "clusterroles", "paybill-tenant-viewer") is None
    assert (
        kube.get("admissionregistration.k8s.io/v1", "validatingwebhookconfigurations", "admission.paybill.dev") is None
    )
    assert kube.get("v1", "secrets", f"{RELEASE}-webhook-tls", NAMESPACE) is None
    assert all(kube.get("apiextensions.k8s.io/v1", "customresourcedefinitions", name) for name in generated)
    assert kube.get(API, "tenants", "acme") is not None
    assert not run_helm("list", "-n", NAMESPACE, "-q", kubeconfig=bare.kubeconfig).stdout.strip()
