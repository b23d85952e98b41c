"""The demo's one wait: poll a condition until it holds or a deadline passes, checking the children first each
round, so a child that exits ends any wait within one poll."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

POLL_S = 0.2  # how often every wait looks at the children: a child's exit is noticed within this


def nothing_to_check() -> None:
    """The check of a wait that watches no children."""


def wait_until(
    condition: Callable[[], T | None],
    timeout: float,
    check: Callable[[], None] = nothing_to_check,
    poll: float = POLL_S,
) -> T | None:
    """`condition()` until it returns something truthy (returned) or `timeout` seconds pass (None); `check()`
    runs before each try and ends the wait by raising (a child exited). `timeout` may be infinite."""
    deadline = time.monotonic() + timeout
    while True:
        check()
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            return None
        time.sleep(poll)
