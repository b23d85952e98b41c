"""What a look for orphans reports on the Plan, and when it is said again as a Warning Event (clouds/orphans.py)."""

from __future__ import annotations

from paybill.api.plan import ORPHANS_LISTED
from paybill.clouds import orphans
from paybill.clouds.model import Cloud, PowerState, Resource

AT = "2026-12-01T10:00:00Z"


def resource(tenant: str, ident: str, kind: str = "instance") -> Resource:
    return Resource(Cloud.AWS, kind, ident, ident, PowerState.RUNNING, tenant)


def test_the_report_names_the_first_orphans_in_order_and_counts_them_all() -> None:
    found = [resource("zed", f"i-{n:03}") for n in range(ORPHANS_LISTED + 5)] + [resource("acme", "db-1", "database")]
    report = orphans.report(found, AT)
    assert report.count == ORPHANS_LISTED + 6 and report.tenants == ["acme", "zed"]
    assert report.resources[:2] == ["database db-1 (tenant acme)", "instance i-000 (tenant zed)"]
    assert len(report.resources) == ORPHANS_LISTED and report.error is None


def test_a_finding_is_said_when_new_or_changed_and_not_again_at_every_look() -> None:
    first = orphans.report([resource("gone", "i-1")], AT)
    said = orphans.warning(first, None)
    assert (
        said == "1 resource(s) tagged with tenants that no longer exist keep costing money: instance i-1 (tenant gone)"
    )
    assert orphans.warning(orphans.report([resource("gone", "i-1")], "later"), first.model_dump()) is None
    grown = orphans.report([resource("gone", "i-1"), resource("gone", "i-2")], "later")
    assert orphans.warning(grown, first.model_dump()) is not None
    assert orphans.warning(orphans.report([], "later"), first.model_dump()) is None  # all cleaned up: nothing to say


def test_more_orphans_than_listed_are_counted_in_the_message() -> None:
    found = [resource("gone", f"i-{n:03}") for n in range(ORPHANS_LISTED + 3)]
    assert orphans.warning(orphans.report(found, AT), None).endswith("instance i-019 (tenant gone) and 3 more")  # type: ignore[union-attr]


def test_a_failed_look_is_said_once_with_the_clouds_error() -> None:
    failed = orphans.failed("aws answered AuthFailure (HTTP 401): denied", AT)
    assert orphans.warning(failed, None) == "aws answered AuthFailure (HTTP 401): denied"
    assert (
        orphans.warning(orphans.failed("aws answered AuthFailure (HTTP 401): denied", "later"), failed.model_dump())
        is None
    )
