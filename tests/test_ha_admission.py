"""High availability and admission: right after a failover, the new leader's kopf has resumed but its indexes may
not hold what changed meanwhile. The webhook answers from kopf's indexes only once every indexed resource was
listed again since kopf resumed and no event of it waits for its worker (else from the API server), and a tenant
whose spec says suspended, or whose subscription suspends it, is suspended at admission and for the workflow runner
before its status says so. Through real kubectl acting as the agent's ServiceAccount, two real operators."""

from __future__ import annotations

import shutil
import signal
from pathlib import Path
from typing import Any

import pytest

from paybill import peering
from paybill.database.server import LocalPostgres
from paybill.handlers.admission import CONFIGURATION
from test_admission import AGENT, FIX, kubectl_as, tenant_with_policy, workflow
from test_ha import ELECTION, role
from test_metrics import Operator
from test_tenant_lifecycle import API, onboard

pytestmark = [
    pytest.mark.slow,
    pytest.mark.kubectl,
    pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed"),
]


def webhook_urls(cluster: Any) -> set[str]:
    found = [
        cluster.kube.get("admissionregistration.k8s.io/v1", plural, CONFIGURATION) or {}
        for plural in ("mutatingwebhookconfigurations", "validatingwebhookconfigurations")
    ]
    return {hook["clientConfig"]["url"].split("/admission")[0] for c in found for hook in c.get("webhooks") or []}


@pytest.mark.timeout(600)
def test_after_a_failover_a_tenant_suspended_at_once_admits_no_mutation_and_nothing_runs(
    cluster: Any, postgres: LocalPostgres, tmp_path: Path
) -> None:
    cluster.kube.create(peering.PEERING_CRD)
    cluster.eventually(lambda: cluster.kube.request("GET", f"/apis/{peering.API_VERSION}"), timeout=30)
    first = Operator(cluster, postgres.dsn, tmp_path / "first.log", POD_ID="paybill-first", **ELECTION)
    second = None
    try:
        cluster.eventually(lambda: role(first) == "leader", timeout=60)
        served_by_first = cluster.eventually(lambda: len(webhook_urls(cluster)) == 1 and webhook_urls(cluster), 30)
        busy = [onboard(cluster, "pooled") for _ in range(4)]  # a takeover resumes every object: workers are busy
        name, namespace = tenant_with_policy(cluster)
        second = Operator(cluster, postgres.dsn, tmp_path / "second.log", POD_ID="paybill-second", **ELECTION)
        cluster.eventually(lambda: second.readiness()[0] == 200 and role(second) == "standby", timeout=60)
        cluster.eventually(lambda: webhook_urls(cluster) not in (set(), served_by_first), timeout=30)  # the standby's
        agent = kubectl_as(cluster.service_account_kubeconfig(namespace, AGENT), tmp_path)

        first.stop(signal.SIGKILL)
        cluster.eventually(lambda: role(second) == "leader", timeout=60)
        cluster.kube.merge_patch(API, "tenants", name, {"spec": {"suspended": True}})
        applied = agent("apply", "-f", "-", stdin=workflow(namespace, "refund-now", [FIX]))

        assert applied.returncode != 0, "admitted a mutation of a suspended tenant"
        assert f"tenant {name} is suspended" in applied.stderr, applied.stderr
        assert cluster.kube.get(API, "agentworkflows", "refund-now", namespace) is None  # so nothing ran
        assert busy
    finally:
        first.stop()
        if second is not None:
            second.stop()
