"""The same cases through each faked cloud's adapter (the real SDK client against a loopback fake that checks
every request): preflight, inventory with pagination, idempotent suspend/resume, orphans, 429 and 5xx, not found;
no credential in any error."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from paybill.clouds.model import CloudError, CloudPlan, PowerState, Verdict
from paybill.clouds.retry import RetryPolicy

from .harness import HARNESSES, Harness


@pytest.fixture(params=sorted(HARNESSES))
def cloud(request: pytest.FixtureRequest) -> Iterator[Harness]:
    harness = HARNESSES[request.param]()
    try:
        yield harness
        assert harness.fake.wrong == [], "the adapter called its API wrongly"
    finally:
        harness.fake.close()


def _silo(cloud: Harness, region: str | None = None) -> CloudPlan:
    return CloudPlan.per_model("gold", region or cloud.region, "silo", "cc-7")


def _secrets(credentials: dict[str, str]) -> list[str]:
    return [v for k, v in credentials.items() if any(w in k for w in ("TOKEN", "KEY", "SECRET", "CREDENTIALS"))]


def test_preflight_accepts_valid_credentials_a_known_region_and_enough_quota(cloud: Harness) -> None:
    result = cloud.adapter().preflight(_silo(cloud))
    assert result.verdict is Verdict.OK, result.message


def test_preflight_names_refused_credentials_and_never_the_credential(cloud: Harness) -> None:
    adapter = cloud.adapter(cloud.bad_credentials)
    result = adapter.preflight(_silo(cloud))
    assert result.verdict is Verdict.INVALID_CREDENTIALS and result.reason == "InvalidCredentials"
    with pytest.raises(CloudError) as raised:
        adapter.inventory("acme")
    for secret in _secrets(cloud.bad_credentials):
        assert secret not in result.message and secret not in str(raised.value) and secret not in repr(raised.value)


def test_preflight_refuses_an_unknown_region(cloud: Harness) -> None:
    result = cloud.adapter(region="mars-north1").preflight(_silo(cloud, "mars-north1"))
    assert result.verdict is Verdict.UNKNOWN_REGION and "mars-north1" in result.message


def test_preflight_refuses_insufficient_quota_naming_it(cloud: Harness) -> None:
    if cloud.exhaust_quota is None:
        pytest.skip(f"{cloud.cloud.value}: its API exposes no quota; preflight says so and checks none")
    cloud.exhaust_quota()
    result = cloud.adapter().preflight(_silo(cloud))
    assert result.verdict is Verdict.INSUFFICIENT_QUOTA and "needed" in result.message, result.message


def test_inventory_finds_a_tenants_instances_by_tag_across_pages(cloud: Harness) -> None:
    mine = cloud.seed("acme", 3 * cloud.page_size + 1)
    cloud.seed("globex", 5)
    adapter = cloud.adapter(page_size=cloud.page_size)
    found = adapter.inventory("acme")
    assert sorted(r.id for r in found) == mine
    assert {(r.tenant, r.plan, r.cost_center, r.state) for r in found} == {("acme", "gold", "cc-7", PowerState.RUNNING)}
    assert cloud.fake.count(cloud.list_method, cloud.list_path) >= 4  # every page followed


def test_suspend_and_resume_are_idempotent_and_wait_for_the_state(cloud: Harness) -> None:
    ids = cloud.seed("acme", 3)
    cloud.seed("globex", 2)
    adapter = cloud.adapter()
    assert sorted(adapter.suspend("acme").changed) == ids
    assert {r.state for r in adapter.inventory("acme")} == {PowerState.STOPPED}
    assert {r.state for r in adapter.inventory("globex")} == {PowerState.RUNNING}
    before = len(cloud.fake.seen)
    again = adapter.suspend("acme")
    assert again.changed == () and sorted(again.unchanged) == ids
    assert not cloud.acted(before), "a second suspend asked for a power action"
    assert sorted(adapter.resume("acme").changed) == ids
    assert {r.state for r in adapter.inventory("acme")} == {PowerState.RUNNING}
    before = len(cloud.fake.seen)
    assert adapter.resume("acme").changed == ()
    assert not cloud.acted(before), "a second resume asked for a power action"


def test_orphans_are_tagged_instances_of_tenants_that_no_longer_exist(cloud: Harness) -> None:
    cloud.seed("kept", 2)
    gone = cloud.seed("gone", 3)
    orphans = cloud.adapter().orphans({"kept"})
    assert sorted(r.id for r in orphans) == gone and {r.tenant for r in orphans} == {"gone"}


def test_throttling_waits_retry_after_then_succeeds(cloud: Harness) -> None:
    ids = cloud.seed("acme", 2)
    waits: list[float] = []
    cloud.fake.inject(cloud.list_method, cloud.list_path, cloud.throttle("2"))
    assert sorted(r.id for r in cloud.adapter(retry=RetryPolicy(sleep=waits.append)).inventory("acme")) == ids
    assert waits == [2.0]


def test_transient_5xx_backs_off_then_succeeds_and_gives_up_with_the_code(cloud: Harness) -> None:
    ids = cloud.seed("acme", 2)
    waits: list[float] = []
    adapter = cloud.adapter(retry=RetryPolicy(sleep=waits.append))
    cloud.fake.inject(cloud.list_method, cloud.list_path, cloud.unavailable(), times=2)
    assert sorted(r.id for r in adapter.inventory("acme")) == ids
    assert waits == [0.25, 0.5]
    cloud.fake.inject(cloud.list_method, cloud.list_path, cloud.unavailable(), times=5)
    with pytest.raises(CloudError) as raised:
        adapter.inventory("acme")
    assert raised.value.status == 503 and raised.value.code
    for secret in _secrets(cloud.credentials):
        assert secret not in str(raised.value)


def test_a_tenant_with_nothing_is_an_empty_result(cloud: Harness) -> None:
    adapter = cloud.adapter()
    assert adapter.inventory("nobody") == []
    assert adapter.suspend("nobody").changed == ()
    assert adapter.orphans(set()) == []


def test_inventory_ends_on_a_full_last_page(cloud: Harness) -> None:
    mine = cloud.seed("acme", 2 * cloud.page_size)
    assert sorted(r.id for r in cloud.adapter(page_size=cloud.page_size).inventory("acme")) == mine


@pytest.mark.parametrize("cloud", ["oci", "ibm"], indirect=True)
def test_a_search_that_answers_another_tenants_instances_never_has_them_stopped(cloud: Harness) -> None:
    """OCI's Resource Search and IBM's Global Search answer from an index: whatever it returns, the adapter acts
    only on instances whose own tenant tag names the tenant (never on "acme-corp" when asked for "acme")."""
    ours, neighbours = cloud.seed("acme", 1), cloud.seed("acme-corp", 2)
    cloud.fake.over_match = True
    adapter = cloud.adapter()
    assert sorted(r.id for r in adapter.inventory("acme")) == ours
    change = adapter.suspend("acme")
    assert list(change.changed) == ours
    assert {r.state for r in adapter.inventory("acme-corp")} == {PowerState.RUNNING}
    assert {r.id for r in adapter.inventory("acme-corp")} == set(neighbours)
