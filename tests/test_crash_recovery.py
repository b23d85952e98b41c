"""The operator killed with SIGKILL at random moments while 100 tenants onboard: once it is left running,
every tenant is Active, and nothing is duplicated or orphaned in Kubernetes or PostgreSQL."""

from __future__ import annotations

import base64
import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from paybill.database import TenantDatabases
from paybill.database.server import LocalPostgres
from paybill.lifecycle.conditions import is_true

API = "paybill.dev/v1alpha1"
PREFIX = "k9"
MODES = ["pooled"] * 80 + ["bridge"] * 15 + ["silo"] * 5
# its own waits bound each step; 100 onboardings on a loaded 2-core machine take minutes
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def start_operator(cluster: Any, postgres: LocalPostgres, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "KUBECONFIG": str(cluster.kubeconfig),
        "PAYBILL_DATABASE_URL": postgres.dsn,
        "PAYBILL_BACKUP_DIR": str(log.parent / "backups"),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "paybill", "operator"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


def test_kill_9_at_random_points_while_100_tenants_onboard(
    cluster: Any, postgres: LocalPostgres, tmp_path: Path
) -> None:
    kube = cluster.kube
    for isolation in ("pooled", "bridge", "silo"):
        kube.apply(
            {
                "apiVersion": API,
                "kind": "Plan",
                "metadata": {"name": f"{PREFIX}-{isolation}"},
                "spec": {"tier": isolation, "isolation": isolation},
            }
        )
    names = {f"{PREFIX}-{n:03d}": mode for n, mode in enumerate(MODES)}
    for name, mode in names.items():
        kube.apply(
            {"apiVersion": API, "kind": "Tenant", "metadata": {"name": name}, "spec": {"planRef": f"{PREFIX}-{mode}"}}
        )
    log = tmp_path / "operator.log"
    chance = random.Random(9)
    progress_at_kills = []
    process = start_operator(cluster, postgres, log)
    try:
        for _ in range(5):  # kill -9 at random points of progress, while work is in flight
            target = (progress_at_kills[-1] if progress_at_kills else 0) + chance.randint(1, 12)
            cluster.eventually(lambda t=target: len(_active(kube, names)) >= t, timeout=120, interval=0.05)
            process.send_signal(signal.SIGKILL)
            process.wait()
            progress_at_kills.append(len(_active(kube, names)))
            process = start_operator(cluster, postgres, log)
        active = cluster.eventually(lambda: _all_active(kube, names), timeout=180, interval=0.5)
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert len(progress_at_kills) == 5 and len(active) == 100
    assert any(0 < done < 100 for done in progress_at_kills), progress_at_kills  # killed mid-onboarding

    namespaces = [
        ns["metadata"]["name"]
        for ns in kube.list("v1", "namespaces")
        if ns["metadata"]["name"].startswith(f"tenant-{PREFIX}-")
    ]
    assert sorted(namespaces) == sorted(f"tenant-{name}" for name in names)
    for name in names:
        namespace = f"tenant-{name}"
        assert len(kube.list("v1", "secrets", namespace)) == 1
        assert len(kube.list("v1", "serviceaccounts", namespace)) == 2
        assert len(kube.list("rbac.authorization.k8s.io/v1", "roles", namespace)) == 2
        assert len(kube.list("rbac.authorization.k8s.io/v1", "rolebindings", namespace)) == 2
    expected = {name: TenantDatabases(postgres.dsn).tenant_role(name) for name in names}

    def owned(conn: psycopg.Connection, kind: str) -> set[str]:  # what Paybill created for these tenants
        return {
            n
            for (n,) in conn.execute(
                "SELECT name FROM paybill.owned WHERE kind = %s AND owner LIKE %s", (kind, f"Tenant {PREFIX}-%")
            )
        }

    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        roles = {
            r
            for (r,) in conn.execute(
                "SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (list(owned(conn, "role")),)
            )
        }
        assert roles == owned(conn, "role") == set(expected.values())
        placements = dict(
            conn.execute(
                "SELECT tenant, isolation FROM paybill.placements WHERE tenant LIKE %s "
                "AND migrating_to IS NULL AND previous IS NULL",
                (f"{PREFIX}-%",),
            ).fetchall()
        )
        assert placements == names
        silos = {
            d
            for (d,) in conn.execute(
                "SELECT datname FROM pg_database WHERE datname = ANY(%s)", (list(owned(conn, "database")),)
            )
        }
        assert silos == owned(conn, "database") == {expected[name] for name, mode in names.items() if mode == "silo"}
        bridged = owned(conn, "schema")
    with psycopg.connect(postgres.dsn, dbname="paybill_pooled") as conn:
        mapped = conn.execute(
            "SELECT tenant FROM paybill.tenant_roles WHERE tenant LIKE %s", (f"{PREFIX}-%",)
        ).fetchall()
        assert sorted(t for (t,) in mapped) == sorted(n for n, mode in names.items() if mode == "pooled")
    with psycopg.connect(postgres.dsn, dbname="paybill_bridge") as conn:
        schemas = {
            s for (s,) in conn.execute("SELECT nspname FROM pg_namespace WHERE nspname = ANY(%s)", (list(bridged),))
        }
        assert schemas == bridged == {expected[name] for name, mode in names.items() if mode == "bridge"}
    for name in chance.sample(sorted(names), 10):  # the password in each Secret is the role's password
        secret = kube.get("v1", "secrets", "paybill-database", f"tenant-{name}")
        uri = base64.b64decode(secret["data"]["uri"]).decode()
        with psycopg.connect(uri, connect_timeout=3) as conn:
            assert conn.execute("SELECT count(*) FROM customers").fetchone() == (0,)


def _active(kube: Any, names: dict[str, str]) -> list[str]:
    tenants = [t for t in kube.list(API, "tenants") if t["metadata"]["name"] in names]
    return [
        t["metadata"]["name"]
        for t in tenants
        if (t.get("status") or {}).get("phase") == "Active" and is_true(t["status"].get("conditions", []), "Ready")
    ]


def _all_active(kube: Any, names: dict[str, str]) -> list[str] | None:
    active = _active(kube, names)
    return active if len(active) == len(names) else None
