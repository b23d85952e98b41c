"""`wait_until`, the demo's one wait: returns the first truthy result, gives up at its deadline, and ends at once
when its check raises (a child of the stack exited). No cluster, no database; polls of a few milliseconds."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from paybill.demo.waiting import wait_until

POLL = 0.005


class ChildDied(Exception):
    pass


def scripted(results: list[object]) -> tuple[Callable[[], object], list[int]]:
    """A condition returning `results` one call after another (the last one from then on); and its call count."""
    calls = [0]

    def condition() -> object:
        calls[0] += 1
        return results[min(calls[0], len(results)) - 1]

    return condition, calls


def dies_at(round_: int | None) -> Callable[[], None]:
    """A check that raises from its `round_`-th call on (None: never)."""
    rounds = [0]

    def check() -> None:
        rounds[0] += 1
        if round_ is not None and rounds[0] >= round_:
            raise ChildDied

    return check


@pytest.mark.parametrize(
    ("results", "timeout", "died", "returned", "calls"),
    [
        (["ready"], 5, None, "ready", 1),  # at once, no sleep
        ([None, {}, 0, "", {"phase": "Ready"}], 5, None, {"phase": "Ready"}, 5),  # falsy results keep waiting
        ([None, None, "late"], float("inf"), None, "late", 3),  # an endless wait still ends when it holds
        ([None], 0, None, None, 1),  # no time: one try, then the deadline
        ([None], 0.05, None, None, None),  # tries until the deadline passes, then gives up
        ([None, None, "ready"], 5, 2, ChildDied, 1),  # a child dies before the condition holds: at once
        (["ready"], 5, 1, ChildDied, 0),  # the check comes first: a dead child wins over a true condition
        ([None], float("inf"), 4, ChildDied, 3),  # an endless wait (the kept stack) ends when a child dies
    ],
    ids=["at-once", "falsy-then-true", "infinite", "zero-timeout", "deadline", "child-died", "check-first", "kept"],
)
def test_wait_until(
    results: list[object], timeout: float, died: int | None, returned: object, calls: int | None
) -> None:
    condition, called = scripted(results)
    started = time.monotonic()
    if returned is ChildDied:
        with pytest.raises(ChildDied):
            wait_until(condition, timeout, dies_at(died), poll=POLL)
    else:
        assert wait_until(condition, timeout, dies_at(died), poll=POLL) == returned
    elapsed = time.monotonic() - started
    if calls is not None:
        assert called[0] == calls
    else:
        assert called[0] >= 2 and timeout <= elapsed < timeout + 5  # gave up after the deadline, not long after
    assert elapsed < 5


def test_a_wait_without_a_check_waits_for_the_condition_alone() -> None:
    deadline = time.monotonic() + 0.02
    assert wait_until(lambda: time.monotonic() > deadline, 5, poll=POLL) is True
