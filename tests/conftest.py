"""Shared fixtures: a real PostgreSQL server and the emulated Kubernetes API server (both on loopback)."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes
import psycopg
import pytest
from kopf.testing import KopfRunner

from paybill.api.crdgen import all_crds
from paybill.database.server import LocalPostgres
from paybill.kube import (
    SYSTEM_NAMESPACES,
    EmulatedApiServer,
    serve_in_thread,
    write_admin_kubeconfig,
    write_service_account_kubeconfig,
)
from paybill.kubeclient import Kube


@pytest.fixture(scope="session")
def postgres() -> Iterator[LocalPostgres]:
    """One real PostgreSQL server for the whole session. Its directory is private (0700, as a clone under
    `mktemp -d`): as root the server's files go to a runtime directory the postgres user can enter."""
    directory = Path(tempfile.mkdtemp(prefix="paybill-pg-"))
    server = LocalPostgres(directory / "postgres", durable=False)  # throwaway data: speed over crash safety
    server.start()
    yield server
    server.remove()
    shutil.rmtree(directory, ignore_errors=True)


class Cluster:
    """An emulated API server with Paybill's CRDs, a kubeconfig for it and a client."""

    def __init__(self, api: EmulatedApiServer, url: str, kubeconfig: Path) -> None:
        self.api, self.url, self.kubeconfig = api, url, kubeconfig
        self.kube = Kube(kubernetes.config.new_client_from_config(config_file=str(kubeconfig)))

    def kopf_retries(self, plural: str, name: str, namespace: str | None = None) -> int:
        """How many times kopf has retried a Paybill object's handler (its progress annotations, paybill.dev/*)."""
        found = self.kube.get("paybill.dev/v1alpha1", plural, name, namespace) or {}
        annotations = (found.get("metadata") or {}).get("annotations") or {}
        states = [json.loads(v) for k, v in annotations.items() if k.startswith("paybill.dev/") and v.startswith("{")]
        return max((state.get("retries", 0) for state in states), default=0)

    def service_account_kubeconfig(self, namespace: str, name: str) -> Path:
        """A kubeconfig acting as ServiceAccount namespace/name (a bound token from the TokenRequest API)."""
        path = self.kubeconfig.with_name(f"serviceaccount-{namespace}-{name}.conf")
        return write_service_account_kubeconfig(self.kubeconfig, namespace, name, path)

    def as_service_account(self, namespace: str, name: str) -> Kube:
        """A client acting as ServiceAccount namespace/name: how an agent submits its AgentWorkflows."""
        config = self.service_account_kubeconfig(namespace, name)
        return Kube(kubernetes.config.new_client_from_config(config_file=str(config)))

    def eventually(self, check: Callable[[], Any], timeout: float = 20, interval: float = 0.1) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            try:
                result = check()
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
            else:
                if result is not None and result is not False:
                    return result
                if time.monotonic() > deadline:
                    raise AssertionError(f"condition not met within {timeout}s: {check}")
            time.sleep(interval)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with serve_in_thread(seed=SYSTEM_NAMESPACES + all_crds()) as (api, url):
        yield Cluster(api, url, write_admin_kubeconfig(tmp_path / "kubeconfig", url, api))


@pytest.fixture
def operator(
    cluster: Cluster, postgres: LocalPostgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Cluster]:
    """The real operator (kopf, in this process) against the emulated API server and the real PostgreSQL."""
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    monkeypatch.setenv("PAYBILL_DATABASE_URL", postgres.dsn)
    monkeypatch.setenv("PAYBILL_BACKUP_DIR", str(tmp_path / "backups"))
    monkeypatch.setenv("PAYBILL_STATE_DIR", str(tmp_path / "state"))  # the audit checkpoint: the test's own
    with KopfRunner(["run", "--all-namespaces", "--standalone", "-m", "paybill.handlers"], timeout=90) as runner:
        yield cluster
    assert runner.exit_code == 0, runner.output
    assert "s3cret" not in runner.output
    assert str(psycopg.conninfo.conninfo_to_dict(postgres.dsn)["password"]) not in runner.output
