"""The watches' liveness verdict (handlers/watches.py): pure, table-driven, no cluster."""

from __future__ import annotations

import pytest

from paybill.handlers.watches import DEFAULT_STALE_SECONDS, Stream, WatchProgress, judge, stale_after


@pytest.mark.parametrize(
    ("streams", "missing_at_start", "alive", "stale", "missing"),
    [
        ({}, (), True, (), ()),  # nothing watched yet
        ({"tenants.paybill.dev": Stream(progressed=95)}, (), True, (), ()),
        ({"tenants.paybill.dev": Stream(progressed=89)}, (), False, ("tenants.paybill.dev",), ()),
        ({"tenants.paybill.dev": Stream(progressed=90)}, (), True, (), ()),  # exactly the threshold: not yet
        (  # one stuck stream among healthy ones fails liveness
            {"plans.paybill.dev": Stream(progressed=99), "tenants.paybill.dev": Stream(progressed=0)},
            (),
            False,
            ("tenants.paybill.dev",),
            (),
        ),
        (  # waiting for a CRD is reported, never a liveness failure
            {"tenants.paybill.dev": Stream(progressed=0, missing_since=1)},
            (),
            True,
            (),
            ("tenants.paybill.dev",),
        ),
        ({}, ("plans.paybill.dev", "tenants.paybill.dev"), True, (), ("plans.paybill.dev", "tenants.paybill.dev")),
    ],
)
def test_judge(
    streams: dict[str, Stream],
    missing_at_start: tuple[str, ...],
    alive: bool,
    stale: tuple[str, ...],
    missing: tuple[str, ...],
) -> None:
    health = judge(streams, now=100, stale_seconds=10, missing_crds=missing_at_start)
    assert health.alive is alive
    assert tuple(name for name, _ in health.stale) == stale
    assert health.missing == missing
    assert ("waiting_for_crds" in health.summary()) is bool(missing)


def test_progress_clears_waiting_and_a_closed_stream_is_forgotten() -> None:
    now = [0.0]
    progress = WatchProgress(clock=lambda: now[0], missing_at_start=("tenants.paybill.dev",))
    progress.opened("tenants.paybill.dev")
    progress.missing("tenants.paybill.dev")
    now[0] = 500
    assert progress.health(10).alive and progress.health(10).missing == ("tenants.paybill.dev",)
    progress.progressed("tenants.paybill.dev")
    assert progress.health(10).missing == () and progress.health(10).alive
    progress.opened("tenants.paybill.dev")  # a reconnection does not reset the clock
    now[0] = 520
    assert not progress.health(10).alive
    assert "tenants.paybill.dev (20s)" in progress.health(10).failure()
    progress.closed("tenants.paybill.dev")
    assert progress.health(10).alive and progress.health(10).streams == 0


def test_the_stale_threshold_comes_from_the_environment() -> None:
    assert stale_after({}) == DEFAULT_STALE_SECONDS
    assert stale_after({"PAYBILL_WATCH_STALE_SECONDS": "7.5"}) == 7.5
