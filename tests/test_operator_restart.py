"""The operator under API-server faults (issue 13, items 3 and 9): restarted under it, with or without its
state, the server is relisted and new Tenants are reconciled; missing CRDs are waited for and said so in the
log and in /healthz; liveness fails while the watches make no progress. Real kopf in-process, the emulated API
server, a real PostgreSQL."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import requests
from kopf.testing import KopfRunner

from paybill.api.crdgen import all_crds
from paybill.cli import liveness_endpoint
from paybill.database.server import LocalPostgres
from paybill.kube import SYSTEM_NAMESPACES, EmulatedApiServer, serve_in_thread, write_admin_kubeconfig
from paybill.kubeclient import Kube
from paybill.lifecycle.conditions import is_true
from test_emulator_restart import Restartable

API = "paybill.dev/v1alpha1"
pytestmark = pytest.mark.slow


class Operator:
    """The operator (kopf in this process) against a restartable emulated API server."""

    def __init__(
        self, server: Restartable, runner: KopfRunner, kubeconfig: Path, healthz: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        self.server, self.runner, self.kubeconfig, self.healthz = server, runner, kubeconfig, healthz
        self.caplog = caplog

    def logs(self) -> str:
        """What the operator logged so far (KopfRunner.output is only there once it stopped)."""
        return self.caplog.text

    @property
    def kube(self) -> Kube:
        return Kube(kubernetes.config.new_client_from_config(config_file=str(self.kubeconfig)))

    def eventually(self, check: Any, timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            try:
                result = check()
            except (AssertionError, OSError, requests.RequestException, kubernetes.client.ApiException):
                result = None
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"not within {timeout}s: {check.__doc__ or check}")
            time.sleep(0.2)

    def health(self) -> requests.Response:
        return requests.get(self.healthz, timeout=5)

    def tenant_active(self, name: str) -> dict[str, Any] | None:
        tenant = self.kube.get(API, "tenants", name) or {}
        status = tenant.get("status") or {}
        return tenant if status.get("phase") == "Active" and is_true(status.get("conditions", []), "Ready") else None

    def onboard(self, name: str) -> dict[str, Any]:
        kube = self.kube
        kube.apply(
            {
                "apiVersion": API,
                "kind": "Plan",
                "metadata": {"name": "free"},
                "spec": {"tier": "free", "isolation": "pooled"},
            }
        )
        kube.apply({"apiVersion": API, "kind": "Tenant", "metadata": {"name": name}, "spec": {"planRef": "free"}})
        return self.eventually(lambda: self.tenant_active(name))


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


@pytest.fixture
def start_operator(
    postgres: LocalPostgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> Iterator[Any]:
    caplog.set_level(logging.INFO)
    started: list[tuple[Restartable, Any]] = []

    def start(server: Restartable, stale_seconds: float = 180) -> Operator:
        kubeconfig = write_admin_kubeconfig(tmp_path / "kubeconfig", server.url, server.api)
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        monkeypatch.setenv("PAYBILL_DATABASE_URL", postgres.dsn)
        monkeypatch.setenv("PAYBILL_STATE_DIR", str(tmp_path / "operator"))
        monkeypatch.setenv("PAYBILL_WATCH_STALE_SECONDS", str(stale_seconds))
        healthz = liveness_endpoint("http://127.0.0.1:0/healthz")
        assert healthz is not None
        args = ["run", "--all-namespaces", "--standalone", "--liveness", healthz, "-m", "paybill.handlers"]
        runner = KopfRunner(args, timeout=120)
        runner.__enter__()
        started.append((server, runner))
        return Operator(server, runner, kubeconfig, healthz, caplog)

    yield start
    for server, runner in started:
        runner.__exit__(None, None, None)
        server.stop()
        assert runner.exit_code == 0, runner.output[-5000:]


def test_a_new_tenant_is_reconciled_after_the_api_server_restarts_on_its_state(
    start_operator: Any, tmp_path: Path
) -> None:
    server = Restartable(tmp_path / "emulator")
    server.start(SYSTEM_NAMESPACES + all_crds())
    operator = start_operator(server)
    before = operator.onboard(unique("before"))

    server.restart(SYSTEM_NAMESPACES + all_crds())

    after = operator.onboard(unique("after"))
    assert int(after["metadata"]["resourceVersion"]) > int(before["metadata"]["resourceVersion"])
    kept = operator.kube.get(API, "tenants", before["metadata"]["name"])
    assert kept["metadata"]["uid"] == before["metadata"]["uid"]
    assert "multitasker has failed" not in operator.logs()


def test_an_api_server_restarted_empty_is_relisted_and_its_missing_crds_waited_for(
    start_operator: Any, tmp_path: Path
) -> None:
    """The incident: restarted in memory, the server is back at a low revision without CRDs. kopf's watches
    come back with versions it never issued (410, relist), their resources answer 404: the operator waits, says
    so, and reconciles a Tenant once the CRDs are applied again."""
    server = Restartable(None)
    server.start(SYSTEM_NAMESPACES + all_crds())
    operator = start_operator(server)
    operator.onboard(unique("before"))
    access = server.api.access
    server.stop()
    server._running = serve_in_thread(seed=SYSTEM_NAMESPACES, api=EmulatedApiServer(access=access), port=server.port)
    server.api, server.url = server._running.__enter__()

    operator.eventually(lambda: "tenants.paybill.dev is not served by the API server" in operator.logs())
    assert "waiting_for_crds" in operator.eventually(
        lambda: operator.health().ok and operator.health().json()["watches"]
    )
    for crd in all_crds():
        operator.kube.create(crd)
    operator.onboard(unique("after"))
    assert "tenants.paybill.dev is served again" in operator.logs()


def test_started_without_crds_the_operator_waits_says_so_then_reconciles(start_operator: Any, tmp_path: Path) -> None:
    server = Restartable(None)
    server.start(SYSTEM_NAMESPACES)
    operator = start_operator(server)
    operator.eventually(lambda: "Paybill's CRDs are not installed" in operator.logs())
    health = operator.eventually(lambda: operator.health().ok and operator.health().json())
    assert "tenants.paybill.dev" in health["watches"]["waiting_for_crds"]
    for crd in all_crds():
        operator.kube.create(crd)
    operator.onboard(unique("late"))
    operator.eventually(lambda: "waiting_for_crds" not in operator.health().json()["watches"])


def test_liveness_fails_while_the_watches_make_no_progress_and_recovers(start_operator: Any, tmp_path: Path) -> None:
    server = Restartable(tmp_path / "emulator", bookmark_interval=0.5)
    server.start(SYSTEM_NAMESPACES + all_crds())
    operator = start_operator(server, stale_seconds=3)
    # plans, subscriptions, tenants, agent policies, workflows, CRDs (kopf caches a healthy answer for 10 s)
    operator.eventually(lambda: operator.health().ok and operator.health().json()["watches"]["streams"] >= 5)

    server.stop()  # nothing answers: no event, no bookmark, no listing
    operator.eventually(lambda: operator.health().status_code == 500, timeout=60)

    server.start(SYSTEM_NAMESPACES + all_crds())
    operator.eventually(lambda: operator.health().ok, timeout=60)
    operator.onboard(unique("back"))
