"""quotas.agentStatementsPerDay is a durable count per tenant and UTC day, charged once at admission with a
conditional UPDATE in the operator's control database (database/control.py): concurrent submissions cannot pass
it together, deleting workflows gives nothing back, and a new UTC day is a new count."""

from __future__ import annotations

import datetime
import shutil
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from paybill.database.connections import Connections
from paybill.database.control import Control
from paybill.database.server import LocalPostgres
from paybill.workflows.quota import StatementCharge, over_quota, utc_day
from test_admission import AGENT, READ, kubectl_as, tenant_with_policy, workflow
from test_tenant_lifecycle import API

DAY = datetime.date(2026, 11, 30)


def test_the_day_is_the_utc_day_of_an_aware_clock() -> None:
    assert utc_day(datetime.datetime(2026, 11, 30, 23, 59, 59, tzinfo=datetime.UTC)) == DAY
    assert utc_day(datetime.datetime(2026, 12, 1, 0, 0, tzinfo=datetime.UTC)) == DAY + datetime.timedelta(days=1)
    new_york = datetime.timezone(datetime.timedelta(hours=-5))
    assert utc_day(datetime.datetime(2026, 11, 30, 20, 0, tzinfo=new_york)) == DAY + datetime.timedelta(days=1)
    with pytest.raises(ValueError, match="time-zone aware"):
        utc_day(datetime.datetime(2026, 11, 30, 12, 0))


def test_a_refusal_says_what_was_used_and_what_the_plan_allows() -> None:
    message = over_quota(StatementCharge("acme", 3, 10, "pro"), 9, DAY)
    assert (
        message
        == "9 agent statements were admitted on 2026-11-30 (UTC) and this workflow adds 3; plan pro allows 10 a day"
    )


@pytest.fixture
def control(postgres: LocalPostgres) -> Control:
    return Control(Connections(postgres.dsn))


def test_concurrent_charges_never_pass_the_limit_together(control: Control) -> None:
    tenant, start = f"quota-{uuid.uuid4().hex[:8]}", threading.Barrier(24)

    def charge(_: int) -> int | None:
        start.wait()
        return control.charge_statements(tenant, DAY, 3, 30)

    with ThreadPoolExecutor(24) as pool:
        counts = list(pool.map(charge, range(24)))
    admitted = sorted(count for count in counts if count is not None)
    assert admitted == list(range(3, 31, 3))  # exactly 10 of 24, each seeing the others' sum
    assert control.statements_used(tenant, DAY) == 30
    assert control.charge_statements(tenant, DAY, 1, 30) is None
    tomorrow = DAY + datetime.timedelta(days=1)
    assert control.statements_used(tenant, tomorrow) == 0
    assert control.charge_statements(tenant, tomorrow, 30, 30) == 30  # a new day, a new count
    assert control.charge_statements(f"{tenant}-other", DAY, 30, 30) == 30  # and each tenant its own


def test_an_admission_ticket_is_claimed_by_the_first_object_and_never_taken_from_it(control: Control) -> None:
    """A ticket is one admission's (its stamp carries an admission id of its own): the same ticket charged again (a
    review the API server sent twice, or the same stamp admitted while its object exists and then refused 409) never
    frees the claim, or a copy of the stamp stored past the webhooks could run a second time."""
    ticket = f"v2:test:{uuid.uuid4().hex}"
    assert control.claim_ticket(ticket, "uid-1") is None  # never admitted
    assert control.charge_statements(f"quota-{uuid.uuid4().hex[:8]}", DAY, 1, 1, ticket) == 1
    assert control.claim_ticket(ticket, "uid-1") == "uid-1"
    assert control.claim_ticket(ticket, "uid-1") == "uid-1"  # the same object, run again
    assert control.claim_ticket(ticket, "uid-2") == "uid-1"  # another object with the same stamp: not its
    assert control.charge_statements(f"quota-{uuid.uuid4().hex[:8]}", DAY, 1, 1, ticket) == 1
    assert control.claim_ticket(ticket, "uid-2") == "uid-1"  # charged again: still the first object's
    refused = f"v1:test:{uuid.uuid4().hex}"
    assert control.charge_statements(f"quota-{uuid.uuid4().hex[:8]}", DAY, 2, 1, refused) is None
    assert control.claim_ticket(refused, "uid-3") is None  # over quota: no ticket either


LIMIT = 5


@pytest.mark.slow
@pytest.mark.kubectl
@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_concurrent_kubectl_creates_admit_exactly_the_quota_and_deleting_frees_nothing(
    operator: Any, tmp_path: Path
) -> None:
    tenant, namespace = tenant_with_policy(operator)
    plan = operator.kube.get(API, "tenants", tenant)["spec"]["planRef"]
    operator.kube.merge_patch(API, "plans", plan, {"spec": {"quotas": {"agentStatementsPerDay": LIMIT}}})
    agent = kubectl_as(operator.service_account_kubeconfig(namespace, AGENT), tmp_path)
    too_long = workflow(namespace, "probe", [{**READ, "name": f"s{i}"} for i in range(LIMIT + 1)])
    operator.eventually(  # the webhook sees the new limit (a dry run is refused for it, and charges nothing)
        lambda: f"allows {LIMIT} a day" in agent("create", "--dry-run=server", "-f", "-", stdin=too_long).stderr,
        timeout=30,
    )
    start = threading.Barrier(8)

    def create(index: int) -> Any:
        start.wait()
        return agent("create", "-f", "-", stdin=workflow(namespace, f"burst-{index}", [READ]))

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(create, range(8)))
    admitted = [r for r in results if r.returncode == 0]
    refused = [r for r in results if r.returncode != 0]
    assert len(admitted) == LIMIT, [r.stderr for r in refused]
    assert all(f"plan {plan} allows {LIMIT} a day" in r.stderr for r in refused), [r.stderr for r in refused]
    stored = operator.kube.list(API, "agentworkflows", namespace)
    assert len(stored) == LIMIT

    for item in stored:
        operator.kube.delete(API, "agentworkflows", item["metadata"]["name"], namespace)
    operator.eventually(lambda: not operator.kube.list(API, "agentworkflows", namespace), timeout=30)
    again = agent("create", "-f", "-", stdin=workflow(namespace, "after-deleting", [READ]))
    assert again.returncode != 0 and f"{LIMIT} agent statements were admitted on" in again.stderr
    assert operator.kube.get(API, "agentworkflows", "after-deleting", namespace) is None
