"""PostgreSQL crashes (an immediate stop) while tenants onboard, and comes back on the same port: every tenant
reaches Active and Ready, and no tenant reported Active before the crash lost its login or its placement record
(issue 13, item 1 and the recovery figure; the timing itself is measured by `python -m bench --only recovery`)."""

from __future__ import annotations

import base64
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from kopf.testing import KopfRunner

from paybill.database.server import SERVER_USER, LocalPostgres, find_binaries

API = "paybill.dev/v1alpha1"
TENANTS = 10
ACTIVE_BEFORE_CRASH = 3  # the crash comes once this many are Active, while the others onboard
LATE_TENANTS = 2  # created while the server is down: onboarding that must wait for it
OUTAGE_S = 5.0
RECOVERY_BOUND_S = 180.0  # generous: a bound on the wait, not a figure
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(find_binaries() is None, reason="an immediate stop needs PostgreSQL's own pg_ctl"),
]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LocalPostgres]:
    """This test's own server, durable as the demo's (the session's `postgres` is shared: never crash it)."""
    postgres = LocalPostgres(tmp_path / "postgres")
    postgres.start()
    yield postgres
    postgres.remove()


@pytest.fixture
def operator_on_server(
    cluster: Any, server: LocalPostgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    """The real operator (kopf, in this process) against the emulated API server and this test's server."""
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    monkeypatch.setenv("PAYBILL_DATABASE_URL", server.dsn)
    monkeypatch.setenv("PAYBILL_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("PAYBILL_BACKUP_DIR", str(tmp_path / "backups"))
    with KopfRunner(["run", "--all-namespaces", "--standalone", "-m", "paybill.handlers"], timeout=120) as runner:
        yield cluster
    assert runner.exit_code == 0, runner.output
    assert str(psycopg.conninfo.conninfo_to_dict(server.dsn)["password"]) not in runner.output


def crash(server: LocalPostgres) -> None:
    """`pg_ctl stop -m immediate`: the server and its sessions quit without a checkpoint, as in a crash."""
    binaries = find_binaries()
    assert binaries is not None
    argv = [str(binaries / "pg_ctl"), "-D", str(server.pgdata), "-m", "immediate", "-w", "stop"]
    if os.geteuid() == 0:
        argv = ["runuser", "-u", SERVER_USER, "--", *argv]
    subprocess.run(argv, check=True, capture_output=True, stdin=subprocess.DEVNULL)


def onboard(cluster: Any, names: list[str]) -> None:
    for name in names:
        cluster.kube.create(
            {"apiVersion": API, "kind": "Tenant", "metadata": {"name": name}, "spec": {"planRef": "pooled"}}
        )


def active(cluster: Any) -> set[str]:
    """Tenants Active and Ready, their data not found broken (just onboarded, they have no DataHealthy yet)."""
    found = set()
    for tenant in cluster.kube.list(API, "tenants"):
        status = tenant.get("status") or {}
        conditions = {c["type"]: c["status"] for c in status.get("conditions") or []}
        ready = status.get("phase") == "Active" and conditions.get("Ready") == "True"
        if ready and conditions.get("DataHealthy", "True") == "True":
            found.add(tenant["metadata"]["name"])
    return found


def at_least(cluster: Any, count: int) -> set[str] | None:
    """The Active tenants, once there are `count` of them."""
    seen = active(cluster)
    return seen if len(seen) >= count else None


def failing(cluster: Any, name: str) -> bool:
    """The tenant says it could not reach its database (a condition False, the phase Failed)."""
    status = (cluster.kube.get(API, "tenants", name) or {}).get("status") or {}
    return status.get("phase") == "Failed" and any(c["status"] == "False" for c in status.get("conditions") or [])


def logs_in(cluster: Any, name: str) -> bool:
    secret = cluster.kube.get("v1", "secrets", "paybill-database", f"tenant-{name}")
    try:
        psycopg.connect(base64.b64decode(secret["data"]["uri"]).decode(), connect_timeout=5).close()
    except psycopg.OperationalError:
        return False
    return True


def placed(server: LocalPostgres, name: str) -> bool:
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM paybill.placements WHERE tenant = %s", (name,)).fetchone() is not None


def test_tenants_onboarding_through_a_database_crash_all_become_active_and_none_acknowledged_is_lost(
    operator_on_server: Any, server: LocalPostgres
) -> None:
    cluster = operator_on_server
    cluster.kube.apply(
        {
            "apiVersion": API,
            "kind": "Plan",
            "metadata": {"name": "pooled"},
            "spec": {"tier": "p", "isolation": "pooled"},
        }
    )
    names = [f"crash{n}" for n in range(TENANTS)]
    onboard(cluster, names)
    acknowledged = cluster.eventually(lambda: at_least(cluster, ACTIVE_BEFORE_CRASH), timeout=90)
    port = server.port

    crash(server)
    down = time.monotonic()
    late = [f"late{n}" for n in range(LATE_TENANTS)]
    onboard(cluster, late)  # these cannot be provisioned before the server is back
    for name in late:
        cluster.eventually(lambda name=name: failing(cluster, name), timeout=60)
    time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down)))  # the outage's length (the fault), not a wait
    server.start()
    assert server.port == port, "the server came back on another port"

    everyone = set(names + late)
    cluster.eventually(lambda: active(cluster) >= everyone, timeout=RECOVERY_BOUND_S)
    lost = sorted(name for name in acknowledged if not (logs_in(cluster, name) and placed(server, name)))
    assert not lost, f"Active before the crash, but cannot log in or has no placement row: {lost}"
    broken = sorted(name for name in everyone if not (logs_in(cluster, name) and placed(server, name)))
    assert not broken, f"Active after the recovery, but cannot log in or has no placement row: {broken}"
