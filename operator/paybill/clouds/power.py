"""Suspend and resume, the same on every cloud: which instances to change, and waiting until they have."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from .model import PowerChange, PowerState, Resource

# States from which an instance is, or is already on its way to, the wanted state
_SETTLED = {
    PowerState.STOPPED: frozenset({PowerState.STOPPED, PowerState.STOPPING, PowerState.TERMINATED}),
    PowerState.RUNNING: frozenset({PowerState.RUNNING, PowerState.STARTING, PowerState.TERMINATED}),
}


def power_change(instances: Sequence[Resource], wanted: PowerState) -> PowerChange:
    """The instances to stop (or start) and those left as they are: an idempotent plan."""
    settled = _SETTLED[wanted]
    return PowerChange(
        changed=tuple(r.id for r in instances if r.state not in settled),
        unchanged=tuple(r.id for r in instances if r.state in settled),
    )


def wait_for_state(
    states: Callable[[], Sequence[PowerState]], wanted: PowerState, poll_seconds: float, deadline_seconds: float
) -> None:
    """Poll until every instance is in the wanted state (or gone); TimeoutError past the deadline."""
    deadline = time.monotonic() + deadline_seconds
    while any(state not in (wanted, PowerState.TERMINATED) for state in states()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"instances not {wanted.value} after {deadline_seconds:g} s")
        time.sleep(poll_seconds)
