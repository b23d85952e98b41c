"""High availability, a frozen leader: the leader stopped with SIGSTOP past its record's lifetime, the standby
takes over, tenants are created, and the old leader is resumed with SIGCONT. kopf's peering has no fencing: the old
leader's queued handlers run and its keepalive writes its (higher-priority) record again. Paybill's fence refuses
every reconciling handler of a replica that does not hold the election now, and a replica whose record expired
takes a new ticket and stands by: every tenant is provisioned exactly once, by the new leader."""

from __future__ import annotations

import concurrent.futures
import datetime
import signal
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from paybill import peering
from paybill.api.plan import PlanSpec
from paybill.api.subscription import SubscriptionSpec
from paybill.api.tenant import TenantSpec
from paybill.audit import AuditLog
from paybill.billing.grace import Billed
from paybill.database.server import LocalPostgres
from paybill.handlers.instrument import leading_now, reconciles
from paybill.workflows import reconcile as workflows
from paybill.workflows.reconcile import tenant_suspended
from test_agent_reconcile import READY, UNRUN_FIELDS, finish, observed, said, workflow
from test_ha import RECONCILES, leader, role, standby
from test_metrics import Operator, total, value
from test_tenant_lifecycle import onboard, wait_phase


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_leader_frozen_past_its_lifetime_stands_by_when_resumed_and_nothing_is_done_twice(
    cluster: Any, postgres: LocalPostgres, tmp_path: Path
) -> None:
    first, second = leader(cluster, postgres, tmp_path), None
    try:
        second = standby(cluster, postgres, tmp_path)
        warm = onboard(cluster, "pooled")  # the leader's watches and workers are busy, as in production
        wait_phase(cluster, warm, "Active")

        first.process.send_signal(signal.SIGSTOP)
        cluster.eventually(lambda: role(second) == "leader", timeout=60)
        created = [onboard(cluster, "pooled") for _ in range(4)]  # the frozen leader's watch holds them too
        first.process.send_signal(signal.SIGCONT)

        for name in created:
            wait_phase(cluster, name, "Active")
        answer = _readiness_once(first, "standby", timeout=60)  # it noticed it lost, and stands by
        assert answer[1].get("role") == "standby", f"{answer}\n{first.log.read_text()[-4000:]}"
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


def _readiness_once(operator: Operator, role: str, timeout: float) -> tuple[int, dict[str, Any]]:
    """The replica's readiness as soon as it reports `role`; its last answer when it has not within `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        answer = operator.readiness()
        if answer[1].get("role") == role or time.monotonic() > deadline:
            return answer
        time.sleep(0.2)


def _frozen(cluster: Any, identity: str, seconds: int) -> None:
    """`identity`'s record as a replica frozen `seconds` ago left it (its lastseen not renewed since)."""
    then = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=seconds)
    found = cluster.kube.get(peering.API_VERSION, peering.PLURAL, "paybill")
    priority = found["status"][identity]["priority"]
    patch = {"status": {identity: peering.record(priority, 10, then)}}
    cluster.kube.merge_patch(peering.API_VERSION, peering.PLURAL, "paybill", patch)


def test_a_replica_whose_record_expired_is_fenced_and_renews_only_with_a_new_ticket(cluster: Any) -> None:
    cluster.kube.create(peering.PEERING_CRD)
    cluster.eventually(lambda: cluster.kube.request("GET", f"/apis/{peering.API_VERSION}"), timeout=30)
    old, new = peering.Election("paybill", "old", 10), peering.Election("paybill", "new", 10)
    assert (peering.register(cluster.kube, old), peering.register(cluster.kube, new)) == (-1, -2)
    fence = peering.Fence(cluster.kube, old)
    assert fence.role() == "leader"
    fence.ensure()
    assert peering.renew(cluster.kube, old, -1) == -1  # live: renewed as it was

    _frozen(cluster, "old", 11)
    fence.forget()
    assert fence.role() == "unregistered"
    with pytest.raises(peering.NotLeading, match="unregistered"):
        fence.ensure()
    assert peering.Fence(cluster.kube, new).role() == "leader"  # took over
    assert peering.renew(cluster.kube, old, -1) == -3  # lost: a new ticket, behind the new leader
    assert peering.Fence(cluster.kube, old).role() == "standby"
    assert peering.Fence(cluster.kube, new).role() == "leader"
    assert peering.renew(cluster.kube, new, -2) == -2


def test_a_fence_trusts_a_leading_answer_no_longer_than_its_ttl_nor_near_its_records_deadline(cluster: Any) -> None:
    cluster.kube.create(peering.PEERING_CRD)
    cluster.eventually(lambda: cluster.kube.request("GET", f"/apis/{peering.API_VERSION}"), timeout=30)
    elected = peering.Election("paybill", "only", 10)
    peering.register(cluster.kube, elected)
    assert peering.Fence(cluster.kube, elected).ttl == 1.0  # well under the lifetime
    fence = peering.Fence(cluster.kube, elected, ttl=3600)
    assert fence.role() == "leader" and fence.cached() == "leader"
    _frozen(cluster, "only", 9)  # read again: 1 s left, within the margin
    fence.forget()
    assert fence.role() == "leader"
    assert fence.cached() is None  # never trusted that close to the deadline, whatever the ttl


BILLING = {"tenantRef": "t", "planRef": "p"}
PLAN = PlanSpec.model_validate({"tier": "pro", "isolation": "pooled", "gracePeriodDays": 7})
NOW = datetime.datetime(2026, 11, 30, 20, 0, tzinfo=datetime.UTC)


@pytest.mark.parametrize(
    ("suspended", "plan", "billing", "expected"),
    [
        (False, PLAN, [], False),
        (True, PLAN, [], True),  # by hand, before the status says so
        (False, PLAN, [{"billingStatus": "canceled"}], True),
        (False, PLAN, [{"billingStatus": "unpaid"}], True),
        (False, PLAN, [{"billingStatus": "paused"}], True),
        (False, PLAN, [{"billingStatus": "past_due", "pastDueSince": "2026-11-29T00:00:00Z"}], False),  # in grace
        (False, PLAN, [{"billingStatus": "active"}], False),
        (False, None, [{"billingStatus": "canceled"}], False),  # no plan: admission and the runner refuse anyway
    ],
)
def test_a_tenant_is_suspended_by_its_spec_or_its_subscription_before_its_status_says_so(
    suspended: bool, plan: PlanSpec | None, billing: list[dict[str, str]], expected: bool
) -> None:
    spec = TenantSpec(planRef="p", suspended=suspended)
    billed = [Billed(f"s{i}", SubscriptionSpec.model_validate({**BILLING, **b})) for i, b in enumerate(billing)]
    assert tenant_suspended(spec, plan, billed, NOW) is expected


def test_the_runner_denies_a_tenant_suspended_by_its_spec_or_subscription_while_its_status_says_active() -> None:
    message = "tenant acme is suspended; its agents cannot run"
    assert workflows.decide(workflow(), observed(READY)).action is not None  # status full access: it would run
    outcome = workflows.decide(workflow(), observed(READY, suspended=True))
    assert said(outcome) == finish("Denied", "TenantSuspended", message, UNRUN_FIELDS)


def test_timers_act_only_on_the_replica_that_leads_now(cluster: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The timers that act on clouds and billing (orphans, compute rechecks, grace clocks) ask leading_now: a
    standby's timer does nothing, without an error kopf would log at every tick."""
    cluster.kube.create(peering.PEERING_CRD)
    cluster.eventually(lambda: cluster.kube.request("GET", f"/apis/{peering.API_VERSION}"), timeout=30)
    first, second = peering.Election("paybill", "first", 10), peering.Election("paybill", "second", 10)
    peering.register(cluster.kube, first), peering.register(cluster.kube, second)
    monkeypatch.setattr(peering, "FENCE", peering.Fence(cluster.kube, second))
    assert leading_now() is False
    monkeypatch.setattr(peering, "FENCE", peering.Fence(cluster.kube, first))
    assert leading_now() is True
    monkeypatch.setattr(peering, "FENCE", None)  # no election: it runs alone, and leads
    assert leading_now() is True


def test_a_replica_shutting_down_lets_its_running_handlers_finish_before_it_resigns(
    cluster: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kopf removes a replica's record as soon as it is told to stop (SIGTERM: every rolling update, every drain),
    and the standby takes over while handlers here still run (an outsider's review: two final backups of one
    tenant). Resigning refuses new handlers at once and waits for the running ones before the record goes."""
    import kopf

    cluster.kube.create(peering.PEERING_CRD)
    cluster.eventually(lambda: cluster.kube.request("GET", f"/apis/{peering.API_VERSION}"), timeout=30)
    leading = peering.Election("paybill", "leading", 10)
    peering.register(cluster.kube, leading)
    fence = peering.Fence(cluster.kube, leading)
    monkeypatch.setattr(peering, "FENCE", fence)
    entered, release = threading.Event(), threading.Event()

    @reconciles("test")
    def backup(**_: Any) -> str:
        entered.set()
        release.wait(30)
        return "done"

    running = concurrent.futures.ThreadPoolExecutor(max_workers=2)
    first = running.submit(backup)
    assert entered.wait(10)
    resigned = running.submit(fence.resign, 30)
    cluster.eventually(lambda: fence.role() == peering.RESIGNING, timeout=10)
    with pytest.raises(kopf.TemporaryError, match="resigning"):
        backup()  # nothing new begins
    time.sleep(0.5)
    assert not resigned.done()  # the running one is waited for
    release.set()
    assert first.result(10) == "done" and resigned.result(10) == 0

    stuck = peering.Fence(cluster.kube, leading)
    monkeypatch.setattr(peering, "FENCE", stuck)
    entered.clear(), release.clear()
    hanging = running.submit(backup)
    assert entered.wait(10)
    assert stuck.resign(0.2) == 1  # a handler that outlasts the wait is counted, and the replica goes all the same
    release.set()
    assert hanging.result(10) == "done"
    running.shutdown()


def test_a_record_no_live_replica_keeps_is_cleared_by_the_next_renewal(cluster: Any) -> None:
    """An outsider's review: a record without lastseen (kopf reads it as fresh forever) or stamped an hour ahead
    outranked every replica, all of them stood by and reported ready, and nothing reconciled. Renewals clear such
    records; the oldest live replica leads again."""
    cluster.kube.create(peering.PEERING_CRD)
    cluster.eventually(lambda: cluster.kube.request("GET", f"/apis/{peering.API_VERSION}"), timeout=30)
    live = peering.Election("paybill", "live", 10)
    priority = peering.register(cluster.kube, live)
    ahead = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)).isoformat()
    ghosts = {"ghost": {"priority": 0}, "ahead": {"priority": 5, "lifetime": 10, "lastseen": ahead}}
    cluster.kube.merge_patch(peering.API_VERSION, peering.PLURAL, "paybill", {"status": ghosts})
    assert peering.Fence(cluster.kube, live).role() == "standby"  # outranked by records nobody keeps
    assert peering.renew(cluster.kube, live, priority) == priority
    status = cluster.kube.get(peering.API_VERSION, peering.PLURAL, "paybill")["status"]
    assert set(status) == {"live"} and peering.Fence(cluster.kube, live).role() == "leader"


def test_ghost_records_are_those_without_lastseen_or_stamped_past_their_lifetime_ahead() -> None:
    now = datetime.datetime.now(datetime.UTC)
    # a clock a few minutes ahead (or this one's behind): still a live replica's, never cleared (a re-attack: clearing
    # a live leader's record stamped past its lifetime ahead made two replicas lead)
    skewed = (now + datetime.timedelta(minutes=3)).isoformat()
    late = (now + datetime.timedelta(hours=1)).isoformat()
    status = {
        "fresh": {"priority": -1, "lifetime": 10, "lastseen": now.isoformat()},
        "skewed": {"priority": -2, "lifetime": 10, "lastseen": skewed},
        "ahead": {"priority": -3, "lifetime": 10, "lastseen": late},
        "bare": {"priority": 0},
        "broken": {"priority": 0, "lastseen": "yesterday"},
    }
    assert sorted(peering.ghosts(status, now)) == ["ahead", "bare", "broken"]
