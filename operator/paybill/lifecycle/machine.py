"""The tenant lifecycle as a table: (phase, event) -> phase. Anything not in the table is refused.

    Pending -> Provisioning -> Active <-> Suspended -> Offboarding -> Offboarded
                    |            |  ^
                    v            v  |
                  Failed     Migrating   (plan changes that change isolation)

Failed is retried with backoff. Suspension has causes (billing, manual); the tenant resumes only when
none is left. A move (Migrating) ends migrated, rolled back when it was abandoned half-way (the plan
changed back), or paused while it cannot go on (the tenant suspended meanwhile); each is said as it
happened. A move tried again from Failed goes straight to Migrating; one that starts as a Suspended tenant
resumes goes through Active; either is recorded as a move. Offboarding can start from any phase but Offboarded.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from ..api.tenant import TenantPhase as Phase


class Event(StrEnum):
    PROVISION = "provision"
    PROVISIONED = "provisioned"
    FAIL = "fail"
    RETRY = "retry"
    SUSPEND = "suspend"
    RESUME = "resume"
    MIGRATE = "migrate"
    MIGRATED = "migrated"
    ROLL_BACK = "roll_back"  # an interrupted move abandoned: the data stays where it was
    PAUSE = "pause"  # an interrupted move waits (tenant suspended, infrastructure not ready): data stays, copy kept
    OFFBOARD = "offboard"
    OFFBOARDED = "offboarded"


class SuspensionCause(StrEnum):
    BILLING = "billing"
    MANUAL = "manual"


TRANSITIONS: dict[tuple[Phase, Event], Phase] = {
    (Phase.PENDING, Event.PROVISION): Phase.PROVISIONING,
    (Phase.PROVISIONING, Event.PROVISIONED): Phase.ACTIVE,
    (Phase.PROVISIONING, Event.FAIL): Phase.FAILED,
    (Phase.FAILED, Event.RETRY): Phase.PROVISIONING,
    (Phase.ACTIVE, Event.SUSPEND): Phase.SUSPENDED,
    (Phase.SUSPENDED, Event.RESUME): Phase.ACTIVE,
    (Phase.ACTIVE, Event.MIGRATE): Phase.MIGRATING,
    (Phase.FAILED, Event.MIGRATE): Phase.MIGRATING,  # a failed move tried again: never said Active meanwhile
    (Phase.MIGRATING, Event.MIGRATED): Phase.ACTIVE,
    (Phase.MIGRATING, Event.ROLL_BACK): Phase.ACTIVE,
    (Phase.MIGRATING, Event.PAUSE): Phase.ACTIVE,
    (Phase.MIGRATING, Event.FAIL): Phase.FAILED,
    (Phase.OFFBOARDING, Event.OFFBOARDED): Phase.OFFBOARDED,
    **{
        (phase, Event.OFFBOARD): Phase.OFFBOARDING
        for phase in Phase
        if phase not in (Phase.OFFBOARDING, Phase.OFFBOARDED)
    },
}

# Why an event is refused in a phase, where the table alone would only say "not allowed".
REFUSALS: dict[tuple[Phase, Event], str] = {
    (Phase.SUSPENDED, Event.MIGRATE): "a suspended tenant is not migrated; the plan change waits for resume",
    (Phase.OFFBOARDED, Event.PROVISION): "an offboarded tenant is never provisioned again; create a new Tenant",
    (Phase.OFFBOARDED, Event.RESUME): "an offboarded tenant cannot resume",
    (Phase.MIGRATING, Event.SUSPEND): "a migrating tenant is suspended once the migration has cut over",
}


# Taken only when a decision names them, never on the way to a goal.
DETOURS = frozenset({Event.FAIL, Event.ROLL_BACK, Event.PAUSE, Event.MIGRATE})


class TransitionRefused(ValueError):
    def __init__(self, phase: Phase, event: Event, reason: str) -> None:
        super().__init__(f"{event} is not allowed in phase {phase}: {reason}")
        self.phase, self.event, self.reason = phase, event, reason


@dataclass(frozen=True)
class Transition:
    source: Phase
    event: Event
    target: Phase


def transition(phase: Phase | str, event: Event | str) -> Transition:
    """The transition `event` causes in `phase`, or TransitionRefused (nothing changes)."""
    phase, event = Phase(phase), Event(event)
    target = TRANSITIONS.get((phase, event))
    if target is None:
        allowed = sorted(e.value for (p, e) in TRANSITIONS if p == phase)
        reason = REFUSALS.get((phase, event)) or f"allowed events are {', '.join(allowed) or 'none'}"
        raise TransitionRefused(phase, event, reason)
    return Transition(phase, event, target)


def path(phase: Phase | str, goal: Phase | str) -> list[Transition]:
    """The shortest chain of transitions from `phase` to `goal` (empty when already there)."""
    phase, goal = Phase(phase), Phase(goal)
    frontier: list[tuple[Phase, list[Transition]]] = [(phase, [])]
    seen = {phase}
    while frontier:
        current, steps = frontier.pop(0)
        if current == goal:
            return steps
        for (source, event), target in TRANSITIONS.items():
            if source == current and target not in seen and event not in DETOURS:
                seen.add(target)
                frontier.append((target, [*steps, Transition(source, event, target)]))
    raise TransitionRefused(phase, Event.PROVISION, f"no way from {phase} to {goal}")


def retry_delay(attempt: int, base: float = 5.0, cap: float = 300.0) -> float:
    """Exponential backoff for a Failed tenant: 5 s, 10 s, 20 s, ... capped at 5 minutes."""
    return min(cap, base * 2 ** max(0, attempt))
