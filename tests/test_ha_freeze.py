"""High availability, a frozen leader: the leader stopped with SIGSTOP past its record's lifetime, the standby
takes over, tenants are created, and the old leader is resumed with SIGCONT. kopf's peering has no fencing: the old
leader's queued handlers run and its keepalive writes its (higher-priority) record again. Paybill's fence refuses
every reconciling handler of a replica that does not hold the election now, and a replica whose record expired
takes a new ticket and stands by: every tenant is provisioned exactly once, by the new leader."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from paybill import peering
from paybill.audit import AuditLog
from paybill.database.server import LocalPostgres
from test_ha import ELECTION, RECONCILES, role
from test_metrics import Operator, total, value
from test_tenant_lifecycle import onboard, wait_phase


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_leader_frozen_past_its_lifetime_stands_by_when_resumed_and_nothing_is_done_twice(
    cluster: Any, postgres: LocalPostgres, tmp_path: Path
) -> None:
    cluster.kube.create(peering.PEERING_CRD)
    cluster.eventually(lambda: cluster.kube.request("GET", f"/apis/{peering.API_VERSION}"), timeout=30)
    first = Operator(cluster, postgres.dsn, tmp_path / "first.log", POD_ID="paybill-first", **ELECTION)
    second = None
    try:
        cluster.eventually(lambda: role(first) == "leader", timeout=60)
        second = Operator(cluster, postgres.dsn, tmp_path / "second.log", POD_ID="paybill-second", **ELECTION)
        cluster.eventually(lambda: second.readiness()[0] == 200 and role(second) == "standby", timeout=60)
        warm = onboard(cluster, "pooled")  # the leader's watches and workers are busy, as in production
        wait_phase(cluster, warm, "Active")

        first.process.send_signal(signal.SIGSTOP)
        cluster.eventually(lambda: role(second) == "leader", timeout=60)
        created = [onboard(cluster, "pooled") for _ in range(4)]  # the frozen leader's watch holds them too
        first.process.send_signal(signal.SIGCONT)

        for name in created:
            wait_phase(cluster, name, "Active")
        cluster.eventually(lambda: role(first) == "standby", timeout=60)  # it noticed it lost, and stands by
        assert role(second) == "leader"
        assert value(first.samples(), "leader_election_master_status", name="paybill") == 0
        assert value(second.samples(), "leader_election_master_status", name="paybill") == 1
        assert "the election is lost" in first.log.read_text()

        with psycopg.connect(postgres.dsn, autocommit=True) as conn:
            log = AuditLog(lambda: conn)
            for name in [warm, *created]:
                transitions = [(r.event, r.details["to"]) for r in log.records("Tenant", name)]
                assert transitions == [("provision", "Provisioning"), ("provisioned", "Active")], name
        for name in created:
            wait_phase(cluster, name, "Active")  # still: no spurious Failed from a second replica
        assert total(second.samples(), RECONCILES, controller="tenant") >= len(created)
    finally:
        if first.process.poll() is None:
            first.process.send_signal(signal.SIGCONT)
        first.stop()
        if second is not None:
            second.stop()
